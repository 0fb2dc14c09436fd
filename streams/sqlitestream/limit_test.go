package sqlitestream

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

func setLimits(t testing.TB, s *Stream, limits ...peonify.Limit) {
	t.Helper()
	if err := s.SetLimits(limits); err != nil {
		t.Fatalf("SetLimits: %v", err)
	}
}

// keyed is a task of type "test" with a key.
func keyed(id, key string) *peonify.Task { return &peonify.Task{ID: id, Type: "test", Key: key} }

// pollIDs polls up to limit tasks and returns their IDs in delivery order.
func pollIDs(t testing.TB, s *Stream, limit int) ([]string, []peonify.Delivery) {
	t.Helper()
	ds := poll(t, s, limit)
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.Task.ID
	}
	return ids, ds
}

func ack(t testing.TB, s *Stream, ds ...peonify.Delivery) {
	t.Helper()
	if err := s.Ack(context.Background(), ds...); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

func nack(t testing.TB, s *Stream, d peonify.Delivery, opts peonify.NackOptions) {
	t.Helper()
	if err := s.Nack(context.Background(), d, opts); err != nil {
		t.Fatalf("nack: %v", err)
	}
}

func wantIDs(t testing.TB, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Fatalf("polled %v, want %v", got, want)
	}
}

func TestKeyRoundTrip(t *testing.T) {
	s := openTest(t, Config{}, nil)
	enqueue(t, s, keyed("a", "tenant-1"), task("b"))
	if got := get(t, s, "a").Task.Key; got != "tenant-1" {
		t.Fatalf("Get: Key = %q, want tenant-1", got)
	}
	_, ds := pollIDs(t, s, 2)
	keys := map[string]string{}
	for _, d := range ds {
		keys[d.Task.ID] = d.Task.Key
	}
	if keys["a"] != "tenant-1" || keys["b"] != "" {
		t.Fatalf("delivered keys %v, want a: tenant-1, b: none", keys)
	}
	long := keyed("c", strings.Repeat("k", peonify.MaxKeyLen+1))
	var invalid *peonify.InvalidTaskError
	if err := s.Enqueue(context.Background(), long); !errors.As(err, &invalid) {
		t.Fatalf("Enqueue of a key longer than MaxKeyLen = %v, want *peonify.InvalidTaskError", err)
	}
}

func TestListKey(t *testing.T) {
	s := openTest(t, Config{}, nil)
	enqueue(t, s, keyed("a1", "a"), keyed("b1", "b"), keyed("a2", "a"), task("none"))
	got := list(t, s, peonify.ListOptions{State: peonify.StatePending, Key: "a"})
	if ids(got) != "[a1 a2]" {
		t.Fatalf("List with Key a = %s, want a1 a2", ids(got))
	}
	got = list(t, s, peonify.ListOptions{State: peonify.StatePending, Key: "b", Type: "other"})
	if len(got) != 0 {
		t.Fatalf("List with Key b and Type other = %s, want none", ids(got))
	}
	if got = list(t, s, peonify.ListOptions{State: peonify.StatePending}); len(got) != 4 {
		t.Fatalf("List without Key = %s, want all 4", ids(got))
	}
}

// TestMigrateKey opens a file made by the release before flow control (schema
// version 1): it gains the key column, its tasks have no key, and new tasks
// keep theirs.
func TestMigrateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(migrations[0] + `; PRAGMA user_version = 1; PRAGMA journal_mode = WAL;
		INSERT INTO peonify_tasks (id, type, payload, enqueued_at, state, visible_at, updated_at)
		VALUES ('old', 'test', x'', 1, 'pending', 1, 1)`); err != nil {
		t.Fatalf("make a version 1 file: %v", err)
	}
	db.Close()

	s := openFile(t, path, Config{}, nil)
	var version int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&version); err != nil || version != len(migrations) {
		t.Fatalf("schema version after open = %d (%v), want %d", version, err, len(migrations))
	}
	if info := get(t, s, "old"); info.Task.Key != "" || info.State != peonify.StatePending {
		t.Fatalf("old task after migration: %+v", info)
	}
	setLimits(t, s, peonify.Limit{PerKey: true, Ordered: true})
	enqueue(t, s, keyed("new1", "k"), keyed("new2", "k"))
	got, _ := pollIDs(t, s, 10)
	wantIDs(t, got, "old", "new1")
}

// TestRawInsertKey runs the README's plain INSERT: a producer that is not
// a Go program sets the key column.
func TestRawInsertKey(t *testing.T) {
	s := openTest(t, Config{}, nil)
	if _, err := s.db.Exec(readmeInsert(t)); err != nil {
		t.Fatalf("the README's INSERT: %v", err)
	}
	d := pollOne(t, s)
	if d.Task.Type != "email" || d.Task.Key != "tenant-42" || string(d.Task.Payload) != `{"to":"a@example.com"}` ||
		d.Task.EnqueuedAt.IsZero() || time.Since(d.Task.EnqueuedAt).Abs() > time.Minute {
		t.Fatalf("task from the README's INSERT: %+v", d.Task)
	}
}

func TestSetLimitsValidates(t *testing.T) {
	s := openTest(t, Config{}, nil)
	var cfg *peonify.ConfigError
	if err := s.SetLimits([]peonify.Limit{{Ordered: true}}); !errors.As(err, &cfg) {
		t.Fatalf("SetLimits of an Ordered limit without PerKey = %v, want *peonify.ConfigError", err)
	}
	if s.limits.Load() != nil {
		t.Fatal("a rejected SetLimits set limits")
	}
	setLimits(t, s, peonify.Limit{Concurrency: 1})
	setLimits(t, s) // none: the plain claim again
	enqueue(t, s, task("a"), task("b"))
	if got, _ := pollIDs(t, s, 10); len(got) != 2 {
		t.Fatalf("without limits polled %v, want both", got)
	}
}

func TestLimitConcurrency(t *testing.T) {
	s := openTest(t, Config{WatchInterval: -1}, nil)
	setLimits(t, s, peonify.Limit{Type: "test", Concurrency: 2})
	enqueue(t, s, task("a"), task("b"), task("c"), &peonify.Task{ID: "other", Type: "other"})
	got, ds := pollIDs(t, s, 10)
	wantIDs(t, got, "a", "b", "other") // other is not limited
	pollNone(t, s)
	if info := get(t, s, "c"); info.State != peonify.StatePending || info.Attempts != 0 {
		t.Fatalf("the held task: %+v; want pending with no attempt", info)
	}
	select {
	case <-s.Wake():
	default:
	}
	ack(t, s, ds[0])
	select {
	case <-s.Wake():
	case <-time.After(time.Second):
		t.Fatal("no wake after an ack freed a permit")
	}
	got, ds = pollIDs(t, s, 10)
	wantIDs(t, got, "c")
	nack(t, s, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead})
	select {
	case <-s.Wake():
	case <-time.After(time.Second):
		t.Fatal("no wake after a nack freed a permit")
	}
}

// TestLimitConcurrencyLeaseEnds: a crashed processor's tasks keep their
// permits until their leases end, then run again.
func TestLimitConcurrencyLeaseEnds(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Minute}, clk)
	setLimits(t, s, peonify.Limit{Concurrency: 1})
	enqueue(t, s, task("a"), task("b"))
	got, _ := pollIDs(t, s, 10)
	wantIDs(t, got, "a")
	clk.Advance(59 * time.Second)
	pollNone(t, s)
	clk.Advance(time.Second)
	if got, _ = pollIDs(t, s, 10); len(got) != 1 {
		t.Fatalf("after the lease ended polled %v, want one task", got)
	}
}

func TestLimitPerKeyConcurrency(t *testing.T) {
	s := openTest(t, Config{}, nil)
	setLimits(t, s, peonify.Limit{PerKey: true, Concurrency: 1,
		KeyConcurrency: map[string]int{"paying": 2, "held": 0}})
	enqueue(t, s,
		keyed("a1", "a"), keyed("a2", "a"),
		keyed("p1", "paying"), keyed("p2", "paying"), keyed("p3", "paying"),
		keyed("h1", "held"),
		task("n1"), task("n2"), // no key: not limited per key
	)
	got, ds := pollIDs(t, s, 20)
	slices.Sort(got)
	wantIDs(t, got, "a1", "n1", "n2", "p1", "p2")
	pollNone(t, s)
	ack(t, s, ds...)
	got, _ = pollIDs(t, s, 20)
	slices.Sort(got)
	wantIDs(t, got, "a2", "p3")
	if info := get(t, s, "h1"); info.State != peonify.StatePending {
		t.Fatalf("held key's task: %v, want pending", info.State)
	}
}

// TestLimitTwoProcesses runs two Streams on one file, as two processes do:
// a global concurrency limit holds across both, and a Local one counts
// each Stream's own claims only.
func TestLimitTwoProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	a := openFile(t, path, Config{}, nil)
	b := openFile(t, path, Config{}, nil)
	for _, s := range []*Stream{a, b} {
		setLimits(t, s, peonify.Limit{Type: "global", Concurrency: 3}, peonify.Limit{Type: "local", Local: true, Concurrency: 2})
	}
	n := 30
	var batch []*peonify.Task
	for i := range n {
		batch = append(batch, &peonify.Task{ID: fmt.Sprint("g", i), Type: "global"})
	}
	enqueue(t, a, batch...)
	ctx := context.Background()

	// Global: four consumers over two Streams never run more than 3.
	var (
		mu      sync.Mutex
		running int
		most    int
		done    int
		wg      sync.WaitGroup
	)
	for _, s := range []*Stream{a, b, a, b} {
		wg.Go(func() {
			for {
				mu.Lock()
				finished := done == n
				mu.Unlock()
				if finished {
					return
				}
				ds, ok := pollOrWait(ctx, t, s, 2)
				if !ok {
					return
				}
				if len(ds) == 0 {
					continue
				}
				mu.Lock()
				running += len(ds)
				most = max(most, running)
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
				mu.Lock()
				running -= len(ds) // before the ack frees the permits
				done += len(ds)
				mu.Unlock()
				if err := s.Ack(ctx, ds...); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if most != 3 {
		t.Fatalf("at most %d global tasks ran at once, want exactly 3", most)
	}

	// Local: each Stream runs 2 of its own, whatever the other runs.
	for i := range 6 {
		enqueue(t, a, &peonify.Task{ID: fmt.Sprint("l", i), Type: "local"})
	}
	if got, _ := pollIDs(t, a, 10); len(got) != 2 {
		t.Fatalf("stream a claimed %v, want 2", got)
	}
	pollNone(t, a)
	got, ds := pollIDs(t, b, 10)
	if len(got) != 2 {
		t.Fatalf("stream b claimed %v beside a's 2, want 2", got)
	}
	pollNone(t, b)
	ack(t, b, ds[0])
	pollNone(t, a)
	if got, _ := pollIDs(t, b, 10); len(got) != 1 {
		t.Fatalf("stream b claimed %v after acking one, want 1", got)
	}
	stats, err := a.LimitStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats[1].InUse != 2 || stats[1].Waiting != 1 {
		t.Fatalf("stream a's Local stat = %+v, want 2 in use (its own) and 1 waiting", stats[1])
	}
}

func TestLimitRate(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "tasks.db")
	a := openFile(t, path, Config{}, clk)
	b := openFile(t, path, Config{}, clk)
	for _, s := range []*Stream{a, b} {
		setLimits(t, s, peonify.Limit{Type: "test", Rate: 2, Period: time.Second, Burst: 3})
	}
	var batch []*peonify.Task
	for i := range 20 {
		batch = append(batch, task(fmt.Sprint(i)))
	}
	enqueue(t, a, batch...)
	enqueue(t, a, &peonify.Task{ID: "other", Type: "other"})
	got, ds := pollIDs(t, a, 10)
	wantIDs(t, got, "0", "1", "2", "other") // the burst, and a type the limit does not cover
	ack(t, a, ds...)
	pollNone(t, a)
	pollNone(t, b) // the bucket is in the file: b sees it empty too
	clk.Advance(499 * time.Millisecond)
	pollNone(t, b)
	clk.Advance(time.Millisecond)
	got, _ = pollIDs(t, b, 10)
	wantIDs(t, got, "3")
	clk.Advance(10 * time.Second) // refills up to Burst only
	got, _ = pollIDs(t, a, 10)
	wantIDs(t, got, "4", "5", "6")
	if info := get(t, a, "7"); info.Attempts != 0 || info.State != peonify.StatePending {
		t.Fatalf("a task held by the rate limit: %+v, want pending with no attempt", info)
	}
}

// TestLimitRatePerKey: each key has its own bucket, and a key out of
// tokens does not hold the others up.
func TestLimitRatePerKey(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{}, clk)
	setLimits(t, s, peonify.Limit{PerKey: true, Rate: 1, Period: time.Minute})
	enqueue(t, s, keyed("a1", "a"), keyed("a2", "a"), keyed("a3", "a"), keyed("b1", "b"), keyed("b2", "b"))
	got, _ := pollIDs(t, s, 10)
	wantIDs(t, got, "a1", "b1")
	pollNone(t, s)
	clk.Advance(time.Minute)
	got, _ = pollIDs(t, s, 10)
	wantIDs(t, got, "a2", "b2")
}

// TestLimitRateWakes: a poll held back by a bucket arms a timer that wakes
// the processor when the next token is due.
func TestLimitRateWakes(t *testing.T) {
	s := openTest(t, Config{WatchInterval: -1}, nil)
	setLimits(t, s, peonify.Limit{Rate: 10, Period: time.Second})
	enqueue(t, s, task("a"), task("b"))
	got, _ := pollIDs(t, s, 10)
	wantIDs(t, got, "a")
	select {
	case <-s.Wake():
	default:
	}
	start := time.Now()
	if got, _ = pollIDs(t, s, 10); len(got) != 0 {
		// The token came due already (a slow machine): nothing to test.
		t.Skipf("polled %v: the next token was due before the second poll", got)
	}
	select {
	case <-s.Wake():
	case <-time.After(2 * time.Second):
		t.Fatal("no wake when the next token came due")
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("woke after %v, want about 100ms", el)
	}
	got, _ = pollIDs(t, s, 10)
	wantIDs(t, got, "b")
}

// TestLimitOrdered: a key's tasks run one at a time in the order the file
// received them; a retry keeps its place, dead and deleted tasks release
// the key.
func TestLimitOrdered(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Hour}, clk)
	setLimits(t, s, peonify.Limit{PerKey: true, Ordered: true})
	ctx := context.Background()
	enqueue(t, s, keyed("k1", "k"), keyed("j1", "j"))
	// A higher priority does not jump the key's queue.
	enqueue(t, s, &peonify.Task{ID: "k2", Type: "test", Key: "k", Priority: 9}, keyed("k3", "k"), keyed("k4", "k"))
	got, ds := pollIDs(t, s, 10)
	wantIDs(t, got, "k1", "j1")
	pollNone(t, s)

	// k1 fails: the key waits through its backoff, and k1 runs next.
	nack(t, s, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Minute, Reason: "boom"})
	pollNone(t, s)
	clk.Advance(time.Minute)
	got, ds = pollIDs(t, s, 10)
	wantIDs(t, got, "k1")
	// Released (the processor shut down): still first.
	nack(t, s, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeReleased})
	got, ds = pollIDs(t, s, 10)
	wantIDs(t, got, "k1")
	// Dead: the key goes on with k2.
	nack(t, s, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "gave up"})
	got, ds = pollIDs(t, s, 10)
	wantIDs(t, got, "k2")
	ack(t, s, ds...)
	// An operator deletes k3 while it waits: k4 is next.
	if n, err := s.Delete(ctx, "k3"); err != nil || n != 1 {
		t.Fatalf("delete k3: %d, %v", n, err)
	}
	got, _ = pollIDs(t, s, 10)
	wantIDs(t, got, "k4")
}

// TestLimitOrderedLeaseEnds: a crashed processor's task keeps its key
// until its lease ends, then runs first.
func TestLimitOrderedLeaseEnds(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Minute}, clk)
	setLimits(t, s, peonify.Limit{PerKey: true, Ordered: true})
	enqueue(t, s, keyed("1", "k"), keyed("2", "k"))
	got, _ := pollIDs(t, s, 10)
	wantIDs(t, got, "1")
	clk.Advance(time.Minute)
	got, _ = pollIDs(t, s, 10)
	wantIDs(t, got, "1")
}

// TestLimitFairness: key A's 2,000 tasks, enqueued first, do not delay key
// B's 20: the claims take the keys' tasks in turn.
func TestLimitFairness(t *testing.T) {
	s := openTest(t, Config{}, nil)
	setLimits(t, s, peonify.Limit{PerKey: true, Fair: true})
	var batch []*peonify.Task
	for i := range 2000 {
		batch = append(batch, keyed(fmt.Sprint("a", i), "A"))
	}
	enqueue(t, s, batch...)
	batch = batch[:0]
	for i := range 20 {
		batch = append(batch, keyed(fmt.Sprint("b", i), "B"))
	}
	enqueue(t, s, batch...)
	bs := 0
	for p := 1; bs < 20; p++ {
		got, ds := pollIDs(t, s, 10)
		if p == 1 {
			wantIDs(t, got, "a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4")
		}
		for _, id := range got {
			if id[0] == 'b' {
				bs++
			}
		}
		if p > 4 && bs < 20 {
			t.Fatalf("after %d polls of 10, %d of B's 20 tasks were claimed", p, bs)
		}
		ack(t, s, ds...)
	}
}

// TestLimitNoHeadOfLineBlocking: a saturated key, or a held one, never
// stops the claim from reaching other keys' tasks behind it.
func TestLimitNoHeadOfLineBlocking(t *testing.T) {
	s := openTest(t, Config{}, nil)
	setLimits(t, s, peonify.Limit{PerKey: true, Concurrency: 1, KeyConcurrency: map[string]int{"held": 0}})
	var batch []*peonify.Task
	for i := range 500 {
		batch = append(batch, keyed(fmt.Sprint("a", i), "A"), keyed(fmt.Sprint("h", i), "held"))
	}
	enqueue(t, s, batch...)
	enqueue(t, s, keyed("b0", "B"), keyed("c0", "C"))
	got, _ := pollIDs(t, s, 10)
	wantIDs(t, got, "a0", "b0", "c0")
	enqueue(t, s, keyed("d0", "D"))
	got, _ = pollIDs(t, s, 10)
	wantIDs(t, got, "d0")
}

// TestLimitBlockedPollIsQuick: a poll whose every ready task is held back
// returns nothing, quickly, and changes nothing.
func TestLimitBlockedPollIsQuick(t *testing.T) {
	s := openTest(t, Config{}, nil)
	setLimits(t, s, peonify.Limit{PerKey: true, Concurrency: 1}, peonify.Limit{Type: "capped", Concurrency: 1})
	n := 1000
	if raceEnabled {
		n = 200 // the race detector slows SQLite down a hundred times
	}
	var batch []*peonify.Task
	for i := range n {
		batch = append(batch, keyed(fmt.Sprint("k", i), fmt.Sprint("key", i%10)),
			&peonify.Task{ID: fmt.Sprint("c", i), Type: "capped"})
	}
	enqueue(t, s, batch...)
	if got, _ := pollIDs(t, s, 100); len(got) != 11 {
		t.Fatalf("first poll claimed %d tasks, want 11 (one per key, one capped)", len(got))
	}
	before := counts(t, s)
	start := time.Now()
	const polls = 20
	for range polls {
		pollNone(t, s)
	}
	per := time.Since(start) / polls
	limit := 20 * time.Millisecond
	if raceEnabled {
		limit = 200 * time.Millisecond
	}
	if per > limit {
		t.Fatalf("a blocked poll over %d waiting tasks took %v, want under %v", 2*n, per, limit)
	}
	t.Logf("a blocked poll over %d waiting tasks took %v", 2*n, per)
	if after := counts(t, s); after[peonify.StatePending] != before[peonify.StatePending] {
		t.Fatalf("blocked polls changed the counts: %v, then %v", before, after)
	}
}

// TestLimitTypes: a limit of one type holds back only that type, and a
// PerKey limit only tasks with a key.
func TestLimitTypes(t *testing.T) {
	s := openTest(t, Config{}, nil)
	setLimits(t, s, peonify.Limit{Type: "slow", PerKey: true, Concurrency: 1})
	enqueue(t, s,
		&peonify.Task{ID: "s1", Type: "slow", Key: "k"}, &peonify.Task{ID: "s2", Type: "slow", Key: "k"},
		&peonify.Task{ID: "f1", Type: "fast", Key: "k"}, &peonify.Task{ID: "f2", Type: "fast", Key: "k"},
		&peonify.Task{ID: "s3", Type: "slow"})
	got, _ := pollIDs(t, s, 10)
	slices.Sort(got)
	wantIDs(t, got, "f1", "f2", "s1", "s3")
}

func TestLimitStats(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{}, clk)
	setLimits(t, s, peonify.Limit{PerKey: true, Concurrency: 1}, peonify.Limit{Name: "all", Concurrency: 100})
	var batch []*peonify.Task
	for k := range 12 {
		for i := range k + 1 {
			batch = append(batch, keyed(fmt.Sprint(k, "-", i), fmt.Sprintf("key%02d", k)))
		}
	}
	batch = append(batch, task("nokey"), &peonify.Task{ID: "later", Type: "test", Key: "key00", RunAt: clk.Now().Add(time.Hour)})
	enqueue(t, s, batch...)
	got, _ := pollIDs(t, s, 100)
	if len(got) != 13 {
		t.Fatalf("claimed %d, want 13", len(got))
	}
	stats, err := s.LimitStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 2 || stats[0].Name != "*/key" || stats[1].Name != "all" {
		t.Fatalf("stats = %+v, want */key then all", stats)
	}
	// 78 keyed tasks, 12 running; the scheduled one is not ready.
	if st := stats[0]; st.InUse != 12 || st.Waiting != 66 || len(st.Keys) != peonify.MaxLimitStatKeys {
		t.Fatalf("per-key stat = %+v, want 12 in use, 66 waiting, 10 keys", st)
	}
	if k := stats[0].Keys; k[0] != (peonify.KeyStat{Key: "key11", InUse: 1, Waiting: 11}) || k[9].Key != "key02" {
		t.Fatalf("busiest keys = %+v, want key11 first and key02 last", k)
	}
	if st := stats[1]; st.InUse != 13 || st.Waiting != 66 || st.Keys != nil {
		t.Fatalf("global stat = %+v, want 13 in use, 66 waiting, no keys", st)
	}
}

// TestLimitProcessor runs a processor with a PerKey Concurrency 1 limit:
// no key ever runs two tasks at once, and every task runs.
func TestLimitProcessor(t *testing.T) {
	s := openTest(t, Config{}, nil)
	n := 200
	if raceEnabled {
		n = 60
	}
	var batch []*peonify.Task
	for i := range n {
		batch = append(batch, keyed(fmt.Sprint(i), fmt.Sprint("k", i%5)))
	}
	enqueue(t, s, batch...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		mu      sync.Mutex
		running = map[string]int{}
		done    int
		bad     string
	)
	p, err := peonify.New(peonify.Config{Workers: 8, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddTaskList(peonify.TaskList{"test": peonify.HandlerFunc(func(ctx context.Context, task *peonify.Task) error {
		mu.Lock()
		running[task.Key]++
		if running[task.Key] > 1 {
			bad = task.Key
		}
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		running[task.Key]--
		if done++; done == n {
			cancel()
		}
		mu.Unlock()
		return nil
	})}); err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(s, peonify.Limits(peonify.Limit{PerKey: true, Concurrency: 1})); err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if bad != "" {
		t.Fatalf("key %s ran two tasks at once", bad)
	}
	if done != n {
		t.Fatalf("ran %d of %d tasks", done, n)
	}
}

// readmeInsert returns the README's INSERT statement.
func readmeInsert(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```sql\n")
	if !ok {
		t.Fatal("README.md has no sql block")
	}
	stmt, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("README.md's sql block is not closed")
	}
	return stmt
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestLimitFairnessTyped: with a PerKey limit of one type, a claim that
// reads again without a key's waiting tasks of that type still claims
// the key's tasks of other types.
func TestLimitFairnessTyped(t *testing.T) {
	s := openTest(t, Config{}, nil)
	setLimits(t, s, peonify.Limit{Type: "test", PerKey: true, Fair: true})
	var batch []*peonify.Task
	for i := range 600 {
		batch = append(batch, keyed(fmt.Sprint("a", i), "A"))
	}
	batch = append(batch, &peonify.Task{ID: "other", Type: "other", Key: "A"}, keyed("b0", "B"))
	enqueue(t, s, batch...)
	got, _ := pollIDs(t, s, 4)
	wantIDs(t, got, "a0", "other", "b0", "a1")
}

// TestLimitOrderedTwoProcesses: two Streams on one file, as two processes,
// run each key's tasks one at a time in enqueue order, a failed task
// keeping its place until it succeeds.
func TestLimitOrderedTwoProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	a := openFile(t, path, Config{}, nil)
	b := openFile(t, path, Config{}, nil)
	for _, s := range []*Stream{a, b} {
		setLimits(t, s, peonify.Limit{PerKey: true, Ordered: true})
	}
	keys, per := 8, 15
	if raceEnabled {
		per = 6
	}
	var batch []*peonify.Task
	for i := range per {
		for k := range keys {
			batch = append(batch, keyed(fmt.Sprintf("%d-%03d", k, i), fmt.Sprint(k)))
		}
	}
	enqueue(t, a, batch...)
	ctx := context.Background()
	var (
		mu      sync.Mutex
		running = map[string]bool{}
		next    = map[string]int{} // the next task each key must run
		failed  = map[string]bool{}
		done    int
		wg      sync.WaitGroup
	)
	total := keys * per
	for _, s := range []*Stream{a, b, a, b} {
		wg.Go(func() {
			for {
				mu.Lock()
				finished := done == total
				mu.Unlock()
				if finished || t.Failed() {
					return
				}
				ds, ok := pollOrWait(ctx, t, s, 3)
				if !ok {
					return
				}
				if len(ds) == 0 {
					continue
				}
				for _, d := range ds {
					key, id := d.Task.Key, d.Task.ID
					var seq int
					fmt.Sscanf(id[strings.Index(id, "-")+1:], "%d", &seq)
					mu.Lock()
					if running[key] {
						t.Errorf("key %s ran two tasks at once (%s)", key, id)
					}
					if seq != next[key] {
						t.Errorf("key %s ran task %s, want its task %d", key, id, next[key])
					}
					running[key] = true
					fail := seq%4 == 1 && !failed[id]
					failed[id] = true
					mu.Unlock()
					time.Sleep(time.Millisecond)
					mu.Lock()
					running[key] = false
					if !fail {
						next[key]++
						done++
					}
					mu.Unlock()
					var err error
					if fail {
						err = s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Reason: "once"})
					} else {
						err = s.Ack(ctx, d)
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for k := range keys {
		if n := next[fmt.Sprint(k)]; n != per {
			t.Errorf("key %d ran %d of its %d tasks", k, n, per)
		}
	}
}

// TestLimitBucketSweep: buckets that have filled up are deleted, which
// changes no limit, since a missing bucket is a full one.
func TestLimitBucketSweep(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Hour}, clk)
	setLimits(t, s, peonify.Limit{PerKey: true, Rate: 1, Period: time.Second, Burst: 2})
	for i := range 3 {
		enqueue(t, s, keyed(fmt.Sprint("a", i), "a"), keyed(fmt.Sprint("b", i), "b"))
	}
	got, _ := pollIDs(t, s, 10)
	wantIDs(t, got, "a0", "b0", "a1", "b1")
	buckets := func() (n int) {
		t.Helper()
		if err := s.db.QueryRow("SELECT count(*) FROM peonify_limit_buckets").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := buckets(); n != 2 {
		t.Fatalf("%d buckets after taking tokens of 2 keys, want 2", n)
	}
	clk.Advance(sweepEvery)
	got, _ = pollIDs(t, s, 10) // sweeps first, then takes a token of each key
	wantIDs(t, got, "a2", "b2")
	clk.Advance(sweepEvery)
	enqueue(t, s, task("unkeyed")) // a claim runs only when a task is ready
	got, _ = pollIDs(t, s, 10)
	wantIDs(t, got, "unkeyed")
	if n := buckets(); n != 0 {
		t.Fatalf("%d buckets after they filled up, want 0", n)
	}
}

// TestLimitWaitingIsIdle: a processor whose every ready task is held back
// by a limit does not poll in a loop: while one task holds the only
// permit, the file sees a few transactions at most.
func TestLimitWaitingIsIdle(t *testing.T) {
	s := openTest(t, Config{}, nil)
	var batch []*peonify.Task
	for i := range 50 {
		batch = append(batch, task(fmt.Sprint(i)))
	}
	enqueue(t, s, batch...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	p, err := peonify.New(peonify.Config{Workers: 4, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddTaskList(peonify.TaskList{"test": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})}); err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(s, peonify.Limits(peonify.Limit{Concurrency: 1})); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-started
	time.Sleep(100 * time.Millisecond) // let the first polls settle
	before := s.w.commits.Load()
	time.Sleep(time.Second)
	n := s.w.commits.Load() - before
	close(release)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n > 10 {
		t.Fatalf("%d transactions in the second that every ready task was held back, want a few at most", n)
	}
	t.Logf("%d transactions in the second that every ready task was held back", n)
}

// TestLimitOrderedHeadBehind: the head of an ordered key is claimed even
// when the key's later tasks, of a higher priority, come first in the
// usual order and the head lies beyond the tasks a claim reads first.
func TestLimitOrderedHeadBehind(t *testing.T) {
	s := openTest(t, Config{}, nil)
	setLimits(t, s, peonify.Limit{PerKey: true, Ordered: true})
	batch := []*peonify.Task{keyed("k1", "K")}
	for i := range 100 {
		batch = append(batch, &peonify.Task{ID: fmt.Sprint("x", i), Type: "test", Key: "X", Priority: 1})
	}
	batch = append(batch, &peonify.Task{ID: "k2", Type: "test", Key: "K", Priority: 9})
	enqueue(t, s, batch...)
	got, _ := pollIDs(t, s, 4)
	wantIDs(t, got, "x0", "k1")
}

// TestLimitClaimCostIgnoresBacklog: a claim reads the first tasks of each
// key, not every ready task of a key with a long backlog, so it stays
// quick however many tasks wait.
func TestLimitClaimCostIgnoresBacklog(t *testing.T) {
	s := openTest(t, Config{}, nil)
	setLimits(t, s, peonify.Limit{Type: "test", PerKey: true, Fair: true})
	// One plain INSERT, as a producer without Go does: 20,000 Enqueues
	// are slow under the race detector.
	if _, err := s.db.Exec(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19999)
		INSERT INTO peonify_tasks (id, type, payload, key, enqueued_at, state, visible_at, updated_at)
		SELECT 'a' || i, 'test', x'', 'A', i, 'pending', i, i FROM n`); err != nil {
		t.Fatal(err)
	}
	enqueue(t, s, keyed("b0", "B"), keyed("b1", "B"))
	var took []time.Duration
	for p := range 5 {
		start := time.Now()
		got, ds := pollIDs(t, s, 4)
		took = append(took, time.Since(start))
		if p == 0 {
			wantIDs(t, got, "a0", "b0", "a1", "b1")
		}
		ack(t, s, ds...)
	}
	slices.Sort(took)
	limit := 10 * time.Millisecond
	if raceEnabled {
		limit = 100 * time.Millisecond
	}
	if took[2] > limit {
		t.Fatalf("claims of 4 beside a key of 20,000 ready tasks took %v (median), want under %v", took[2], limit)
	}
	t.Logf("claims of 4 beside a key of 20,000 ready tasks took %v (median)", took[2])
}

// TestGroupsIndexOnlyWithLimits: the index of pending tasks by key and
// type, which only limited claims read, is created by the first of them:
// a file whose processors set no limits does not maintain it.
func TestGroupsIndexOnlyWithLimits(t *testing.T) {
	s := openTest(t, Config{}, nil)
	has := func() bool {
		var n int
		if err := s.db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name = 'peonify_tasks_groups'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	enqueue(t, s, keyed("1", "k"), keyed("2", "k"))
	got, _ := pollIDs(t, s, 1)
	wantIDs(t, got, "1")
	if has() {
		t.Fatal("a claim without limits created the groups index")
	}
	setLimits(t, s, peonify.Limit{PerKey: true, Concurrency: 2})
	got, _ = pollIDs(t, s, 1)
	wantIDs(t, got, "2")
	if !has() {
		t.Fatal("a limited claim did not create the groups index")
	}
}

// pollOrWait polls s for up to n tasks for a worker goroutine of a test.
// When there are none it waits for s to wake, at most 5ms, and returns
// none; when Poll fails it reports the error and false.
func pollOrWait(ctx context.Context, t *testing.T, s *Stream, n int) ([]peonify.Delivery, bool) {
	ds, err := s.Poll(ctx, n)
	if err != nil {
		t.Error(err)
		return nil, false
	}
	if len(ds) == 0 {
		select {
		case <-s.Wake():
		case <-time.After(5 * time.Millisecond):
		}
	}
	return ds, true
}
