package redisstream

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/redis/go-redis/v9"
)

// limited returns a test stream with limits.
func limited(t testing.TB, cfg Config, limits ...peonify.Limit) *Stream {
	t.Helper()
	s := newTestStream(t, testClient(t), cfg)
	if err := s.SetLimits(limits); err != nil {
		t.Fatal(err)
	}
	return s
}

// keyed returns n tasks of type typ with key key, with IDs prefix-0...
func keyed(typ, key, prefix string, n int) []*peonify.Task {
	out := make([]*peonify.Task, n)
	for i := range out {
		out[i] = &peonify.Task{ID: fmt.Sprintf("%s-%d", prefix, i), Type: typ, Key: key, Payload: []byte(`{}`)}
	}
	return out
}

func ids(ds []peonify.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Task.ID
	}
	return out
}

func ack(t testing.TB, s *Stream, ds ...peonify.Delivery) {
	t.Helper()
	if err := s.Ack(context.Background(), ds...); err != nil {
		t.Fatal(err)
	}
}

func TestSetLimitsChecks(t *testing.T) {
	s := newTestStream(t, testClient(t), Config{})
	if err := s.SetLimits([]peonify.Limit{{Type: "a"}}); err == nil {
		t.Error("SetLimits of a limit that limits nothing returned nil")
	}
	if err := s.SetLimits([]peonify.Limit{{Concurrency: 1}, {Concurrency: 2}}); err == nil {
		t.Error("SetLimits of two limits with one name returned nil")
	}
	if err := s.SetLimits(nil); err != nil || s.lim.Load() != nil {
		t.Errorf("SetLimits(nil) = %v, limits %v", err, s.lim.Load())
	}
	if _, ok := any(s).(peonify.Limiter); !ok {
		t.Error("*Stream is not a peonify.Limiter")
	}
}

func TestKeyRoundTrip(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, &peonify.Task{ID: "k1", Type: "a", Key: "tenant-7"},
		&peonify.Task{ID: "k2", Type: "a", Key: "tenant-8", RunAt: time.Now().Add(time.Hour)})
	// A raw producer sets the key field, or the header.
	if err := c.Do(ctx, "XADD", s.Keys().Stream, "*", "id", "k3", "type", "a", "key", "tenant-9").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "XADD", s.Keys().Stream, "*", "id", "k4", "type", "a", "headers", `{"peonify-key":"tenant-10"}`).Err(); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"k1": "tenant-7", "k2": "tenant-8"} {
		info, err := s.Get(ctx, id)
		if err != nil || info.Task.Key != want {
			t.Errorf("Get(%s) = key %q, %v; want %q", id, info.Task.Key, err, want)
		}
	}
	ds := streamtest.Poll(t, s, 10)
	got := map[string]string{}
	for _, d := range ds {
		got[d.Task.ID] = d.Task.Key
	}
	want := map[string]string{"k1": "tenant-7", "k3": "tenant-9", "k4": "tenant-10"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("polled keys %v, want %v", got, want)
	}
	// A retry keeps the key.
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeFailed}); err != nil {
		t.Fatal(err)
	}
	again := streamtest.PollUntil(t, s, 1, 5*time.Second)
	if again[0].Task.Key != ds[0].Task.Key {
		t.Errorf("retried task has key %q, want %q", again[0].Task.Key, ds[0].Task.Key)
	}
}

func TestListByKey(t *testing.T) {
	s := newTestStream(t, testClient(t), Config{})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, keyed("a", "k1", "a", 3)...)
	streamtest.Enqueue(t, s, keyed("a", "k2", "b", 2)...)
	infos, err := s.List(ctx, peonify.ListOptions{State: peonify.StatePending, Key: "k2"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range infos {
		got = append(got, i.Task.ID)
	}
	if !slices.Equal(got, []string{"b-0", "b-1"}) {
		t.Errorf("List(Key k2) = %v, want [b-0 b-1]", got)
	}
}

// TestPerKeyConcurrency: a key at its limit never stops another key's
// tasks, a held task is not an attempt, and an ack frees the permit.
func TestPerKeyConcurrency(t *testing.T) {
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 2, KeyConcurrency: map[string]int{"vip": 3, "held": 0}})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, keyed("a", "A", "a", 5)...)
	streamtest.Enqueue(t, s, keyed("a", "vip", "v", 5)...)
	streamtest.Enqueue(t, s, keyed("a", "held", "h", 2)...)
	streamtest.Enqueue(t, s, keyed("a", "", "n", 3)...)
	ds := streamtest.Poll(t, s, 100)
	got := ids(ds)
	sort.Strings(got)
	want := []string{"a-0", "a-1", "n-0", "n-1", "n-2", "v-0", "v-1", "v-2"}
	if !slices.Equal(got, want) {
		t.Fatalf("first poll %v, want %v", got, want)
	}
	if more := streamtest.Poll(t, s, 100); len(more) != 0 {
		t.Fatalf("second poll %v, want nothing: every key is at its limit", ids(more))
	}
	// A held task is not an attempt.
	info, err := s.Get(ctx, "a-2")
	if err != nil || info.State != peonify.StatePending || info.Attempts != 0 {
		t.Errorf("held task: %+v, %v; want pending with no attempt", info, err)
	}
	var a0 peonify.Delivery
	for _, d := range ds {
		if d.Task.ID == "a-0" {
			a0 = d
		}
	}
	select {
	case <-s.Wake():
	default:
	}
	ack(t, s, a0)
	select {
	case <-s.Wake():
	default:
		t.Error("an ack that freed a permit did not fire Wake")
	}
	if got := ids(streamtest.Poll(t, s, 100)); !slices.Equal(got, []string{"a-2"}) {
		t.Errorf("after an ack of a-0: %v, want [a-2]", got)
	}
}

// TestGlobalConcurrencyTwoStreams: two streams, as two processes, claim
// concurrently and never run more than the limit at once, while tasks the
// limit does not apply to run beside.
func TestGlobalConcurrencyTwoStreams(t *testing.T) {
	c := testClient(t)
	lim := peonify.Limit{Type: "a", Concurrency: 3}
	s1 := limited(t, Config{}, lim)
	s2 := newTestStream(t, c, Config{Prefix: s1.cfg.Prefix})
	if err := s2.SetLimits([]peonify.Limit{lim}); err != nil {
		t.Fatal(err)
	}
	const n = 60
	streamtest.Enqueue(t, s1, keyed("a", "", "a", n)...)
	streamtest.Enqueue(t, s1, keyed("b", "", "b", 10)...)
	var running, peak, done, bs atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range []*Stream{s1, s2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			var work sync.WaitGroup
			defer work.Wait()
			for done.Load() < n && time.Now().Before(deadline) {
				ds, err := s.Poll(ctx, 5)
				if err != nil {
					t.Error(err)
					return
				}
				for _, d := range ds {
					work.Add(1)
					go func() {
						defer work.Done()
						if d.Task.Type == "b" {
							bs.Add(1)
							ack(t, s, d)
							return
						}
						r := running.Add(1)
						for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
						}
						time.Sleep(3 * time.Millisecond)
						running.Add(-1)
						ack(t, s, d)
						done.Add(1)
					}()
				}
				if len(ds) == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if done.Load() != n || bs.Load() != 10 {
		t.Fatalf("ran %d of %d limited tasks and %d of 10 others", done.Load(), n, bs.Load())
	}
	if peak.Load() != 3 {
		t.Errorf("peak concurrency %d, want the limit, 3", peak.Load())
	}
}

// TestUniqueKeyUnderLimits: acks and dead nacks under limits release the
// unique key, as without.
func TestUniqueKeyUnderLimits(t *testing.T) {
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 1})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, &peonify.Task{ID: "u1", Type: "a", Key: "K", UniqueKey: "one"},
		&peonify.Task{ID: "u2", Type: "a", Key: "L", UniqueKey: "two"})
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 2 {
		t.Fatalf("poll %v", ids(ds))
	}
	for _, d := range ds {
		if d.Task.ID == "u1" {
			ack(t, s, d)
		} else if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Enqueue(ctx, &peonify.Task{ID: "u3", Type: "a", Key: "K", UniqueKey: "one"},
		&peonify.Task{ID: "u4", Type: "a", Key: "L", UniqueKey: "two"}); err != nil {
		t.Errorf("Enqueue after the unique keys' tasks finished: %v", err)
	}
}

// TestProcessorPerKey runs a Processor with a PerKey limit: each key's
// tasks never overlap, other keys run beside, and freed permits start the
// next task at once (Wake), without waiting for a poll interval.
func TestProcessorPerKey(t *testing.T) {
	s := newTestStream(t, testClient(t), Config{})
	const keys, per = 4, 15
	for k := range keys {
		streamtest.Enqueue(t, s, keyed("a", fmt.Sprint("k", k), fmt.Sprint("k", k), per)...)
	}
	var mu sync.Mutex
	running := map[string]int{}
	overlap, total, peak := false, 0, 0
	all := make(chan struct{})
	p, err := peonify.New(peonify.Config{Workers: 8, PollInterval: 5 * time.Second, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.AddTaskList(peonify.TaskList{"a": peonify.HandlerFunc(func(ctx context.Context, task *peonify.Task) error {
		mu.Lock()
		running[task.Key]++
		overlap = overlap || running[task.Key] > 1
		n := 0
		for _, r := range running {
			n += r
		}
		peak = max(peak, n)
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		running[task.Key]--
		total++
		if total == keys*per {
			close(all)
		}
		mu.Unlock()
		return nil
	})})
	if err := p.AddStream(s, peonify.Limits(peonify.Limit{PerKey: true, Concurrency: 1})); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := streamtest.Run(t, p)
	defer stop()
	select {
	case <-all:
	case <-time.After(20 * time.Second):
		t.Fatal("the tasks did not all run")
	}
	mu.Lock()
	defer mu.Unlock()
	if overlap {
		t.Error("two tasks of one key ran at once")
	}
	if peak < 2 {
		t.Errorf("at most %d tasks ran at once: keys should run beside each other", peak)
	}
	// 15 tasks per key one after the other, each woken by the previous
	// one's ack: far less than one poll interval.
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("took %v: freed permits should wake the processor", d)
	}
}

// TestLocalConcurrency: a Local limit counts only this stream's claims.
func TestLocalConcurrency(t *testing.T) {
	c := testClient(t)
	lim := peonify.Limit{Type: "a", Concurrency: 2, Local: true}
	s1 := limited(t, Config{}, lim)
	s2 := newTestStream(t, c, Config{Prefix: s1.cfg.Prefix})
	if err := s2.SetLimits([]peonify.Limit{lim}); err != nil {
		t.Fatal(err)
	}
	streamtest.Enqueue(t, s1, keyed("a", "", "a", 10)...)
	streamtest.Enqueue(t, s1, keyed("b", "", "b", 2)...)
	d1 := streamtest.Poll(t, s1, 10)
	d2 := streamtest.Poll(t, s2, 10)
	count := func(ds []peonify.Delivery, typ string) (n int) {
		for _, d := range ds {
			if d.Task.Type == typ {
				n++
			}
		}
		return n
	}
	if count(d1, "a") != 2 || count(d2, "a") != 2 || count(d1, "b")+count(d2, "b") != 2 {
		t.Fatalf("s1 got %v, s2 got %v; want 2 of type a each and the b tasks", ids(d1), ids(d2))
	}
	if more := streamtest.Poll(t, s1, 10); len(more) != 0 {
		t.Fatalf("s1 claimed %v beyond its Local limit", ids(more))
	}
	ack(t, s1, d1...)
	if got := streamtest.Poll(t, s1, 10); count(got, "a") != 2 {
		t.Errorf("after s1 acked, it claimed %v, want 2 more of type a", ids(got))
	}
	stats, err := s2.LimitStats(streamtest.Context(t))
	if err != nil || len(stats) != 1 || stats[0].InUse != 2 || stats[0].Waiting != 4 {
		t.Errorf("s2 LimitStats = %+v, %v; want InUse 2 (its own), Waiting 4", stats, err)
	}
}

// TestBlockedPollIsQuick: a poll where every ready task is held returns
// nothing, quickly, and takes no attempt.
func TestBlockedPollIsQuick(t *testing.T) {
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 1})
	streamtest.Enqueue(t, s, keyed("a", "K", "k", 500)...)
	first := streamtest.Poll(t, s, 10)
	if len(first) != 1 {
		t.Fatalf("first poll %v, want one task", ids(first))
	}
	for range 5 {
		start := time.Now()
		if ds := streamtest.Poll(t, s, 10); len(ds) != 0 {
			t.Fatalf("blocked poll returned %v", ids(ds))
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("a blocked poll took %v", d)
		}
	}
	info, err := s.Get(streamtest.Context(t), "k-1")
	if err != nil || info.State != peonify.StatePending || info.Attempts != 0 {
		t.Errorf("held task %+v, %v: want pending with no attempt", info, err)
	}
}

// TestRateLimit: a token bucket of Burst 3 refilled 20 per second: 3 at
// once, then one every 50ms, and Wake fires when the next token is due.
func TestRateLimit(t *testing.T) {
	s := limited(t, Config{}, peonify.Limit{Type: "a", Rate: 20, Burst: 3})
	if err := s.Start(streamtest.Context(t)); err != nil {
		t.Fatal(err)
	}
	streamtest.Enqueue(t, s, keyed("a", "", "a", 20)...)
	streamtest.Enqueue(t, s, keyed("b", "", "b", 5)...)
	first := streamtest.Poll(t, s, 100)
	a := 0
	for _, d := range first {
		if d.Task.Type == "a" {
			a++
		}
	}
	if a != 3 || len(first) != 8 {
		t.Fatalf("first poll %v: want the burst of 3 and the 5 unlimited tasks", ids(first))
	}
	if more := streamtest.Poll(t, s, 100); len(more) > 1 {
		t.Fatalf("second poll at once %v: want at most one task", ids(more))
	}
	start := time.Now()
	got := 0
	for got < 5 {
		select {
		case <-s.Wake():
		case <-time.After(time.Second):
			t.Fatal("no Wake within a second while a token falls due every 50ms")
		}
		got += len(streamtest.Poll(t, s, 100))
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("5 more tasks came within %v: the bucket refills 20 per second", d)
	}
}

// TestOrderedRetryKeepsPlace: a failed task keeps its key's place through
// its retry delay; the next task waits for it.
func TestOrderedRetryKeepsPlace(t *testing.T) {
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Ordered: true})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, keyed("a", "K", "k", 3)...)
	streamtest.Enqueue(t, s, keyed("b", "K", "kb", 1)...) // another type, the same key: ordered too
	streamtest.Enqueue(t, s, keyed("a", "L", "l", 2)...)
	ds := streamtest.Poll(t, s, 10)
	if got := ids(ds); !slices.Equal(got, []string{"k-0", "l-0"}) && !slices.Equal(got, []string{"l-0", "k-0"}) {
		t.Fatalf("first poll %v, want the head of each key", got)
	}
	var k0, l0 peonify.Delivery
	for _, d := range ds {
		if d.Task.ID == "k-0" {
			k0 = d
		} else {
			l0 = d
		}
	}
	if err := s.Nack(ctx, k0, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	ack(t, s, l0)
	if got := ids(streamtest.Poll(t, s, 10)); !slices.Equal(got, []string{"l-1"}) {
		t.Fatalf("while k-0 waits for its retry: %v, want [l-1] (key K waits)", got)
	}
	again := streamtest.PollUntil(t, s, 10, 5*time.Second)
	if got := ids(again); !slices.Equal(got, []string{"k-0"}) || again[0].Task.Attempt != 2 {
		t.Fatalf("after the delay: %v (attempt %d), want k-0's retry", got, again[0].Task.Attempt)
	}
	ack(t, s, again...)
	for _, want := range []string{"k-1", "k-2", "kb-0"} {
		ds := streamtest.Poll(t, s, 10)
		if got := ids(ds); !slices.Equal(got, []string{want}) {
			t.Fatalf("got %v, want [%s]", got, want)
		}
		ack(t, s, ds...)
	}
}

// TestOrderedDeadOrDeletedReleasesKey: a dead task, or a deleted one,
// releases its key to the next task.
func TestOrderedDeadOrDeletedReleasesKey(t *testing.T) {
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Ordered: true})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, keyed("a", "K", "k", 3)...)
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 1 || ds[0].Task.ID != "k-0" {
		t.Fatalf("first poll %v", ids(ds))
	}
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "bad"}); err != nil {
		t.Fatal(err)
	}
	ds = streamtest.Poll(t, s, 10)
	if got := ids(ds); !slices.Equal(got, []string{"k-1"}) {
		t.Fatalf("after k-0 went dead: %v, want [k-1]", got)
	}
	// k-1 fails and waits an hour for its retry: deleting it releases the key.
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if got := streamtest.Poll(t, s, 10); len(got) != 0 {
		t.Fatalf("while k-1 waits for its retry: %v", ids(got))
	}
	if n, err := s.Delete(ctx, "k-1"); err != nil || n != 1 {
		t.Fatalf("Delete(k-1) = %d, %v", n, err)
	}
	if got := ids(streamtest.Poll(t, s, 10)); !slices.Equal(got, []string{"k-2"}) {
		t.Fatalf("after k-1 was deleted: %v, want [k-2]", got)
	}
}

// TestFairness: key A has 2,000 ready tasks before key B's 20; B's are
// all claimed within the first few polls.
func TestFairness(t *testing.T) {
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Fair: true})
	streamtest.Enqueue(t, s, keyed("a", "A", "a", 2000)...)
	streamtest.Enqueue(t, s, keyed("a", "B", "b", 20)...)
	bs := 0
	polls := 0
	for bs < 20 {
		polls++
		if polls > 6 {
			t.Fatalf("after %d polls of 10, only %d of B's 20 tasks were claimed", polls-1, bs)
		}
		ds := streamtest.Poll(t, s, 10)
		for _, d := range ds {
			if d.Task.Key == "B" {
				bs++
			}
		}
		ack(t, s, ds...)
	}
}

// TestPermitsReturnAfterLease: a stream that claims a task and never acks
// it (a processor that died) holds the key's permit until its lease ends,
// and no longer.
func TestPermitsReturnAfterLease(t *testing.T) {
	c := testClient(t)
	const lease = 400 * time.Millisecond
	lim := peonify.Limit{PerKey: true, Concurrency: 1}
	dead := limited(t, Config{Lease: lease}, lim)
	live := newTestStream(t, c, Config{Prefix: dead.cfg.Prefix, Lease: lease})
	if err := live.SetLimits([]peonify.Limit{lim}); err != nil {
		t.Fatal(err)
	}
	streamtest.Enqueue(t, dead, keyed("a", "K", "k", 2)...)
	held := streamtest.Poll(t, dead, 10)
	if len(held) != 1 {
		t.Fatalf("first poll %v", ids(held))
	}
	start := time.Now()
	var got []peonify.Delivery
	for len(got) == 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the permit never came back")
		}
		got = streamtest.Poll(t, live, 10)
		if len(got) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if d := time.Since(start); d < lease-50*time.Millisecond {
		t.Errorf("the permit came back after %v, before the lease of %v ended", d, lease)
	}
	// The task whose lease ended comes first: it keeps its place.
	if got[0].Task.ID != "k-0" || got[0].Task.Attempt != 2 {
		t.Errorf("after the lease: %v attempt %d, want k-0's second attempt", ids(got), got[0].Task.Attempt)
	}
	// The dead holder's ack is refused, and frees nothing.
	ack(t, dead, held...)
	if more := streamtest.Poll(t, live, 10); len(more) != 0 {
		t.Errorf("a stale ack freed the permit: %v", ids(more))
	}
}

// TestExtendHoldsPermit: a renewed lease keeps its permit.
func TestExtendHoldsPermit(t *testing.T) {
	const lease = 300 * time.Millisecond
	s := limited(t, Config{Lease: lease}, peonify.Limit{PerKey: true, Concurrency: 1})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, keyed("a", "K", "k", 2)...)
	ds := streamtest.Poll(t, s, 10)
	d := ds[0]
	for range 6 {
		time.Sleep(lease / 3)
		var err error
		if d, err = s.Extend(ctx, d, lease); err != nil {
			t.Fatal(err)
		}
		if more := streamtest.Poll(t, s, 10); len(more) != 0 {
			t.Fatalf("claimed %v while k-0's renewed lease holds the key", ids(more))
		}
	}
	ack(t, s, d)
	if got := ids(streamtest.Poll(t, s, 10)); !slices.Equal(got, []string{"k-1"}) {
		t.Errorf("after the ack: %v, want [k-1]", got)
	}
}

// TestWakeAcrossStreams: a permit freed by another process wakes a
// started stream whose tasks are held.
func TestWakeAcrossStreams(t *testing.T) {
	c := testClient(t)
	lim := peonify.Limit{PerKey: true, Concurrency: 1}
	s1 := limited(t, Config{}, lim)
	s2 := newTestStream(t, c, Config{Prefix: s1.cfg.Prefix})
	if err := s2.SetLimits([]peonify.Limit{lim}); err != nil {
		t.Fatal(err)
	}
	streamtest.Enqueue(t, s1, keyed("a", "K", "k", 2)...)
	ds := streamtest.Poll(t, s1, 10)
	if err := s2.Start(streamtest.Context(t)); err != nil {
		t.Fatal(err)
	}
	if got := streamtest.Poll(t, s2, 10); len(got) != 0 { // arms the watcher
		t.Fatalf("s2 claimed %v", ids(got))
	}
	time.Sleep(50 * time.Millisecond) // the watcher blocks
	for len(s2.Wake()) > 0 {
		<-s2.Wake()
	}
	start := time.Now()
	ack(t, s1, ds...)
	select {
	case <-s2.Wake():
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("s2 woke %v after the ack", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("s2 did not wake when s1 freed the permit")
	}
	if got := ids(streamtest.Poll(t, s2, 10)); !slices.Equal(got, []string{"k-1"}) {
		t.Errorf("s2 claimed %v, want [k-1]", got)
	}
}

func TestLimitStats(t *testing.T) {
	s := limited(t, Config{},
		peonify.Limit{PerKey: true, Concurrency: 1},
		peonify.Limit{Type: "a", Rate: 1000, Burst: 100},
	)
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, keyed("a", "A", "a", 5)...)
	streamtest.Enqueue(t, s, keyed("a", "B", "b", 2)...)
	streamtest.Enqueue(t, s, keyed("c", "", "c", 1)...)
	stats, err := s.LimitStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 2 || stats[0].Name != "*/key" || stats[0].InUse != 0 || stats[0].Waiting != 7 || stats[1].Name != "a" || stats[1].Waiting != 7 {
		t.Fatalf("before any claim: %+v", stats)
	}
	streamtest.Poll(t, s, 10)
	stats, err = s.LimitStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []peonify.KeyStat{{Key: "A", InUse: 1, Waiting: 4}, {Key: "B", InUse: 1, Waiting: 1}}
	if stats[0].InUse != 2 || stats[0].Waiting != 5 || fmt.Sprint(stats[0].Keys) != fmt.Sprint(want) {
		t.Errorf("per-key stats %+v, want InUse 2, Waiting 5, keys %v", stats[0], want)
	}
	if stats[1].InUse != 0 || stats[1].Waiting != 5 {
		t.Errorf("rate stats %+v, want InUse 0 (a rate counts no running tasks), Waiting 5", stats[1])
	}
}

// TestRemoveLimits: a queue claimed with limits, then without (the limits
// were removed), delivers every task the limits had indexed.
func TestRemoveLimits(t *testing.T) {
	c := testClient(t)
	s1 := limited(t, Config{RescueInterval: 20 * time.Millisecond}, peonify.Limit{PerKey: true, Concurrency: 1})
	streamtest.Enqueue(t, s1, keyed("a", "K", "k", 5)...)
	if err := c.XAdd(streamtest.Context(t), &redis.XAddArgs{Stream: s1.Keys().Stream, Values: []any{"type", "a", "key", "K"}}).Err(); err != nil {
		t.Fatal(err)
	}
	first := streamtest.Poll(t, s1, 10)
	if len(first) != 1 {
		t.Fatalf("with limits: %v", ids(first))
	}
	ack(t, s1, first...)
	s2 := newTestStream(t, c, Config{Prefix: s1.cfg.Prefix, RescueInterval: 20 * time.Millisecond})
	var got []string
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < 5 && time.Now().Before(deadline) {
		ds := streamtest.Poll(t, s2, 10)
		for _, d := range ds {
			got = append(got, d.Task.ID)
		}
		ack(t, s2, ds...)
		time.Sleep(10 * time.Millisecond)
	}
	if len(got) != 5 {
		t.Fatalf("without limits, got %v: want the 5 tasks left", got)
	}
	if n, err := c.Exists(streamtest.Context(t), s1.Keys().Limits+"mode").Result(); err != nil || n != 0 {
		t.Errorf("the index is still marked in use: %d, %v", n, err)
	}
}

// TestProcessorFairness: a processor drains key A's 2,000 tasks, enqueued
// first, and key B's 20: B's all finish before A is a tenth through.
func TestProcessorFairness(t *testing.T) {
	s := newTestStream(t, testClient(t), Config{})
	streamtest.Enqueue(t, s, keyed("a", "A", "a", 2000)...)
	streamtest.Enqueue(t, s, keyed("a", "B", "b", 20)...)
	var mu sync.Mutex
	as, bs, asAtB := 0, 0, -1
	all := make(chan struct{})
	p, err := peonify.New(peonify.Config{Workers: 10, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.AddTaskList(peonify.TaskList{"a": peonify.HandlerFunc(func(ctx context.Context, task *peonify.Task) error {
		mu.Lock()
		defer mu.Unlock()
		if task.Key == "A" {
			as++
		} else if bs++; bs == 20 {
			asAtB = as
		}
		if as+bs == 2020 {
			close(all)
		}
		return nil
	})})
	if err := p.AddStream(s, peonify.Limits(peonify.Limit{PerKey: true, Fair: true})); err != nil {
		t.Fatal(err)
	}
	defer streamtest.Run(t, p)()
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		t.Fatal("the tasks did not all run")
	}
	mu.Lock()
	defer mu.Unlock()
	if asAtB < 0 || asAtB >= 200 {
		t.Errorf("B's 20 tasks were done after %d of A's: want fewer than 200", asAtB)
	}
}

// TestPerKeyAcrossTypes: a PerKey limit of every type, beside a limit of
// one type, counts a key's tasks of every type together; an ack of one
// type frees the key for the other.
func TestPerKeyAcrossTypes(t *testing.T) {
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 1}, peonify.Limit{Type: "b", Concurrency: 100})
	streamtest.Enqueue(t, s, keyed("a", "K", "a", 1)...)
	streamtest.Enqueue(t, s, keyed("b", "K", "b", 2)...)
	streamtest.Enqueue(t, s, keyed("b", "L", "l", 1)...)
	ds := streamtest.Poll(t, s, 10)
	if got := ids(ds); !slices.Equal(got, []string{"a-0", "l-0"}) && !slices.Equal(got, []string{"l-0", "a-0"}) {
		t.Fatalf("first poll %v, want one task of each key", got)
	}
	if more := streamtest.Poll(t, s, 10); len(more) != 0 {
		t.Fatalf("claimed %v while key K is at its limit", ids(more))
	}
	for _, d := range ds {
		if d.Task.ID == "a-0" {
			ack(t, s, d)
		}
	}
	if got := ids(streamtest.Poll(t, s, 10)); !slices.Equal(got, []string{"b-0"}) {
		t.Errorf("after a-0's ack: %v, want [b-0]", got)
	}
}

// TestChangeLimits: a processor with other limits re-indexes the ready
// tasks and counts the running ones under its own.
func TestChangeLimits(t *testing.T) {
	c := testClient(t)
	s1 := limited(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 1})
	streamtest.Enqueue(t, s1, keyed("a", "K", "k", 4)...)
	if got := ids(streamtest.Poll(t, s1, 10)); !slices.Equal(got, []string{"k-0"}) {
		t.Fatalf("under the first limits: %v", got)
	}
	s2 := newTestStream(t, c, Config{Prefix: s1.cfg.Prefix})
	if err := s2.SetLimits([]peonify.Limit{{PerKey: true, Type: "a", Concurrency: 3}}); err != nil {
		t.Fatal(err)
	}
	if got := ids(streamtest.Poll(t, s2, 10)); !slices.Equal(got, []string{"k-1", "k-2"}) {
		t.Fatalf("under the new limits: %v, want [k-1 k-2] (k-0 runs and counts)", got)
	}
}

// TestLimitsOfEveryTask: a concurrency, Local or rate limit of every type
// stops the claim when it is exhausted, whatever the keys, and its freed
// permit or next token brings the next task.
func TestLimitsOfEveryTask(t *testing.T) {
	for _, lim := range []peonify.Limit{{Concurrency: 2}, {Concurrency: 2, Local: true}} {
		s := limited(t, Config{}, lim, peonify.Limit{PerKey: true, Concurrency: 1})
		for k := range 5 {
			streamtest.Enqueue(t, s, keyed("a", fmt.Sprint("K", k), fmt.Sprint("k", k), 2)...)
		}
		ds := streamtest.Poll(t, s, 10)
		if len(ds) != 2 {
			t.Fatalf("%s: first poll %v, want 2", lim.Name, ids(ds))
		}
		if more := streamtest.Poll(t, s, 10); len(more) != 0 {
			t.Fatalf("%s: claimed %v beyond the limit", lim.Name, ids(more))
		}
		ack(t, s, ds[0])
		if got := streamtest.Poll(t, s, 10); len(got) != 1 {
			t.Fatalf("%s: after an ack: %v, want one task", lim.Name, ids(got))
		}
	}

	s := limited(t, Config{}, peonify.Limit{Rate: 20, Burst: 2}, peonify.Limit{PerKey: true, Fair: true})
	if err := s.Start(streamtest.Context(t)); err != nil {
		t.Fatal(err)
	}
	for k := range 5 {
		streamtest.Enqueue(t, s, keyed("a", fmt.Sprint("K", k), fmt.Sprint("k", k), 2)...)
	}
	if ds := streamtest.Poll(t, s, 10); len(ds) != 2 {
		t.Fatalf("rate: first poll %v, want the burst of 2", ids(ds))
	}
	select {
	case <-s.Wake():
	case <-time.After(time.Second):
		t.Fatal("rate: no Wake when the next token fell due")
	}
	if ds := streamtest.PollUntil(t, s, 10, time.Second); len(ds) != 1 {
		t.Errorf("rate: after the wake: %v, want one task", ids(ds))
	}
}

// TestCountsUnderLimits: the Inspector counts held tasks as pending.
func TestCountsUnderLimits(t *testing.T) {
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 1})
	streamtest.Enqueue(t, s, keyed("a", "K", "k", 3)...)
	streamtest.Poll(t, s, 10)
	counts, err := s.Counts(streamtest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if counts[peonify.StateRunning] != 1 || counts[peonify.StatePending] != 2 {
		t.Errorf("Counts = %v, want 1 running and 2 pending", counts)
	}
}

// TestRawProducerUnderLimits: entries a raw producer adds (the key field,
// or the header; with or without an id field) are claimed under the
// limits, whether the claim takes them straight from the stream or from
// their key's ready queue.
func TestRawProducerUnderLimits(t *testing.T) {
	c := testClient(t)
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 1})
	ctx := streamtest.Context(t)
	add := func(fields ...any) {
		t.Helper()
		if err := c.Do(ctx, append([]any{"XADD", s.Keys().Stream, "*"}, fields...)...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	add("id", "k1", "type", "a", "key", "K")
	add("id", "k2", "type", "a", "headers", `{"peonify-key":"K"}`)
	add("id", "l1", "type", "a", "key", "L")
	add("type", "a", "key", "M") // no id: the entry ID is the task's
	first := streamtest.Poll(t, s, 10)
	got := map[string]string{}
	for _, d := range first {
		got[d.Task.Key] = d.Task.ID
	}
	if len(first) != 3 || got["K"] != "k1" || got["L"] != "l1" || got["M"] == "" {
		t.Fatalf("first poll %v, want k1, l1 and M's task", ids(first))
	}
	if more := streamtest.Poll(t, s, 10); len(more) != 0 {
		t.Fatalf("K's second task was claimed while its first runs: %v", ids(more))
	}
	for _, d := range first {
		if d.Task.Key == "K" {
			ack(t, s, d)
		}
	}
	next := streamtest.PollUntil(t, s, 1, 5*time.Second)
	if next[0].Task.ID != "k2" || next[0].Task.Key != "K" {
		t.Errorf("after k1's ack got %v key %q, want k2 of K", ids(next), next[0].Task.Key)
	}
}

// TestRankOneFirst: within one claim, each key's first ready task comes
// before any key's second, both for tasks read in that claim and for
// tasks already waiting in their keys' queues, which come first.
func TestRankOneFirst(t *testing.T) {
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 5})
	streamtest.Enqueue(t, s, keyed("a", "A", "a", 2)...)
	streamtest.Enqueue(t, s, keyed("a", "B", "b", 1)...)
	if ds := streamtest.Poll(t, s, 2); fmt.Sprint(ids(ds)) != "[a-0 b-0]" {
		t.Fatalf("first poll %v, want [a-0 b-0]", ids(ds))
	}
	// a-1 waits in A's queue; C's task arrives after it.
	streamtest.Enqueue(t, s, keyed("a", "C", "c", 1)...)
	if ds := streamtest.Poll(t, s, 1); fmt.Sprint(ids(ds)) != "[a-1]" {
		t.Fatalf("second poll %v, want the older waiting [a-1]", ids(ds))
	}
	if ds := streamtest.Poll(t, s, 5); fmt.Sprint(ids(ds)) != "[c-0]" {
		t.Fatalf("third poll %v, want [c-0]", ids(ds))
	}
}

// TestTypeLimitInOneClaim: tasks of a type under a concurrency limit of
// that type, claimed as they are read, are admitted in stream order up to
// the limit within one claim; the rest wait, in order, for a permit.
func TestTypeLimitInOneClaim(t *testing.T) {
	s := limited(t, Config{},
		peonify.Limit{Type: "x", PerKey: true, Concurrency: 1},
		peonify.Limit{Type: "y", Concurrency: 3})
	streamtest.Enqueue(t, s, keyed("y", "", "y", 5)...)
	streamtest.Enqueue(t, s, keyed("x", "K", "x", 2)...)
	first := streamtest.Poll(t, s, 10)
	if fmt.Sprint(ids(first)) != "[y-0 y-1 y-2 x-0]" {
		t.Fatalf("first poll %v, want [y-0 y-1 y-2 x-0]", ids(first))
	}
	ack(t, s, first[0])
	if ds := streamtest.Poll(t, s, 10); fmt.Sprint(ids(ds)) != "[y-3]" {
		t.Fatalf("after an ack of y: %v, want [y-3]", ids(ds))
	}
}

// TestWaitingThenNew: a key's waiting task is claimed before the new one
// behind it, which waits in turn, while a new key's task is claimed as
// it is read.
func TestWaitingThenNew(t *testing.T) {
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 1})
	streamtest.Enqueue(t, s, keyed("a", "K", "k", 2)...)
	first := streamtest.Poll(t, s, 10)
	if fmt.Sprint(ids(first)) != "[k-0]" {
		t.Fatalf("first poll %v, want [k-0]", ids(first))
	}
	ack(t, s, first...)
	streamtest.Enqueue(t, s, &peonify.Task{ID: "k-2", Type: "a", Key: "K"}, &peonify.Task{ID: "l-0", Type: "a", Key: "L"})
	second := streamtest.Poll(t, s, 10)
	if fmt.Sprint(ids(second)) != "[k-1 l-0]" {
		t.Fatalf("second poll %v, want [k-1 l-0]", ids(second))
	}
	if more := streamtest.Poll(t, s, 10); len(more) != 0 {
		t.Fatalf("k-2 was claimed while k-1 runs: %v", ids(more))
	}
	ack(t, s, second...)
	if third := streamtest.Poll(t, s, 10); fmt.Sprint(ids(third)) != "[k-2]" {
		t.Fatalf("third poll %v, want [k-2]", ids(third))
	}
}

// TestAckTrimKeepsReadyTasks checks that an ack under limits keeps the
// ready tasks that wait below the group's last delivered ID (an ack that
// trimmed the stream below the oldest pending or undelivered entry would
// drop them), and that it deletes the acked entries.
func TestAckTrimKeepsReadyTasks(t *testing.T) {
	c := testClient(t)
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 1})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, keyed("a", "held", "h", 5)...)
	streamtest.Enqueue(t, s, keyed("a", "free", "f", 1)...)
	ds, err := s.Poll(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(ds); !slices.Equal(got, []string{"h-0", "f-0"}) {
		t.Fatalf("first claim = %v, want [h-0 f-0]", got)
	}
	// The other keys' tasks are acked past the waiting h-1..h-4.
	for i := range 3 {
		streamtest.Enqueue(t, s, keyed("a", fmt.Sprintf("k%d", i), fmt.Sprintf("k%d", i), 1)...)
	}
	more, err := s.Poll(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	ack(t, s, append(more, ds[1])...)
	ack(t, s, ds[0])
	var got []string
	for range 4 {
		d, err := s.Poll(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids(d)...)
		ack(t, s, d...)
	}
	if want := []string{"h-1", "h-2", "h-3", "h-4"}; !slices.Equal(got, want) {
		t.Errorf("the held key's tasks = %v, want %v", got, want)
	}
	if n := c.XLen(ctx, s.Keys().Stream).Val(); n != 0 {
		t.Errorf("%d entries left in the stream after every task was acked", n)
	}
}
