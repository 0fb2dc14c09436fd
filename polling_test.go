package peonify_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// countingStream wraps a memstream and records how the processor polls it.
type countingStream struct {
	*memstream.Stream
	name     string
	maxAsked atomic.Int64
	polls    atomic.Int64
	out      atomic.Int64 // delivered and not yet acked or nacked
	maxOut   atomic.Int64
	failPoll error
	panicky  bool
	greedy   bool // returns one task more than asked
}

func (c *countingStream) Name() string { return c.name }

func (c *countingStream) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	c.polls.Add(1)
	if int64(limit) > c.maxAsked.Load() {
		c.maxAsked.Store(int64(limit))
	}
	if c.panicky {
		panic("poll bug")
	}
	if c.failPoll != nil {
		return nil, c.failPoll
	}
	if c.greedy {
		limit++
	}
	ds, err := c.Stream.Poll(ctx, limit)
	if o := c.out.Add(int64(len(ds))); o > c.maxOut.Load() {
		c.maxOut.Store(o)
	}
	return ds, err
}

// finished records that the handler finished one task of this stream.
func (c *countingStream) finished() { c.out.Add(-1) }

func fill(t *testing.T, s *memstream.Stream, typ string, n int) {
	t.Helper()
	tasks := make([]*peonify.Task, n)
	for i := range tasks {
		tasks[i] = &peonify.Task{Type: typ}
	}
	if err := s.Enqueue(context.Background(), tasks...); err != nil {
		t.Fatal(err)
	}
}

// runUntil runs p until n tasks succeeded (counted by done) and returns
// Run's error.
func runUntil(t *testing.T, p *peonify.Processor, done *atomic.Int64, n int64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for done.Load() < n {
		if time.Now().After(deadline) {
			cancel()
			<-errc
			t.Fatalf("only %d of %d tasks done in 20s", done.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestFetchesOnlyFreeCapacity(t *testing.T) {
	cs := &countingStream{Stream: memstream.New(memstream.Config{}), name: "counted"}
	fill(t, cs.Stream, "t", 2000)
	var done atomic.Int64
	p, _ := peonify.New(peonify.Config{Workers: 4, QueueSize: 8, Logger: quiet})
	_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		cs.finished()
		done.Add(1)
		return nil
	})})
	_ = p.AddStream(cs)
	runUntil(t, p, &done, 2000)
	if m := cs.maxAsked.Load(); m > 8 {
		t.Errorf("a poll asked for %d tasks, more than the local queue's 8", m)
	}
	if m := cs.maxOut.Load(); m > 4+8 {
		t.Errorf("%d tasks were claimed and unfinished at once; workers+queue is 12", m)
	}
	if polls := cs.polls.Load(); polls > 2000/4+50 {
		t.Errorf("%d polls for 2000 tasks: the low watermark should batch polls of at least 4", polls)
	}
}

func TestFailingStreamBacksOffAlone(t *testing.T) {
	bad := &countingStream{Stream: memstream.New(memstream.Config{}), name: "bad", failPoll: errors.New("broker down")}
	panicky := &countingStream{Stream: memstream.New(memstream.Config{}), name: "panicky", panicky: true}
	good := &countingStream{Stream: memstream.New(memstream.Config{}), name: "good"}
	fill(t, good.Stream, "t", 300)
	var done atomic.Int64
	p, _ := peonify.New(peonify.Config{Logger: quiet, PollInterval: 5 * time.Millisecond, MinPollInterval: time.Millisecond})
	_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		if done.Add(1) == 300 {
			time.Sleep(400 * time.Millisecond) // keep running a while so backoff can be observed
		}
		return nil
	})})
	_ = p.AddStream(bad)
	_ = p.AddStream(panicky)
	_ = p.AddStream(good)
	runUntil(t, p, &done, 300)
	// 100ms doubling with ±50% jitter: about 4 polls in 400ms; an idle
	// healthy stream at 5ms would poll ~80 times.
	for _, s := range []*countingStream{bad, panicky} {
		if n := s.polls.Load(); n > 10 {
			t.Errorf("failing stream %s was polled %d times: it loops hot instead of backing off", s.name, n)
		}
	}
	st := p.Stats()
	if st.Streams[0].PollErrors == 0 || st.Streams[0].LastError != "broker down" {
		t.Errorf("stats of the failing stream = %+v, want its errors counted and the last one kept", st.Streams[0])
	}
}

func TestWeightedFairness(t *testing.T) {
	heavy := &countingStream{Stream: memstream.New(memstream.Config{}), name: "heavy"}
	light := &countingStream{Stream: memstream.New(memstream.Config{}), name: "light"}
	fill(t, heavy.Stream, "heavy", 3000)
	fill(t, light.Stream, "light", 3000)
	var mu sync.Mutex
	var order []string
	var done atomic.Int64
	p, _ := peonify.New(peonify.Config{Workers: 2, QueueSize: 16, Logger: quiet})
	record := peonify.HandlerFunc(func(_ context.Context, task *peonify.Task) error {
		mu.Lock()
		order = append(order, task.Type)
		mu.Unlock()
		done.Add(1)
		return nil
	})
	_ = p.AddTaskList(peonify.TaskList{"heavy": record, "light": record})
	_ = p.AddStream(heavy, peonify.Weight(3))
	_ = p.AddStream(light, peonify.Weight(1))
	runUntil(t, p, &done, 2000)
	mu.Lock()
	defer mu.Unlock()
	var h, l int
	for _, typ := range order[200:2000] { // skip the start, before both streams are active
		if typ == "heavy" {
			h++
		} else {
			l++
		}
	}
	ratio := float64(h) / float64(l)
	if ratio < 2 || ratio > 4.5 {
		t.Errorf("heavy:light = %d:%d (%.2f), want about 3 for weights 3:1", h, l, ratio)
	}
}

func TestGreedyStreamExtrasAreReleased(t *testing.T) {
	g := &countingStream{Stream: memstream.New(memstream.Config{}), name: "greedy", greedy: true}
	fill(t, g.Stream, "t", 50)
	var done atomic.Int64
	p, _ := peonify.New(peonify.Config{Workers: 2, QueueSize: 4, Logger: quiet})
	_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		done.Add(1)
		return nil
	})})
	_ = p.AddStream(g)
	runUntil(t, p, &done, 50)
	if p.Stats().Released == 0 && done.Load() != 50 {
		t.Error("extras were neither released nor run")
	}
	counts, _ := g.Counts(context.Background())
	if counts[peonify.StateRunning] != 0 || counts[peonify.StatePending] != 0 {
		t.Errorf("left behind: %v", counts)
	}
}

func TestStatsShowInFlight(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, peonify.Config{Workers: 3}, peonify.TaskList{
		"hold": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { <-release; return nil }),
	}, memstream.Config{})
	h.enqueue(&peonify.Task{ID: "a", Type: "hold"}, &peonify.Task{ID: "b", Type: "hold"})
	h.start()
	for len(h.p.Stats().InFlight) < 2 {
		time.Sleep(time.Millisecond)
	}
	s := h.p.Stats()
	for _, f := range s.InFlight {
		if f.Type != "hold" || f.Attempt != 1 || f.Running <= 0 || f.Stream != "memory" {
			t.Errorf("in flight: %+v", f)
		}
	}
	close(release)
	h.waitKind(peonify.EventSucceeded, 2)
	if q := h.p.Stats().Types["hold"].Quantile(0.99); q <= 0 {
		t.Errorf("p99 = %s, want a positive latency", q)
	}
}

// slowAcker delays every Ack and records the largest batch and the most
// calls in flight at once.
type slowAcker struct {
	*memstream.Stream
	maxBatch atomic.Int64
	inFlight atomic.Int64
	maxCalls atomic.Int64
}

func (s *slowAcker) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	if n := int64(len(ds)); n > s.maxBatch.Load() {
		s.maxBatch.Store(n)
	}
	if n := s.inFlight.Add(1); n > s.maxCalls.Load() {
		s.maxCalls.Store(n)
	}
	defer s.inFlight.Add(-1)
	time.Sleep(20 * time.Millisecond) // a slow database: acks pile up meanwhile
	return s.Stream.Ack(ctx, ds...)
}

// Close keeps the memstream open so the test can inspect it after Run.
func (s *slowAcker) Close(context.Context) error { return nil }

func TestAckBatchesAreBounded(t *testing.T) {
	sa := &slowAcker{Stream: memstream.New(memstream.Config{})}
	fill(t, sa.Stream, "t", 3000)
	var done atomic.Int64
	p, _ := peonify.New(peonify.Config{Workers: 16, QueueSize: 256, Logger: quiet})
	_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		done.Add(1)
		return nil
	})})
	_ = p.AddStream(sa)
	runUntil(t, p, &done, 3000)
	if m := sa.maxBatch.Load(); m > 256 {
		t.Errorf("an Ack carried %d deliveries; calls must stay bounded (256)", m)
	}
	// A slow Ack must not hold up the next batch, nor may calls pile up
	// without bound.
	if m := sa.maxCalls.Load(); m < 2 || m > 4 {
		t.Errorf("at most %d Ack calls were in flight at once, want 2 to 4", m)
	}
	if n, err := sa.Counts(context.Background()); err != nil || n[peonify.StatePending]+n[peonify.StateRunning] != 0 {
		t.Errorf("left after the drain: %v", n)
	}
}

// limitedStream returns at most 5 tasks per Poll, as a broker's fetch limit.
type limitedStream struct{ *countingStream }

func (limitedStream) MaxPoll() int { return 5 }

func (l limitedStream) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	return l.countingStream.Poll(ctx, min(limit, 5))
}

func TestPollLimiterCapsRequests(t *testing.T) {
	cs := &countingStream{Stream: memstream.New(memstream.Config{}), name: "limited"}
	fill(t, cs.Stream, "t", 500)
	var done atomic.Int64
	p, _ := peonify.New(peonify.Config{Workers: 4, QueueSize: 40, Logger: quiet,
		MinPollInterval: time.Second, PollInterval: time.Second}) // a rest after a "short" batch would take seconds
	_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		done.Add(1)
		return nil
	})})
	_ = p.AddStream(limitedStream{cs})
	start := time.Now()
	runUntil(t, p, &done, 500)
	if m := cs.maxAsked.Load(); m > 5 {
		t.Errorf("asked for %d tasks from a stream whose MaxPoll is 5", m)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("500 tasks took %s: full batches of the limit were taken for a drained stream", el)
	}
}

// TestQueueHoldsWhatStartsWithinTheLease checks that the processor claims
// no more tasks than its workers start within a third of the lease, however
// large QueueSize is: two workers on one-second tasks and a 3s lease keep
// about two tasks waiting, and no lease runs out in the local queue. With
// 40 tasks claimed at once the last would wait 19s. Virtual time.
func TestQueueHoldsWhatStartsWithinTheLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := memstream.New(memstream.Config{Lease: 3 * time.Second})
		fill(t, ms, "t", 40)
		var done, deepest atomic.Int64
		p, err := peonify.New(peonify.Config{Workers: 2, QueueSize: 100, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
			if d := int64(p.Stats().QueueDepth); d > deepest.Load() {
				deepest.Store(d)
			}
			time.Sleep(time.Second)
			done.Add(1)
			return nil
		})})
		_ = p.AddStream(ms)
		runUntil(t, p, &done, 40)
		st := p.Stats()
		if st.LeaseLost != 0 || st.Succeeded != 40 {
			t.Errorf("%d leases lost and %d tasks succeeded, want 0 and 40", st.LeaseLost, st.Succeeded)
		}
		if d := deepest.Load(); d > 4 {
			t.Errorf("up to %d tasks waited in the local queue, want about 2: what two workers start in a second", d)
		}
	})
}
