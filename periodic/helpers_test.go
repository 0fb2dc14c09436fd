package periodic

import (
	"bytes"
	"context"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
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

// store is a stand-in for a durable stream shared by several schedulers,
// with the deduplication the peonify.Enqueuer contract asks for: a task
// ID already stored, or a UniqueKey of a live task, is a duplicate.
// Completed tasks are forgotten, as memstream does, which is the hardest
// case for one task per slot.
type store struct {
	now func() time.Time

	mu     sync.Mutex
	byID   map[string]*peonify.Task
	byKey  map[string]*peonify.Task
	calls  int
	stored chan struct{} // receives after each stored task; buffer of one
}

func newStore(now func() time.Time) *store {
	return &store{
		now:    now,
		byID:   make(map[string]*peonify.Task),
		byKey:  make(map[string]*peonify.Task),
		stored: make(chan struct{}, 1),
	}
}

func (s *store) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	var dups []string
	for _, t := range tasks {
		if err := t.Prepare(now); err != nil {
			return err
		}
		if s.byID[t.ID] != nil || (t.UniqueKey != "" && s.byKey[t.UniqueKey] != nil) {
			dups = append(dups, t.ID)
			continue
		}
		c := t.Clone()
		s.byID[c.ID] = c
		if c.UniqueKey != "" {
			s.byKey[c.UniqueKey] = c
		}
		select {
		case s.stored <- struct{}{}:
		default:
		}
	}
	if dups != nil {
		return &peonify.DuplicateError{IDs: dups}
	}
	return nil
}

// Drain takes the tasks that are due, as a processor would, completes them
// and forgets them. They are returned in RunAt order.
func (s *store) Drain() []*peonify.Task {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*peonify.Task
	for id, t := range s.byID {
		if t.RunAt.After(now) {
			continue
		}
		due = append(due, t)
		delete(s.byID, id)
		delete(s.byKey, t.UniqueKey)
	}
	sort.Slice(due, func(i, j int) bool { return due[i].RunAt.Before(due[j].RunAt) })
	return due
}

// Tasks returns the stored tasks in RunAt order without taking them.
func (s *store) Tasks() []*peonify.Task {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []*peonify.Task
	for _, t := range s.byID {
		all = append(all, t)
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

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger returns a logger that writes into the returned buffer.
func testLogger() (*slog.Logger, *syncBuffer) {
	b := &syncBuffer{}
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
