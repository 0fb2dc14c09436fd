package memstream_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

func setLimits(t *testing.T, s *memstream.Stream, limits ...peonify.Limit) {
	t.Helper()
	if err := s.SetLimits(limits); err != nil {
		t.Fatalf("SetLimits: %v", err)
	}
}

// keyed returns n tasks of type typ with key, with IDs key-1, key-2...
func keyed(typ, key string, n int) []*peonify.Task {
	ts := make([]*peonify.Task, n)
	for i := range ts {
		ts[i] = &peonify.Task{ID: fmt.Sprintf("%s-%d", key, i+1), Type: typ, Key: key}
	}
	return ts
}

func keysOf(ds []peonify.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Task.Key
	}
	return out
}

func TestLimitConcurrency(t *testing.T) {
	s, _ := newStream(t)
	setLimits(t, s, peonify.Limit{Type: "email", Concurrency: 2})
	enqueue(t, s, keyed("email", "e", 4)...)
	enqueue(t, s, keyed("sms", "s", 3)...)

	ds := poll(t, s, 100)
	if got := ids(ds); !slices.Equal(got, []string{"e-1", "e-2", "s-1", "s-2", "s-3"}) {
		t.Fatalf("Poll claimed %v, want e-1 and e-2 (concurrency 2) and every sms task (no limit applies)", got)
	}
	pollNone(t, s)
	wantCounts(t, s, 2, 0, 5, 0)
	if err := s.Ack(context.Background(), ds[0]); err != nil {
		t.Fatal(err)
	}
	d := pollOne(t, s)
	if d.Task.ID != "e-3" || d.Task.Attempt != 1 {
		t.Fatalf("after an Ack, Poll claimed %s attempt %d, want e-3 attempt 1: a held-back task is not an attempt", d.Task.ID, d.Task.Attempt)
	}
	pollNone(t, s)
	// A nack frees the permit too.
	if err := s.Nack(context.Background(), d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if d := pollOne(t, s); d.Task.ID != "e-4" {
		t.Fatalf("after a Nack, Poll claimed %s, want e-4", d.Task.ID)
	}
}

func TestLimitPerKey(t *testing.T) {
	s, _ := newStream(t)
	setLimits(t, s, peonify.Limit{PerKey: true, Concurrency: 1, KeyConcurrency: map[string]int{"gold": 3, "held": 0}})
	enqueue(t, s, keyed("t", "a", 3)...)
	enqueue(t, s, keyed("t", "gold", 5)...)
	enqueue(t, s, keyed("t", "held", 2)...)
	enqueue(t, s, &peonify.Task{ID: "none-1", Type: "t"}, &peonify.Task{ID: "none-2", Type: "t"})

	got := ids(poll(t, s, 100))
	slices.Sort(got)
	want := []string{"a-1", "gold-1", "gold-2", "gold-3", "none-1", "none-2"}
	if !slices.Equal(got, want) {
		t.Fatalf("Poll claimed %v, want %v: one of a, three of gold (KeyConcurrency), none of held (KeyConcurrency 0), and the tasks without a key", got, want)
	}
	pollNone(t, s)

	// Loosening the limits lets the held key run.
	setLimits(t, s, peonify.Limit{PerKey: true, Concurrency: 1})
	if got := ids(poll(t, s, 100)); !slices.Equal(got, []string{"held-1"}) {
		t.Fatalf("after held's KeyConcurrency was dropped, Poll claimed %v, want held-1", got)
	}
}

func TestLimitFairness(t *testing.T) {
	s, _ := newStream(t)
	setLimits(t, s, peonify.Limit{PerKey: true, Fair: true})
	enqueue(t, s, keyed("t", "a", 100)...)
	enqueue(t, s, keyed("t", "b", 3)...)
	enqueue(t, s, &peonify.Task{ID: "none", Type: "t"})
	if got := ids(poll(t, s, 7)); !slices.Equal(got, []string{"a-1", "b-1", "none", "a-2", "b-2", "a-3", "b-3"}) {
		t.Fatalf("Poll(7) claimed %v, want each key's first before any key's second, round the keys", got)
	}
	// Priority still orders tasks within a rank.
	enqueue(t, s, &peonify.Task{ID: "c-urgent", Type: "t", Key: "c", Priority: 5})
	if got := ids(poll(t, s, 2)); !slices.Equal(got, []string{"c-urgent", "a-4"}) {
		t.Fatalf("Poll(2) claimed %v, want c-urgent (rank 1, priority 5) then a-4", got)
	}
}

func TestLimitNoHeadOfLineBlocking(t *testing.T) {
	s, _ := newStream(t)
	setLimits(t, s, peonify.Limit{PerKey: true, Concurrency: 1}, peonify.Limit{Type: "slow", Concurrency: 1})
	enqueue(t, s, keyed("t", "busy", 50)...)
	enqueue(t, s, keyed("slow", "x", 1)...)
	enqueue(t, s, keyed("slow", "y", 1)...)
	enqueue(t, s, keyed("t", "other", 2)...)
	if got := ids(poll(t, s, 10)); !slices.Equal(got, []string{"busy-1", "x-1", "other-1"}) {
		t.Fatalf("Poll(10) claimed %v, want busy-1, x-1 and other-1: held tasks must not stop the others", got)
	}
}

func TestLimitRate(t *testing.T) {
	s, c := newStream(t)
	setLimits(t, s, peonify.Limit{Type: "t", Rate: 2, Period: time.Second, Burst: 3})
	enqueue(t, s, keyed("t", "k", 20)...)
	counts := func() int { return len(poll(t, s, 100)) }
	if n := counts(); n != 3 {
		t.Fatalf("first Poll claimed %d, want the burst of 3", n)
	}
	steps := []struct {
		advance time.Duration
		want    int
	}{
		{0, 0}, {499 * time.Millisecond, 0}, {time.Millisecond, 1}, {250 * time.Millisecond, 0},
		{250 * time.Millisecond, 1}, {1250 * time.Millisecond, 2}, {time.Hour, 3},
	}
	for _, st := range steps {
		c.Advance(st.advance)
		if n := counts(); n != st.want {
			t.Fatalf("Poll %s later claimed %d, want %d (2 per second, burst 3)", st.advance, n, st.want)
		}
	}
}

func TestLimitRatePerKey(t *testing.T) {
	s, c := newStream(t)
	setLimits(t, s, peonify.Limit{PerKey: true, Rate: 1, Period: time.Minute})
	enqueue(t, s, keyed("t", "a", 3)...)
	enqueue(t, s, keyed("t", "b", 3)...)
	if got := keysOf(poll(t, s, 10)); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Poll claimed keys %v, want one of each key", got)
	}
	c.Advance(time.Minute)
	if got := keysOf(poll(t, s, 10)); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("a minute later, Poll claimed keys %v, want one of each key", got)
	}
}

func TestLimitOrdered(t *testing.T) {
	ctx := context.Background()
	s, c := newStream(t)
	setLimits(t, s, peonify.Limit{Type: "t", PerKey: true, Ordered: true})
	tasks := keyed("t", "k", 4)
	tasks[2].Priority = 10 // priority does not jump the key's order
	enqueue(t, s, tasks...)

	d := pollOne(t, s)
	if d.Task.ID != "k-1" {
		t.Fatalf("Poll claimed %s, want k-1, the head of its key", d.Task.ID)
	}
	pollNone(t, s)
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Second}); err != nil {
		t.Fatal(err)
	}
	pollNone(t, s) // the key waits for the retry of k-1
	c.Advance(time.Second)
	d = pollOne(t, s)
	if d.Task.ID != "k-1" || d.Task.Attempt != 2 {
		t.Fatalf("after the backoff, Poll claimed %s attempt %d, want k-1 attempt 2", d.Task.ID, d.Task.Attempt)
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead}); err != nil {
		t.Fatal(err)
	}
	d = pollOne(t, s)
	if d.Task.ID != "k-2" || d.Task.Attempt != 1 {
		t.Fatalf("after k-1 went dead, Poll claimed %s attempt %d, want k-2 attempt 1", d.Task.ID, d.Task.Attempt)
	}
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	// An operator deletes k-3 while k-4 waits behind it.
	d = pollOne(t, s)
	if d.Task.ID != "k-3" {
		t.Fatalf("Poll claimed %s, want k-3", d.Task.ID)
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	pollNone(t, s)
	if n, err := s.Delete(ctx, "k-3"); n != 1 || err != nil {
		t.Fatalf("Delete(k-3) = %d, %v", n, err)
	}
	if d := pollOne(t, s); d.Task.ID != "k-4" {
		t.Fatalf("after k-3 was deleted, Poll claimed %s, want k-4", d.Task.ID)
	}
}

func TestLimitExpiredLeaseFreesPermit(t *testing.T) {
	s, c := newStream(t)
	setLimits(t, s, peonify.Limit{Concurrency: 1})
	enqueue(t, s, keyed("t", "k", 2)...)
	d := pollOne(t, s)
	c.Advance(lease - time.Millisecond)
	pollNone(t, s) // the running task counts until its lease ends
	c.Advance(time.Millisecond)
	d2 := pollOne(t, s)
	if d2.Task.ID != d.Task.ID || d2.Task.Attempt != 2 {
		t.Fatalf("after the lease ended, Poll claimed %s attempt %d, want %s attempt 2 (it keeps its place)", d2.Task.ID, d2.Task.Attempt, d.Task.ID)
	}
}

// drainWake empties the Wake channel.
func drainWake(s *memstream.Stream) {
	for {
		select {
		case <-s.Wake():
		default:
			return
		}
	}
}

func wantWake(t *testing.T, s *memstream.Stream, within time.Duration, why string) {
	t.Helper()
	select {
	case <-s.Wake():
	case <-time.After(within):
		t.Fatalf("Wake did not receive within %s %s", within, why)
	}
}

func TestLimitWake(t *testing.T) {
	ctx := context.Background()
	s := memstream.New(memstream.Config{})
	defer s.Close(ctx)
	setLimits(t, s, peonify.Limit{Type: "c", Concurrency: 1}, peonify.Limit{Type: "r", Rate: 20, Burst: 1})
	enqueue(t, s, keyed("c", "c", 2)...)
	ds := poll(t, s, 10)
	if len(ds) != 1 {
		t.Fatalf("Poll claimed %d tasks, want 1", len(ds))
	}
	drainWake(s)
	if err := s.Ack(ctx, ds[0]); err != nil {
		t.Fatal(err)
	}
	wantWake(t, s, time.Millisecond, "of an Ack that freed a permit")
	ds = poll(t, s, 10)
	drainWake(s)
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead}); err != nil {
		t.Fatal(err)
	}
	wantWake(t, s, time.Millisecond, "of a Nack that freed a permit")

	enqueue(t, s, keyed("r", "r", 2)...)
	if n := len(poll(t, s, 10)); n != 1 {
		t.Fatalf("Poll claimed %d rate-limited tasks, want the burst of 1", n)
	}
	drainWake(s)
	start := time.Now()
	if n := len(poll(t, s, 10)); n != 0 {
		t.Fatalf("Poll claimed %d, want none until the next token", n)
	}
	wantWake(t, s, 5*time.Second, "of the next token being due")
	if waited := time.Since(start); waited < 40*time.Millisecond {
		t.Errorf("Wake received %s after the held-back poll, before the next token was due (50ms)", waited)
	}
	if n := len(poll(t, s, 10)); n != 1 {
		t.Fatalf("after Wake, Poll claimed %d, want the task whose token is due", n)
	}
}

func TestLimitStats(t *testing.T) {
	ctx := context.Background()
	s, _ := newStream(t)
	setLimits(t, s,
		peonify.Limit{Type: "t", PerKey: true, Concurrency: 2},
		peonify.Limit{Name: "all", Rate: 1000, Burst: 1000},
	)
	for i := range 12 {
		enqueue(t, s, keyed("t", fmt.Sprintf("k%02d", i), i+1)...)
	}
	enqueue(t, s, &peonify.Task{ID: "u", Type: "u", Key: "k00"})
	running := len(poll(t, s, 1000))
	stats, err := s.LimitStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 2 || stats[0].Name != "t/key" || stats[1].Name != "all" {
		t.Fatalf("LimitStats = %+v, want t/key then all", stats)
	}
	// Keys k00..k11 hold 1..12 tasks; two of each run (one of k00).
	if st := stats[0]; st.InUse != 23 || st.Waiting != 78-23 {
		t.Errorf("t/key: InUse %d Waiting %d, want 23 and 55", st.InUse, st.Waiting)
	}
	var keys []string
	for _, ks := range stats[0].Keys {
		keys = append(keys, fmt.Sprintf("%s:%d+%d", ks.Key, ks.InUse, ks.Waiting))
	}
	want := []string{"k11:2+10", "k10:2+9", "k09:2+8", "k08:2+7", "k07:2+6", "k06:2+5", "k05:2+4", "k04:2+3", "k03:2+2", "k02:2+1"}
	if !slices.Equal(keys, want) {
		t.Errorf("t/key Keys = %v, want %v", keys, want)
	}
	if st := stats[1]; st.InUse != running || st.Waiting != 79-running || st.Keys != nil {
		t.Errorf("all: %+v, want InUse %d, Waiting %d, no Keys", st, running, 79-running)
	}
}

func TestListKey(t *testing.T) {
	s, _ := newStream(t)
	enqueue(t, s, keyed("t", "a", 3)...)
	enqueue(t, s, keyed("t", "b", 2)...)
	infos, err := s.List(context.Background(), peonify.ListOptions{State: peonify.StatePending, Key: "b"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ti := range infos {
		got = append(got, ti.Task.ID+"/"+ti.Task.Key)
	}
	if !slices.Equal(got, []string{"b-1/b", "b-2/b"}) {
		t.Errorf("List(pending, Key b) = %v, want b-1 and b-2", got)
	}
}

func TestSetLimitsErrors(t *testing.T) {
	s, _ := newStream(t)
	var ce *peonify.ConfigError
	if err := s.SetLimits([]peonify.Limit{{Type: "t"}}); !errors.As(err, &ce) {
		t.Errorf("SetLimits of a limit that limits nothing: %v, want a *peonify.ConfigError", err)
	}
	km := map[string]int{"a": 1}
	setLimits(t, s, peonify.Limit{PerKey: true, Concurrency: 5, KeyConcurrency: km})
	km["a"] = 100 // the stream keeps its own copy
	enqueue(t, s, keyed("t", "a", 3)...)
	if n := len(poll(t, s, 10)); n != 1 {
		t.Errorf("Poll claimed %d tasks of key a, want 1: changing the caller's map changed the limit", n)
	}
	_ = s.Close(context.Background())
	if err := s.SetLimits(nil); !errors.Is(err, peonify.ErrClosed) {
		t.Errorf("SetLimits after Close: %v, want ErrClosed", err)
	}
}

// TestLimitsModel drives a stream with random operations under every
// kind of limit and checks each claim against the rules directly: the
// running tasks per key never exceed the limits, and an ordered key's
// running task is its oldest live one. Leases (10s) do not end: the clock
// moves 100ms a step.
func TestLimitsModel(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		s, c := newStream(t)
		limits := []peonify.Limit{
			{Type: "c", PerKey: true, Concurrency: 2, KeyConcurrency: map[string]int{"k0": 1}},
			{Type: "o", PerKey: true, Ordered: true},
			{Type: "c", Concurrency: 5},
		}
		setLimits(t, s, limits...)
		type live struct {
			task *peonify.Task
			seq  int
		}
		var (
			lives   = map[string]live{} // not done, not dead
			running = map[string]peonify.Delivery{}
			seq     int
		)
		for step := range 400 {
			switch op := rng.IntN(10); {
			case op < 4:
				typ := []string{"c", "o", "x"}[rng.IntN(3)]
				tk := &peonify.Task{ID: fmt.Sprintf("t%d", step), Type: typ, Key: fmt.Sprintf("k%d", rng.IntN(4))}
				enqueue(t, s, tk)
				seq++
				lives[tk.ID] = live{tk, seq}
			case op < 6:
				for _, d := range poll(t, s, 1+rng.IntN(5)) {
					running[d.Task.ID] = d
				}
			case op < 8 && len(running) > 0:
				ids := slices.Sorted(func(yield func(string) bool) {
					for id := range running {
						if !yield(id) {
							return
						}
					}
				})
				d := running[ids[rng.IntN(len(ids))]]
				delete(running, d.Task.ID)
				var err error
				switch rng.IntN(3) {
				case 0:
					err = s.Ack(ctx, d)
					delete(lives, d.Task.ID)
				case 1:
					err = s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Duration(rng.IntN(3)) * 100 * time.Millisecond})
				case 2:
					err = s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead})
					delete(lives, d.Task.ID)
				}
				if err != nil {
					t.Fatal(err)
				}
			default:
				c.Advance(100 * time.Millisecond)
			}
			// Check the running tasks against the limits.
			perKey := map[string]int{}
			typeC := 0
			for _, d := range running {
				if d.Task.Type == "c" {
					perKey[d.Task.Key]++
					typeC++
				}
				if d.Task.Type == "o" {
					for _, l := range lives {
						if l.task.Type == "o" && l.task.Key == d.Task.Key && l.seq < lives[d.Task.ID].seq {
							t.Fatalf("seed %d step %d: ordered task %s runs while older %s of key %s is live", seed, step, d.Task.ID, l.task.ID, d.Task.Key)
						}
					}
				}
			}
			for k, n := range perKey {
				if lim, _ := limits[0].ConcurrencyFor(k); n > lim {
					t.Fatalf("seed %d step %d: %d tasks of key %s run, limit %d", seed, step, n, k, lim)
				}
			}
			if typeC > 5 {
				t.Fatalf("seed %d step %d: %d tasks of type c run, limit 5", seed, step, typeC)
			}
		}
	}
}

func TestLimitOrderedRetryTakesPlaceBack(t *testing.T) {
	ctx := context.Background()
	s, _ := newStream(t)
	setLimits(t, s, peonify.Limit{PerKey: true, Ordered: true})
	enqueue(t, s, keyed("t", "k", 3)...)
	d := pollOne(t, s)
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead}); err != nil {
		t.Fatal(err)
	}
	d = pollOne(t, s) // k-2
	if n, err := s.Retry(ctx, "k-1"); n != 1 || err != nil {
		t.Fatalf("Retry(k-1) = %d, %v", n, err)
	}
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	if d := pollOne(t, s); d.Task.ID != "k-1" {
		t.Fatalf("after k-1 was retried, Poll claimed %s, want k-1, the oldest task of its key", d.Task.ID)
	}
	pollNone(t, s)
}
