package pgstream

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// limitedStream returns a test stream with limits set.
func limitedStream(t testing.TB, cfg Config, limits ...peonify.Limit) *Stream {
	t.Helper()
	s := newTestStream(t, testPool(t), cfg)
	if err := s.SetLimits(limits); err != nil {
		t.Fatal(err)
	}
	return s
}

// keyed returns n tasks of type typ with key.
func keyed(typ, key string, n int) []*peonify.Task {
	out := make([]*peonify.Task, n)
	for i := range out {
		out[i] = &peonify.Task{Type: typ, Key: key, Payload: fmt.Appendf(nil, "%s-%d", key, i)}
	}
	return out
}

// keysOf returns the keys of ds, sorted.
func keysOf(ds []peonify.Delivery) []string {
	ks := []string{}
	for _, d := range ds {
		ks = append(ks, d.Task.Key)
	}
	sort.Strings(ks)
	return ks
}

// payloads returns the payloads of ds, in order.
func payloads(ds []peonify.Delivery) []string {
	ps := []string{}
	for _, d := range ds {
		ps = append(ps, string(d.Task.Payload))
	}
	return ps
}

// pollNone checks that a poll claims nothing, and quickly.
func pollNone(t *testing.T, s *Stream, why string) {
	t.Helper()
	start := time.Now()
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 0 {
		t.Fatalf("%s: poll claimed %q", why, payloads(ds))
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("%s: the empty poll took %s", why, el)
	}
}

func TestSetLimits(t *testing.T) {
	s := newTestStream(t, testPool(t), Config{NoListen: true})
	var l peonify.Limiter = s
	if err := l.SetLimits([]peonify.Limit{{Concurrency: -1}}); err == nil {
		t.Error("SetLimits accepted a negative Concurrency")
	}
	if err := l.SetLimits([]peonify.Limit{{Type: "a\x00b", Concurrency: 1}}); err == nil {
		t.Error("SetLimits accepted a Type with a NUL byte")
	}
	if err := l.SetLimits([]peonify.Limit{{Concurrency: 1}}); err != nil || s.plan.Load() == nil {
		t.Fatalf("SetLimits = %v, plan %v", err, s.plan.Load())
	}
	if err := l.SetLimits(nil); err != nil || s.plan.Load() != nil {
		t.Fatalf("SetLimits(nil) = %v, plan %v: want the unlimited claim back", err, s.plan.Load())
	}
	if st, err := l.LimitStats(streamtest.Context(t)); err != nil || len(st) != 0 {
		t.Fatalf("LimitStats without limits = %v, %v", st, err)
	}
}

func TestLimitPerKeyConcurrency(t *testing.T) {
	s := limitedStream(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 1})
	ctx := streamtest.Context(t)
	var tasks []*peonify.Task
	for _, k := range []string{"a", "b", "c"} {
		tasks = append(tasks, keyed("t", k, 3)...)
	}
	tasks = append(tasks, &peonify.Task{Type: "t"}, &peonify.Task{Type: "t"}) // no key: not limited
	streamtest.Enqueue(t, s, tasks...)
	ds := streamtest.Poll(t, s, 10)
	if got := keysOf(ds); !slices.Equal(got, []string{"", "", "a", "b", "c"}) {
		t.Fatalf("first poll took keys %q, want one task of each key and both unkeyed", got)
	}
	for _, d := range ds {
		if d.Task.Key != "" && string(d.Task.Payload) != d.Task.Key+"-0" {
			t.Errorf("key %s started with %s, want its first task", d.Task.Key, d.Task.Payload)
		}
	}
	pollNone(t, s, "every key busy")
	waitListening(t, s, 1)
	i := slices.IndexFunc(ds, func(d peonify.Delivery) bool { return d.Task.Key == "a" })
	if err := s.Ack(ctx, ds[i]); err != nil {
		t.Fatal(err)
	}
	waitWake(t, s, time.Second) // the ack freed a permit
	if got := payloads(streamtest.Poll(t, s, 10)); !slices.Equal(got, []string{"a-1"}) {
		t.Fatalf("after acking a's task, the poll took %q, want a's next", got)
	}
	// A nack frees the permit too (and the failed task keeps its place).
	j := slices.IndexFunc(ds, func(d peonify.Delivery) bool { return d.Task.Key == "b" })
	if err := s.Nack(ctx, ds[j], peonify.NackOptions{Outcome: peonify.OutcomeFailed}); err != nil {
		t.Fatal(err)
	}
	waitWake(t, s, time.Second)
	if got := payloads(streamtest.Poll(t, s, 10)); !slices.Equal(got, []string{"b-0"}) {
		t.Fatalf("after failing b's task, the poll took %q, want b-0 again", got)
	}
}

func TestLimitKeyConcurrency(t *testing.T) {
	s := limitedStream(t, Config{NoListen: true}, peonify.Limit{Type: "t", PerKey: true, Concurrency: 1,
		KeyConcurrency: map[string]int{"paying": 3, "held": 0}})
	var tasks []*peonify.Task
	for _, k := range []string{"paying", "held", "other"} {
		tasks = append(tasks, keyed("t", k, 5)...)
	}
	tasks = append(tasks, keyed("u", "held", 1)...) // another type: the limit does not apply
	streamtest.Enqueue(t, s, tasks...)
	ds := streamtest.Poll(t, s, 20)
	want := []string{"held", "other", "paying", "paying", "paying"}
	if got := keysOf(ds); !slices.Equal(got, want) {
		t.Fatalf("poll took keys %q, want %q", got, want)
	}
	for _, d := range ds {
		if d.Task.Key == "held" && d.Task.Type != "u" {
			t.Errorf("a held key's task of the limited type started: %+v", d.Task)
		}
	}
	pollNone(t, s, "every key at its limit")
}

func TestLimitGlobalConcurrencyAcrossProcesses(t *testing.T) {
	const limit, tasks = 3, 300
	pool := testPool(t)
	queue := uniqueQueue(t)
	lim := peonify.Limit{Type: "t", Concurrency: limit}
	a := limitedStream(t, Config{Queue: queue, Identity: "proc-a", NoListen: true}, lim)
	b := newTestStream(t, pool, Config{Queue: queue, Identity: "proc-b", NoListen: true})
	if err := b.SetLimits([]peonify.Limit{lim}); err != nil {
		t.Fatal(err)
	}
	ctx := streamtest.Context(t)
	batch := make([]*peonify.Task, tasks)
	for i := range batch {
		batch[i] = &peonify.Task{Type: "t", Key: fmt.Sprint(i % 7)}
	}
	streamtest.Enqueue(t, a, batch...)

	// held counts claims returned minus acks begun: never more than the
	// database holds running, so above the limit means the limit broke.
	var held, most, done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for _, s := range []*Stream{a, b, a, b} {
		wg.Go(func() {
			for done.Load() < tasks {
				ds, err := s.Poll(ctx, 2)
				if err != nil {
					errs <- err
					return
				}
				n := held.Add(int64(len(ds)))
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				if len(ds) == 0 {
					time.Sleep(time.Millisecond)
					continue
				}
				time.Sleep(2 * time.Millisecond) // run
				held.Add(-int64(len(ds)))
				if err := s.Ack(ctx, ds...); err != nil {
					errs <- err
					return
				}
				done.Add(int64(len(ds)))
			}
		})
	}
	// And the database itself, sampled meanwhile.
	var dbMost int
	wg.Go(func() {
		for done.Load() < tasks && ctx.Err() == nil {
			var n int
			err := pool.QueryRow(ctx, "SELECT count(*) FROM "+testSchema+".peonify_tasks WHERE queue = $1 AND state = 'running'", queue).Scan(&n)
			if err != nil {
				errs <- err
				return
			}
			dbMost = max(dbMost, n)
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if most.Load() > limit || dbMost > limit {
		t.Fatalf("two processes held %d tasks at once (the database saw %d running); the limit is %d", most.Load(), dbMost, limit)
	}
	if most.Load() < limit && dbMost < limit {
		t.Errorf("at most %d tasks ran at once: the limit of %d was never reached", most.Load(), limit)
	}
}

func TestLimitLocal(t *testing.T) {
	queue := uniqueQueue(t)
	lim := peonify.Limit{Concurrency: 2, Local: true}
	a := limitedStream(t, Config{Queue: queue, Identity: "local-a", NoListen: true}, lim)
	b := limitedStream(t, Config{Queue: queue, Identity: "local-b", NoListen: true}, lim)
	streamtest.Enqueue(t, a, keyed("t", "", 10)...)
	if ds := streamtest.Poll(t, a, 10); len(ds) != 2 {
		t.Fatalf("a claimed %d, want its local limit, 2", len(ds))
	}
	pollNone(t, a, "a at its local limit")
	if ds := streamtest.Poll(t, b, 10); len(ds) != 2 {
		t.Fatalf("b claimed %d while a holds 2, want 2 of its own", len(ds))
	}
	st, err := a.LimitStats(streamtest.Context(t))
	if err != nil || len(st) != 1 || st[0].InUse != 2 || st[0].Waiting != 6 || st[0].Name != "*/local" {
		t.Fatalf("LimitStats of a = %+v, %v; want */local with 2 in use (its own) and 6 waiting", st, err)
	}
}

func TestLimitRate(t *testing.T) {
	s := limitedStream(t, Config{}, peonify.Limit{Type: "t", Rate: 10, Period: time.Second, Burst: 2})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, keyed("t", "", 20)...)
	streamtest.Enqueue(t, s, keyed("u", "", 2)...) // not rate limited
	waitListening(t, s, 1)
	ds := streamtest.Poll(t, s, 10)
	if got := len(ds); got != 4 {
		t.Fatalf("first poll claimed %d tasks, want the burst of 2 and both others", got)
	}
	start := time.Now()
	pollNone(t, s, "bucket empty")
	// The poll held back by the bucket armed a wake-up for the next token,
	// due 100ms after the burst.
	waitWake(t, s, time.Second)
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Errorf("woken %s after the empty poll; the next token is due in about 100ms", el)
	}
	if ds := streamtest.Poll(t, s, 10); len(ds) != 1 {
		t.Fatalf("after the wake-up claimed %d, want 1", len(ds))
	}
	// Over half a second, no more than Rate allows.
	n := 0
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); {
		n += len(streamtest.Poll(t, s, 10))
		time.Sleep(10 * time.Millisecond)
	}
	if n < 3 || n > 6 {
		t.Errorf("claimed %d in half a second at 10/s, want about 5", n)
	}
	var rows int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM "+testSchema+".peonify_buckets WHERE queue = $1 AND name = 't'", s.Queue()).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("bucket rows = %d, %v; want 1 for the limit", rows, err)
	}
}

func TestLimitRatePerKeyShared(t *testing.T) {
	queue := uniqueQueue(t)
	lim := peonify.Limit{PerKey: true, Rate: 1, Period: time.Hour, Burst: 2}
	a := limitedStream(t, Config{Queue: queue, Identity: "rate-a", NoListen: true}, lim)
	b := limitedStream(t, Config{Queue: queue, Identity: "rate-b", NoListen: true}, lim)
	streamtest.Enqueue(t, a, append(keyed("t", "x", 5), keyed("t", "y", 5)...)...)
	if got := keysOf(streamtest.Poll(t, a, 3)); !slices.Equal(got, []string{"x", "x", "y"}) {
		t.Fatalf("a claimed %q, want a round of each key, then x's second token", got)
	}
	if got := keysOf(streamtest.Poll(t, b, 10)); !slices.Equal(got, []string{"y"}) {
		t.Fatalf("b claimed %q, want only y's last token: the buckets are shared", got)
	}
	pollNone(t, a, "both buckets empty")
}

func TestLimitOrderedRetryKeepsPlace(t *testing.T) {
	s := limitedStream(t, Config{}, peonify.Limit{PerKey: true, Ordered: true})
	ctx := streamtest.Context(t)
	tasks := keyed("t", "k", 4)
	tasks[2].Priority = 10 // priority does not jump the key's order
	streamtest.Enqueue(t, s, tasks...)
	streamtest.Enqueue(t, s, keyed("t", "other", 1)...)

	ds := streamtest.Poll(t, s, 10)
	if got := payloads(ds); !slices.Equal(got, []string{"k-0", "other-0"}) && !slices.Equal(got, []string{"other-0", "k-0"}) {
		t.Fatalf("first poll took %q, want k-0 and other-0", got)
	}
	k0 := ds[slices.IndexFunc(ds, func(d peonify.Delivery) bool { return d.Task.Key == "k" })]
	if err := s.Nack(ctx, k0, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	pollNone(t, s, "k-0 waits for its retry and the key waits for it")
	time.Sleep(350 * time.Millisecond)
	ds = streamtest.Poll(t, s, 10)
	if got := payloads(ds); !slices.Equal(got, []string{"k-0"}) {
		t.Fatalf("after the backoff the poll took %q, want the retry of k-0", got)
	}
	if ds[0].Task.Attempt != 2 {
		t.Errorf("retry is attempt %d, want 2", ds[0].Task.Attempt)
	}
	// Dead releases the key.
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "gave up"}); err != nil {
		t.Fatal(err)
	}
	ds = streamtest.Poll(t, s, 10)
	if got := payloads(ds); !slices.Equal(got, []string{"k-1"}) {
		t.Fatalf("after k-0 went dead the poll took %q, want k-1", got)
	}
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}
	// Delete releases it too: an operator unblocks the key.
	if n, err := s.Delete(ctx, tasks[2].ID); err != nil || n != 1 {
		t.Fatalf("Delete = %d, %v", n, err)
	}
	if got := payloads(streamtest.Poll(t, s, 10)); !slices.Equal(got, []string{"k-3"}) {
		t.Fatalf("after k-2 was deleted the poll took %q, want k-3", got)
	}
}

func TestLimitFairness(t *testing.T) {
	s := limitedStream(t, Config{NoListen: true}, peonify.Limit{PerKey: true, Fair: true})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, keyed("t", "A", 2000)...)
	streamtest.Enqueue(t, s, keyed("t", "B", 20)...)
	b := 0
	for poll := 1; b < 20; poll++ {
		ds := streamtest.Poll(t, s, 10)
		if poll == 1 && !slices.Contains(keysOf(ds), "B") {
			t.Fatalf("the first poll took %q: B waits behind A's 2,000", keysOf(ds))
		}
		for _, d := range ds {
			if d.Task.Key == "B" {
				b++
			}
		}
		if err := s.Ack(ctx, ds...); err != nil {
			t.Fatal(err)
		}
		if poll > 4 {
			t.Fatalf("B's 20 tasks took more than 4 polls of 10 (%d done)", b)
		}
	}
}

func TestLimitNoHeadOfLineBlocking(t *testing.T) {
	s := limitedStream(t, Config{NoListen: true}, peonify.Limit{PerKey: true, Concurrency: 1})
	streamtest.Enqueue(t, s, keyed("t", "busy", 1000)...)
	if ds := streamtest.Poll(t, s, 10); len(ds) != 1 {
		t.Fatalf("claimed %d of one key with concurrency 1", len(ds))
	}
	pollNone(t, s, "the only key saturated")
	streamtest.Enqueue(t, s, keyed("t", "late", 1)...)
	if got := keysOf(streamtest.Poll(t, s, 10)); !slices.Equal(got, []string{"late"}) {
		t.Fatalf("claimed %q, want the other key's task behind the saturated one", got)
	}
}

func TestLimitNotifyOtherProcess(t *testing.T) {
	queue := uniqueQueue(t)
	lim := peonify.Limit{PerKey: true, Concurrency: 1}
	a := limitedStream(t, Config{Queue: queue, Identity: "notify-a", NoListen: true}, lim)
	b := limitedStream(t, Config{Queue: queue, Identity: "notify-b"}, lim)
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, a, keyed("t", "k", 2)...)
	ds := streamtest.Poll(t, a, 10)
	if len(ds) != 1 {
		t.Fatalf("a claimed %d", len(ds))
	}
	waitListening(t, b, 1)
	pollNone(t, b, "the key is held by a")
	drainWake(b)
	if err := a.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}
	waitWake(t, b, 5*time.Second) // a's ack freed the key: NOTIFY
	if ds := streamtest.Poll(t, b, 10); len(ds) != 1 {
		t.Fatalf("b claimed %d after a's ack, want the key's next", len(ds))
	}
}

func TestLimitPausedQueue(t *testing.T) {
	s := limitedStream(t, Config{NoListen: true}, peonify.Limit{PerKey: true, Concurrency: 1})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, append(keyed("t", "k", 1), keyed("t", "", 1)...)...)
	if err := s.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	pollNone(t, s, "queue paused")
	if err := s.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if ds := streamtest.Poll(t, s, 10); len(ds) != 2 {
		t.Fatalf("claimed %d after Resume", len(ds))
	}
}

func TestLimitStats(t *testing.T) {
	s := limitedStream(t, Config{NoListen: true},
		peonify.Limit{Name: "per-tenant", PerKey: true, Concurrency: 1},
		peonify.Limit{Type: "t", Concurrency: 100})
	ctx := streamtest.Context(t)
	var tasks []*peonify.Task
	for i := range 12 {
		tasks = append(tasks, keyed("t", fmt.Sprintf("k%02d", i), i+1)...)
	}
	tasks = append(tasks, &peonify.Task{Type: "t"})
	tasks = append(tasks, &peonify.Task{Type: "t", Key: "later", RunAt: time.Now().Add(time.Hour)})
	streamtest.Enqueue(t, s, tasks...)
	if ds := streamtest.Poll(t, s, 100); len(ds) != 13 {
		t.Fatalf("claimed %d, want one per key and the unkeyed one", len(ds))
	}
	st, err := s.LimitStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Name != "per-tenant" || st[1].Name != "t" {
		t.Fatalf("LimitStats = %+v", st)
	}
	// 78 keyed tasks: 12 running, 66 ready (the scheduled one waits but is not ready).
	if st[0].InUse != 12 || st[0].Waiting != 66 || st[1].InUse != 13 || st[1].Waiting != 66 {
		t.Fatalf("LimitStats = %+v; want 12 in use, 66 waiting per key, 13 and 66 for type t", st)
	}
	if len(st[0].Keys) != peonify.MaxLimitStatKeys || st[0].Keys[0] != (peonify.KeyStat{Key: "k11", InUse: 1, Waiting: 11}) ||
		st[0].Keys[9].Key != "k02" {
		t.Fatalf("busiest keys = %+v", st[0].Keys)
	}
	if len(st[1].Keys) != 0 {
		t.Errorf("a limit without PerKey lists keys: %+v", st[1].Keys)
	}
}

func TestKeyRoundTripAndList(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{NoListen: true})
	ctx := streamtest.Context(t)
	small := keyed("t", "tenant-é", 2)
	big := keyed("t", "bulk", CopyThreshold+1) // through COPY
	streamtest.Enqueue(t, s, append(small, &peonify.Task{Type: "t"})...)
	streamtest.Enqueue(t, s, big...)
	_, err := pool.Exec(ctx, `INSERT INTO `+testSchema+`.peonify_tasks (queue, type, key, payload) VALUES ($1, 'raw', 'from-sql', '\x')`, s.Queue())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Get(ctx, small[0].ID)
	if err != nil || info.Task.Key != "tenant-é" {
		t.Fatalf("Get = %+v, %v; want the key", info.Task, err)
	}
	list, err := s.List(ctx, peonify.ListOptions{State: peonify.StatePending, Key: "tenant-é"})
	if err != nil || len(list) != 2 {
		t.Fatalf("List by key = %d tasks, %v; want 2", len(list), err)
	}
	list, err = s.List(ctx, peonify.ListOptions{State: peonify.StatePending, Key: "from-sql"})
	if err != nil || len(list) != 1 || list[0].Task.Type != "raw" {
		t.Fatalf("List of the raw insert's key = %+v, %v", list, err)
	}
	ds := streamtest.Poll(t, s, 1000)
	keys := map[string]int{}
	for _, d := range ds {
		keys[d.Task.Key]++
	}
	if keys["tenant-é"] != 2 || keys["bulk"] != CopyThreshold+1 || keys[""] != 1 || keys["from-sql"] != 1 {
		t.Fatalf("polled keys %v", keys)
	}
	long := &peonify.Task{Type: "t", Key: string(make([]byte, peonify.MaxKeyLen+1))}
	if err := s.Enqueue(ctx, long); err == nil {
		t.Error("Enqueue accepted a key over MaxKeyLen")
	}
	if err := s.Enqueue(ctx, &peonify.Task{Type: "t", Key: "a\x00"}); !errors.As(err, new(*peonify.InvalidTaskError)) {
		t.Errorf("Enqueue of a key with NUL = %v, want an InvalidTaskError", err)
	}
}

func TestMigrateFromVersion1(t *testing.T) {
	// A task stored by the previous release, by a raw INSERT.
	s := migratedFrom(t, 1, `INSERT INTO %s.peonify_tasks (queue, id, type) VALUES ('q', 'old', 'old-type')`)
	if err := s.SetLimits([]peonify.Limit{{PerKey: true, Ordered: true}, {Type: "old-type", Concurrency: 5}}); err != nil {
		t.Fatal(err)
	}
	streamtest.Enqueue(t, s, keyed("new", "k", 2)...)
	ds := streamtest.Poll(t, s, 10)
	if got := payloads(ds); len(ds) != 2 || ds[0].Task.ID != "old" && ds[1].Task.ID != "old" || !slices.Contains(got, "k-0") {
		t.Fatalf("after the upgrade the poll took %q (ids %s, %s), want the old task and k-0", got, ds[0].Task.ID, ds[len(ds)-1].Task.ID)
	}
}

// A processor that dies holding a permit gives it back when its lease
// ends and the rescuer returns the task: not before.
func TestLimitPermitOfCrashedProcessReturnsAfterLease(t *testing.T) {
	queue := uniqueQueue(t)
	lim := peonify.Limit{Type: "t", Concurrency: 1}
	cfg := Config{Queue: queue, Lease: 500 * time.Millisecond, RescueInterval: 50 * time.Millisecond}
	crashed := cfg
	crashed.Identity, crashed.NoListen = "crashed", true
	a := limitedStream(t, crashed, lim)
	cfg.Identity = "survivor"
	b := limitedStream(t, cfg, lim)
	streamtest.Enqueue(t, a, keyed("t", "", 2)...)
	ds := streamtest.Poll(t, a, 10)
	if len(ds) != 1 {
		t.Fatalf("claimed %d with concurrency 1", len(ds))
	}
	// a never acks: it crashed.
	for time.Now().Before(ds[0].Deadline.Add(-100 * time.Millisecond)) {
		if got := streamtest.Poll(t, b, 10); len(got) != 0 {
			t.Fatalf("b claimed %q while the crashed processor's lease ran", payloads(got))
		}
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n := 0; n == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the permit did not come back within 5s of the lease's end")
		}
		got := streamtest.Poll(t, b, 10)
		if n = len(got); n > 1 {
			t.Fatalf("b claimed %d at once, the limit is 1", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
