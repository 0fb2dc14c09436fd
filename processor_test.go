package peonify_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// harness runs a processor over a memstream in the background.
type harness struct {
	t      *testing.T
	p      *peonify.Processor
	ms     *memstream.Stream
	cancel context.CancelFunc
	done   chan error
	events chan peonify.Event
}

func newHarness(t *testing.T, cfg peonify.Config, tl peonify.TaskList, streamCfg memstream.Config) *harness {
	t.Helper()
	h := &harness{t: t, ms: memstream.New(streamCfg), events: make(chan peonify.Event, 10000)}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	user := cfg.OnEvent
	cfg.OnEvent = func(e peonify.Event) {
		if user != nil {
			user(e)
		}
		h.events <- e
	}
	p, err := peonify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddTaskList(tl); err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(keepOpen{h.ms}); err != nil {
		t.Fatal(err)
	}
	h.p = p
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.p.Run(ctx) }()
	h.t.Cleanup(func() {
		if h.cancel != nil {
			h.stop()
		}
	})
}

// stop cancels Run and returns its error.
func (h *harness) stop() error {
	h.t.Helper()
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		return err
	case <-time.After(30 * time.Second):
		h.t.Fatal("Run did not return after its context was cancelled")
		return nil
	}
}

func (h *harness) enqueue(tasks ...*peonify.Task) {
	h.t.Helper()
	if err := h.ms.Enqueue(context.Background(), tasks...); err != nil {
		h.t.Fatal(err)
	}
}

// next waits for the next event.
func (h *harness) next() peonify.Event {
	h.t.Helper()
	select {
	case e := <-h.events:
		return e
	case <-time.After(10 * time.Second):
		h.t.Fatal("no task event within 10s")
		return peonify.Event{}
	}
}

// waitKind waits for n events of kind and returns them; other events are
// dropped.
func (h *harness) waitKind(kind peonify.EventKind, n int) []peonify.Event {
	h.t.Helper()
	var got []peonify.Event
	for len(got) < n {
		if e := h.next(); e.Kind == kind {
			got = append(got, e)
		}
	}
	return got
}

func (h *harness) info(id string) peonify.TaskInfo {
	h.t.Helper()
	ti, err := h.ms.Get(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return ti
}

// keepOpen lets a test inspect a memstream after Run closed its streams.
type keepOpen struct{ *memstream.Stream }

func (keepOpen) Close(context.Context) error { return nil }

func ok(context.Context, *peonify.Task) error { return nil }

func TestProcessorRunsEveryTask(t *testing.T) {
	const n = 500
	var seen sync.Map
	var dups atomic.Int64
	h := newHarness(t, peonify.Config{Workers: 8}, peonify.TaskList{
		"email-task": peonify.HandlerFunc(func(_ context.Context, task *peonify.Task) error {
			if _, loaded := seen.LoadOrStore(task.ID, true); loaded {
				dups.Add(1)
			}
			return nil
		}),
	}, memstream.Config{})
	for i := range n {
		h.enqueue(&peonify.Task{ID: fmt.Sprint("t", i), Type: "email-task", Payload: []byte(`{}`)})
	}
	h.start()
	h.waitKind(peonify.EventSucceeded, n)
	if err := h.stop(); err != nil {
		t.Fatalf("Run returned %v after a clean drain, want nil", err)
	}
	if dups.Load() != 0 {
		t.Errorf("%d tasks ran twice without any failure", dups.Load())
	}
	counts, _ := h.ms.Counts(context.Background())
	for _, st := range []peonify.State{peonify.StatePending, peonify.StateRunning, peonify.StateScheduled} {
		if counts[st] != 0 {
			t.Errorf("after the drain %d tasks are %s, want 0 (acks not flushed?)", counts[st], st)
		}
	}
	s := h.p.Stats()
	if s.Succeeded != n || s.Started != n || s.Polled != n {
		t.Errorf("stats: succeeded=%d started=%d polled=%d, want %d each", s.Succeeded, s.Started, s.Polled, n)
	}
	if got := s.Types["email-task"].Succeeded; got != n {
		t.Errorf("per-type succeeded = %d, want %d", got, n)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg   peonify.Config
		field string
	}{
		{peonify.Config{Workers: -1}, "Config.Workers"},
		{peonify.Config{QueueSize: -1}, "Config.QueueSize"},
		{peonify.Config{TaskTimeout: -time.Second}, "Config.TaskTimeout"},
		{peonify.Config{ShutdownGrace: -time.Second}, "Config.ShutdownGrace"},
		{peonify.Config{ShutdownTimeout: -time.Second}, "Config.ShutdownTimeout"},
		{peonify.Config{ShutdownGrace: 30 * time.Second, ShutdownTimeout: 30 * time.Second}, "Config.ShutdownGrace"},
		{peonify.Config{StoreTimeout: -time.Second}, "Config.StoreTimeout"},
		{peonify.Config{PollInterval: -1}, "Config.PollInterval"},
		{peonify.Config{QueueSize: 4, LowWatermark: 4}, "Config.LowWatermark"},
		{peonify.Config{Retry: peonify.RetryPolicy{MaxAttempts: -2}}, "Config.Retry.MaxAttempts"},
		{peonify.Config{Retry: peonify.RetryPolicy{MinBackoff: time.Hour, MaxBackoff: time.Second}}, "Config.Retry.MinBackoff"},
		{peonify.Config{Middleware: []peonify.Middleware{nil}}, "Config.Middleware"},
	} {
		_, err := peonify.New(tc.cfg)
		var ce *peonify.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("New(%+v) = %v, want a ConfigError for %s", tc.cfg, err, tc.field)
		}
	}
	if _, err := peonify.New(peonify.Config{}); err != nil {
		t.Errorf("the zero Config must be valid: %v", err)
	}
}

func TestAddTaskListRejectsBadEntries(t *testing.T) {
	p, _ := peonify.New(peonify.Config{})
	if err := p.AddTaskList(peonify.TaskList{"a": peonify.HandlerFunc(ok)}); err != nil {
		t.Fatal(err)
	}
	for name, tl := range map[string]peonify.TaskList{
		"duplicate":  {"a": peonify.HandlerFunc(ok)},
		"empty type": {"": peonify.HandlerFunc(ok)},
		"nil":        {"b": nil},
	} {
		if err := p.AddTaskList(tl); err == nil {
			t.Errorf("%s: AddTaskList accepted %v", name, tl)
		}
	}
	if err := p.AddStream(nil); err == nil {
		t.Error("AddStream(nil) accepted")
	}
	if err := p.AddStream(memstream.New(memstream.Config{}), peonify.Weight(0)); err == nil {
		t.Error("AddStream with weight 0 accepted")
	}
}

func TestRunNeedsStreamsAndHandlers(t *testing.T) {
	p, _ := peonify.New(peonify.Config{Logger: quiet})
	if err := p.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "AddStream") {
		t.Errorf("Run without streams = %v, want an error pointing to AddStream", err)
	}
	p, _ = peonify.New(peonify.Config{Logger: quiet})
	_ = p.AddStream(memstream.New(memstream.Config{}))
	if err := p.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "AddTaskList") {
		t.Errorf("Run without handlers = %v, want an error pointing to AddTaskList", err)
	}
}

func TestUnknownTypeIsDeadWithReason(t *testing.T) {
	h := newHarness(t, peonify.Config{}, peonify.TaskList{"known": peonify.HandlerFunc(ok)}, memstream.Config{})
	h.enqueue(&peonify.Task{ID: "u1", Type: "nobody-handles-this"})
	h.start()
	e := h.waitKind(peonify.EventDead, 1)[0]
	if !errors.Is(e.Err, peonify.ErrUnknownType) {
		t.Errorf("dead error = %v, want ErrUnknownType", e.Err)
	}
	ti := h.info("u1")
	if ti.State != peonify.StateDead || !strings.Contains(ti.LastError, `"nobody-handles-this"`) ||
		!strings.Contains(ti.LastError, `"known"`) {
		t.Errorf("dead task = %s %q, want dead with the type and the registered types named", ti.State, ti.LastError)
	}
}

func TestPanicBecomesFailureAndWorkerSurvives(t *testing.T) {
	var runs atomic.Int64
	h := newHarness(t, peonify.Config{Workers: 1, Retry: peonify.RetryPolicy{MaxAttempts: 2, MinBackoff: time.Millisecond}},
		peonify.TaskList{
			"boom": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { runs.Add(1); panic("kaboom") }),
			"fine": peonify.HandlerFunc(ok),
		}, memstream.Config{})
	h.enqueue(&peonify.Task{ID: "p1", Type: "boom"})
	h.start()
	dead := h.waitKind(peonify.EventDead, 1)[0]
	var pe *peonify.PanicError
	if !errors.As(dead.Err, &pe) || pe.Value != "kaboom" || len(pe.Stack) == 0 {
		t.Fatalf("dead error = %v, want a PanicError with the value and a stack", dead.Err)
	}
	if runs.Load() != 2 {
		t.Errorf("panicking task ran %d times, want 2 (MaxAttempts)", runs.Load())
	}
	// The single worker survived the panics.
	h.enqueue(&peonify.Task{ID: "f1", Type: "fine"})
	h.waitKind(peonify.EventSucceeded, 1)
}

func TestRetryBacksOffThenSucceeds(t *testing.T) {
	var attempts []int
	var mu sync.Mutex
	h := newHarness(t, peonify.Config{Retry: peonify.RetryPolicy{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}},
		peonify.TaskList{"flaky": peonify.HandlerFunc(func(_ context.Context, task *peonify.Task) error {
			mu.Lock()
			attempts = append(attempts, task.Attempt)
			mu.Unlock()
			if task.Attempt < 3 {
				return errors.New("not yet")
			}
			return nil
		})}, memstream.Config{})
	h.enqueue(&peonify.Task{ID: "r1", Type: "flaky"})
	h.start()
	retried := h.waitKind(peonify.EventRetried, 2)
	h.waitKind(peonify.EventSucceeded, 1)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Errorf("attempts seen = %v, want [1 2 3]", attempts)
	}
	for _, e := range retried {
		if e.Delay <= 0 || e.Delay > 6*time.Millisecond {
			t.Errorf("retry delay %s outside the policy's 1ms..5ms (+jitter)", e.Delay)
		}
	}
}

func TestOutOfAttemptsIsDead(t *testing.T) {
	h := newHarness(t, peonify.Config{Retry: peonify.RetryPolicy{MaxAttempts: 5, MinBackoff: time.Millisecond}},
		peonify.TaskList{"bad": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return errors.New("always") })},
		memstream.Config{})
	h.enqueue(&peonify.Task{ID: "o1", Type: "bad", MaxAttempts: 3}) // the task's own limit wins
	h.start()
	h.waitKind(peonify.EventRetried, 2)
	e := h.waitKind(peonify.EventDead, 1)[0]
	if e.Task.Attempt != 3 || !strings.Contains(e.Err.Error(), "out of attempts (3 of 3)") {
		t.Errorf("dead at attempt %d with %v, want attempt 3 and 'out of attempts (3 of 3)'", e.Task.Attempt, e.Err)
	}
	if ti := h.info("o1"); ti.State != peonify.StateDead || !strings.Contains(ti.LastError, "always") {
		t.Errorf("stored task = %s %q, want dead with the last error", ti.State, ti.LastError)
	}
}

func TestSkipRetryGoesStraightToDead(t *testing.T) {
	h := newHarness(t, peonify.Config{}, peonify.TaskList{
		"perm": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
			return peonify.SkipRetry(errors.New("invalid address"))
		})}, memstream.Config{})
	h.enqueue(&peonify.Task{ID: "s1", Type: "perm"})
	h.start()
	e := h.next()
	if e.Kind != peonify.EventDead || e.Task.Attempt != 1 {
		t.Fatalf("first event = %s at attempt %d, want dead at attempt 1", e.Kind, e.Task.Attempt)
	}
}

func TestRetryAfterAndSnooze(t *testing.T) {
	var mu sync.Mutex
	var attempts []int
	h := newHarness(t, peonify.Config{}, peonify.TaskList{
		"later": peonify.HandlerFunc(func(_ context.Context, task *peonify.Task) error {
			mu.Lock()
			attempts = append(attempts, task.Attempt)
			n := len(attempts)
			mu.Unlock()
			switch n {
			case 1:
				return peonify.Snooze(20 * time.Millisecond)
			case 2:
				return peonify.RetryAfter(30*time.Millisecond, errors.New("rate limited"))
			}
			return nil
		})}, memstream.Config{})
	h.enqueue(&peonify.Task{ID: "l1", Type: "later"})
	h.start()
	start := time.Now()
	if e := h.next(); e.Kind != peonify.EventSnoozed || e.Delay != 20*time.Millisecond {
		t.Fatalf("first event %s delay %s, want snoozed 20ms", e.Kind, e.Delay)
	}
	if e := h.next(); e.Kind != peonify.EventRetried || e.Delay != 30*time.Millisecond {
		t.Fatalf("second event %s delay %s, want retried after 30ms", e.Kind, e.Delay)
	}
	h.waitKind(peonify.EventSucceeded, 1)
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Errorf("task finished %s after start, before its 20ms snooze and 30ms retry delay", el)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(attempts) != "[1 1 2]" {
		t.Errorf("attempts = %v, want [1 1 2]: a snooze must not burn an attempt, RetryAfter must", attempts)
	}
}

func TestJSONHandler(t *testing.T) {
	type email struct {
		To string `json:"to"`
	}
	got := make(chan string, 2)
	h := newHarness(t, peonify.Config{Workers: 1}, peonify.TaskList{
		"email": peonify.JSON(func(_ context.Context, e email) error { got <- e.To; return nil }),
	}, memstream.Config{})
	h.enqueue(&peonify.Task{ID: "j1", Type: "email", Payload: []byte(`{"to":"ada@example.com"}`)},
		&peonify.Task{ID: "j2", Type: "email", Payload: []byte(`{"to":`)},
		&peonify.Task{ID: "j3", Type: "email", Payload: []byte(`{"to":7}`)},
		&peonify.Task{ID: "j4", Type: "email", Payload: []byte(`{"to":"a"} {"to":"b"}`)},
		&peonify.Task{ID: "j5", Type: "email", Payload: []byte(" \n")})
	h.start()
	var tos []string
	for range 2 {
		tos = append(tos, <-got)
	}
	slices.Sort(tos)
	if fmt.Sprint(tos) != "[ ada@example.com]" {
		t.Errorf("decoded to = %q, want the address and, from the blank payload, the zero value", tos)
	}
	dead := h.waitKind(peonify.EventDead, 3)
	for _, e := range dead {
		if e.Task.Attempt != 1 || !strings.Contains(e.Err.Error(), `payload of "email" task`) {
			t.Errorf("task %s dead at attempt %d with %v, want dead at once with the type named", e.Task.ID, e.Task.Attempt, e.Err)
		}
	}
}

func TestTaskTimeoutCancelsContext(t *testing.T) {
	causes := make(chan error, 1)
	h := newHarness(t, peonify.Config{TaskTimeout: 30 * time.Millisecond, Retry: peonify.RetryPolicy{MaxAttempts: 1}},
		peonify.TaskList{"slow": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return ctx.Err()
		})}, memstream.Config{})
	h.enqueue(&peonify.Task{ID: "to1", Type: "slow"})
	h.start()
	if c := <-causes; !errors.Is(c, peonify.ErrTaskTimeout) {
		t.Errorf("cause = %v, want ErrTaskTimeout", c)
	}
	if e := h.waitKind(peonify.EventDead, 1)[0]; !errors.Is(e.Err, peonify.ErrTaskTimeout) {
		t.Errorf("dead error = %v, want it to wrap ErrTaskTimeout", e.Err)
	}
}

func TestLeaseIsExtendedForLongTasks(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	h := newHarness(t, peonify.Config{}, peonify.TaskList{
		"long": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			close(started)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		})}, memstream.Config{Lease: 150 * time.Millisecond})
	h.enqueue(&peonify.Task{ID: "long1", Type: "long"})
	h.start()
	<-started
	// Outlive the original lease several times over.
	deadline := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(deadline) {
		ti := h.info("long1")
		if ti.State != peonify.StateRunning || !ti.LeaseUntil.After(time.Now()) {
			t.Fatalf("task is %s with lease until %s while it runs; the lease was not extended", ti.State, ti.LeaseUntil)
		}
		if ds, _ := h.ms.Poll(context.Background(), 1); len(ds) != 0 {
			t.Fatal("a second poller claimed the running task")
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	if e := h.next(); e.Kind != peonify.EventSucceeded {
		t.Fatalf("event %s, want succeeded", e.Kind)
	}
}

// lossyStream is a memstream whose Extend always reports a lost lease.
type lossyStream struct{ *memstream.Stream }

func (lossyStream) Extend(context.Context, peonify.Delivery, time.Duration) (peonify.Delivery, error) {
	return peonify.Delivery{}, fmt.Errorf("claimed elsewhere: %w", peonify.ErrLeaseLost)
}

func TestLostLeaseCancelsTask(t *testing.T) {
	ms := memstream.New(memstream.Config{Lease: 90 * time.Millisecond})
	causes := make(chan error, 1)
	events := make(chan peonify.Event, 10)
	p, _ := peonify.New(peonify.Config{Logger: quiet, OnEvent: func(e peonify.Event) { events <- e }})
	_ = p.AddTaskList(peonify.TaskList{"long": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	})})
	_ = p.AddStream(lossyStream{ms})
	_ = ms.Enqueue(context.Background(), &peonify.Task{ID: "x", Type: "long"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	if c := <-causes; !errors.Is(c, peonify.ErrLeaseLost) {
		t.Errorf("cause = %v, want ErrLeaseLost", c)
	}
	if e := <-events; e.Kind != peonify.EventLeaseLost {
		t.Errorf("event = %s, want lease_lost (the result of a task whose lease is lost is not settled)", e.Kind)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestShutdownReleasesUnstartedAndFinishesRunning(t *testing.T) {
	const n = 20
	started := make(chan string, n)
	finish := make(chan struct{})
	h := newHarness(t, peonify.Config{Workers: 2, QueueSize: 6, ShutdownGrace: 10 * time.Second}, peonify.TaskList{
		"work": peonify.HandlerFunc(func(ctx context.Context, task *peonify.Task) error {
			started <- task.ID
			<-finish // ignores ctx: grace lets it finish
			return nil
		})}, memstream.Config{})
	for i := range n {
		h.enqueue(&peonify.Task{ID: fmt.Sprint("s", i), Type: "work"})
	}
	h.start()
	running := []string{<-started, <-started}
	// Wait until the local queue has refilled, so there are unstarted
	// claims to hand back. With both workers stuck it holds at least one
	// task per worker (see TestQueueHoldsWhatStartsWithinTheLease).
	for h.p.Stats().QueueDepth < 2 {
		time.Sleep(time.Millisecond)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- h.stop() }()
	released := h.waitKind(peonify.EventReleased, 2)
	close(finish)
	if err := <-stopped; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	for _, id := range running {
		if _, err := h.ms.Get(context.Background(), id); !errors.Is(err, peonify.ErrNotFound) {
			t.Errorf("running task %s was not acked during the grace period (Get: %v)", id, err)
		}
	}
	for _, e := range released {
		ti := h.info(e.Task.ID)
		if ti.State != peonify.StatePending || ti.Attempts != 0 {
			t.Errorf("released task %s is %s with %d attempts, want pending with 0", e.Task.ID, ti.State, ti.Attempts)
		}
	}
	counts, _ := h.ms.Counts(context.Background())
	if counts[peonify.StatePending] != n-2 || counts[peonify.StateRunning] != 0 {
		t.Errorf("after shutdown: %v, want %d pending and none running: nothing lost, nothing left leased", counts, n-2)
	}
}

func TestShutdownGraceCancelsAndReleases(t *testing.T) {
	causes := make(chan error, 1)
	h := newHarness(t, peonify.Config{ShutdownGrace: 50 * time.Millisecond}, peonify.TaskList{
		"forever": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return ctx.Err()
		})}, memstream.Config{})
	h.enqueue(&peonify.Task{ID: "g1", Type: "forever"})
	h.start()
	for h.p.Stats().Started == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if c := <-causes; !errors.Is(c, peonify.ErrShutdown) {
		t.Errorf("cause = %v, want ErrShutdown", c)
	}
	if ti := h.info("g1"); ti.State != peonify.StatePending || ti.Attempts != 0 {
		t.Errorf("interrupted task is %s with %d attempts, want pending, attempt not counted", ti.State, ti.Attempts)
	}
}

func TestShutdownGivesUpOnHandlerIgnoringContext(t *testing.T) {
	unblock := make(chan struct{})
	h := newHarness(t, peonify.Config{ShutdownGrace: 20 * time.Millisecond}, peonify.TaskList{
		"stuck": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { <-unblock; return nil }),
	}, memstream.Config{})
	h.enqueue(&peonify.Task{ID: "stuck1", Type: "stuck"})
	h.start()
	for h.p.Stats().Started == 0 {
		time.Sleep(time.Millisecond)
	}
	err := h.stop()
	close(unblock)
	if err == nil || !strings.Contains(err.Error(), "stuck/stuck1") {
		t.Fatalf("Run = %v, want an error naming the stuck task", err)
	}
	if ti := h.info("stuck1"); ti.State != peonify.StatePending {
		t.Errorf("abandoned task is %s, want released to pending", ti.State)
	}
}

func TestMiddlewareOrder(t *testing.T) {
	var mu sync.Mutex
	var trail []string
	mw := func(name string) peonify.Middleware {
		return func(next peonify.Handler) peonify.Handler {
			return peonify.HandlerFunc(func(ctx context.Context, task *peonify.Task) error {
				mu.Lock()
				trail = append(trail, name)
				mu.Unlock()
				return next.Execute(ctx, task)
			})
		}
	}
	h := newHarness(t, peonify.Config{Middleware: []peonify.Middleware{mw("outer"), mw("inner")}},
		peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
			mu.Lock()
			trail = append(trail, "handler")
			mu.Unlock()
			return nil
		})}, memstream.Config{})
	h.enqueue(&peonify.Task{Type: "t"})
	h.start()
	h.waitKind(peonify.EventSucceeded, 1)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(trail) != "[outer inner handler]" {
		t.Errorf("order = %v", trail)
	}
}

func TestWakePicksUpAtOnce(t *testing.T) {
	h := newHarness(t, peonify.Config{PollInterval: time.Minute, MinPollInterval: time.Minute},
		peonify.TaskList{"t": peonify.HandlerFunc(ok)}, memstream.Config{})
	h.start()
	// Let the first (empty) poll happen, so the processor is idle for a minute.
	for h.p.Stats().Streams[0].Polls == 0 {
		time.Sleep(time.Millisecond)
	}
	h.enqueue(&peonify.Task{Type: "t"})
	if e := h.next(); e.Kind != peonify.EventSucceeded {
		t.Fatalf("event %s", e.Kind)
	}
}

// crashLooper is a memstream whose deliveries claim that many earlier
// attempts never finished, as after a task crashed its process each time.
type crashLooper struct{ *memstream.Stream }

func (c crashLooper) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	ds, err := c.Stream.Poll(ctx, limit)
	for i := range ds {
		t := *ds[i].Task
		t.Attempt = 4
		ds[i].Task = &t
	}
	return ds, err
}

func TestTaskPastMaxAttemptsIsDeadWithoutRunning(t *testing.T) {
	ms := memstream.New(memstream.Config{})
	_ = ms.Enqueue(context.Background(), &peonify.Task{ID: "poison", Type: "crash", MaxAttempts: 3})
	var ran atomic.Bool
	events := make(chan peonify.Event, 1)
	p, _ := peonify.New(peonify.Config{Logger: quiet, OnEvent: func(e peonify.Event) { events <- e }})
	_ = p.AddTaskList(peonify.TaskList{"crash": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		ran.Store(true)
		return nil
	})})
	_ = p.AddStream(crashLooper{ms})
	t.Cleanup(func() { _ = ms.Close(context.Background()) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	e := <-events
	cancel()
	<-done
	if e.Kind != peonify.EventDead || !strings.Contains(e.Err.Error(), "out of attempts (4 of 3)") {
		t.Errorf("event %s %v, want dead, out of attempts", e.Kind, e.Err)
	}
	if ran.Load() {
		t.Error("the handler ran an attempt past the limit")
	}
}

func TestIntakeRunsWithProcessorAndStopsFirst(t *testing.T) {
	ms := memstream.New(memstream.Config{})
	events := make(chan peonify.Event, 10)
	p, _ := peonify.New(peonify.Config{Logger: quiet, OnEvent: func(e peonify.Event) { events <- e }})
	_ = p.AddTaskList(peonify.TaskList{"pushed": peonify.HandlerFunc(ok)})
	_ = p.AddStream(ms)
	intakeStopped := make(chan struct{})
	_ = p.AddIntake(peonify.IntakeFunc(func(ctx context.Context) error {
		// A push source: accept one task, store it durably, then serve until stopped.
		if err := ms.Enqueue(ctx, &peonify.Task{ID: "pushed-1", Type: "pushed"}); err != nil {
			return err
		}
		<-ctx.Done()
		close(intakeStopped)
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	if e := <-events; e.Kind != peonify.EventSucceeded || e.Task.ID != "pushed-1" {
		t.Fatalf("event %s for %s, want the pushed task to succeed", e.Kind, e.Task.ID)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-intakeStopped:
	default:
		t.Fatal("Run returned before its intake stopped")
	}
}

func TestFailedIntakeEndsRun(t *testing.T) {
	p, _ := peonify.New(peonify.Config{Logger: quiet})
	_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(ok)})
	_ = p.AddStream(memstream.New(memstream.Config{}))
	_ = p.AddIntake(peonify.IntakeFunc(func(context.Context) error { return errors.New("listen tcp :80: address in use") }))
	err := p.Run(context.Background()) // ends without ctx being cancelled
	if err == nil || !strings.Contains(err.Error(), "address in use") {
		t.Fatalf("Run = %v, want the intake's error", err)
	}
	if err := p.AddIntake(nil); err == nil {
		t.Error("AddIntake(nil) accepted")
	}
}
