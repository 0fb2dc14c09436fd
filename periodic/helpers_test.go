package periodic

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/memstream"
)

// fakeClock is a Clock that moves only when the test advances it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced when a timer is armed
}

type fakeTimer struct {
	c     *fakeClock
	at    time.Time
	ch    chan time.Time
	fired bool
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, changed: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.fired = true
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	close(c.changed)
	c.changed = make(chan struct{})
	return t
}

// Advance moves the clock by d and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.fired = true
		t.ch <- c.now
	}
	clear(c.timers[len(kept):])
	c.timers = kept
}

// AdvanceTo moves the clock to t.
func (c *fakeClock) AdvanceTo(t time.Time) { c.Advance(t.Sub(c.Now())) }

// WaitTimers waits until n timers are armed: every goroutine that waits on
// the clock has done what was due and is asleep again.
func (c *fakeClock) WaitTimers(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		armed, ch := len(c.timers), c.changed
		c.mu.Unlock()
		if armed >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			tb.Fatalf("timed out waiting for %d armed timers; %d armed", n, armed)
		}
	}
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.fired {
		return false
	}
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			break
		}
	}
	t.fired = true
	return true
}

// skewedClock is a processor's view of a shared fake clock whose wall
// time is off by a fixed amount.
type skewedClock struct {
	*fakeClock
	skew time.Duration
}

func (c skewedClock) Now() time.Time { return c.fakeClock.Now().Add(c.skew) }

// store is a memstream shared by several schedulers, seen through the
// eyes of a processor. memstream forgets completed tasks, which is the
// hardest case for one task per slot.
type store struct {
	*memstream.Stream

	mu    sync.Mutex
	calls int
}

func newStore(now func() time.Time) *store {
	return &store{Stream: memstream.New(memstream.Config{Now: now})}
}

// Enqueue counts the call and enqueues into the memstream.
func (s *store) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	return s.Stream.Enqueue(ctx, tasks...)
}

// Drain takes the tasks that are due, as a processor would, and acks them
// (memstream then forgets them). They are returned in RunAt order.
func (s *store) Drain(tb testing.TB) []*peonify.Task {
	tb.Helper()
	ctx := context.Background()
	ds, err := s.Poll(ctx, 1000)
	if err != nil {
		tb.Fatalf("Poll: %v", err)
	}
	if err := s.Ack(ctx, ds...); err != nil {
		tb.Fatalf("Ack: %v", err)
	}
	due := make([]*peonify.Task, len(ds))
	for i, d := range ds {
		due[i] = d.Task
	}
	sort.Slice(due, func(i, j int) bool { return due[i].RunAt.Before(due[j].RunAt) })
	return due
}

// Tasks returns the pending and scheduled tasks in RunAt order without
// taking them.
func (s *store) Tasks(tb testing.TB) []*peonify.Task {
	tb.Helper()
	var all []*peonify.Task
	for _, st := range []peonify.State{peonify.StatePending, peonify.StateScheduled} {
		infos, err := s.List(context.Background(), peonify.ListOptions{State: st, Limit: 1000})
		if err != nil {
			tb.Fatalf("List(%s): %v", st, err)
		}
		for _, info := range infos {
			all = append(all, &info.Task)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].RunAt.Before(all[j].RunAt) })
	return all
}

// Calls returns how many times Enqueue was called.
func (s *store) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// failingEnqueuer fails Enqueue with err while fail returns true.
type failingEnqueuer struct {
	next peonify.Enqueuer
	fail func(call int) error

	mu    sync.Mutex
	calls int
	done  chan struct{} // receives after each call; buffer of one
}

func newFailing(next peonify.Enqueuer, fail func(call int) error) *failingEnqueuer {
	return &failingEnqueuer{next: next, fail: fail, done: make(chan struct{}, 1)}
}

func (f *failingEnqueuer) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	f.mu.Lock()
	f.calls++
	call := f.calls
	f.mu.Unlock()
	defer func() {
		select {
		case f.done <- struct{}{}:
		default:
		}
	}()
	if err := f.fail(call); err != nil {
		return err
	}
	return f.next.Enqueue(ctx, tasks...)
}

func (f *failingEnqueuer) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// testLogger returns a logger that writes into the returned buffer.
func testLogger() (*slog.Logger, *streamtest.SyncBuffer) {
	b := &streamtest.SyncBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// runScheduler runs s until the test ends and checks that Run returns nil.
func runScheduler(t *testing.T, s *Scheduler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return within 10s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// slots returns the slot headers of tasks.
func slots(tb testing.TB, tasks []*peonify.Task) []string {
	tb.Helper()
	var out []string
	for _, task := range tasks {
		out = append(out, task.Headers[HeaderSlot])
	}
	return out
}

// at parses an RFC 3339 time.
func at(tb testing.TB, s string) time.Time {
	tb.Helper()
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}
