package peonify_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// recorder is a memstream that records what the processor gives a
// Tracker: the results it acks with and the progress it writes. Its
// Extend reports the task cancelled once cancel is set.
type recorder struct {
	*memstream.Stream
	mu       sync.Mutex
	results  map[string][]byte
	progress []peonify.Progress
	cancel   bool
}

func newRecorder(lease time.Duration) *recorder {
	return &recorder{Stream: memstream.New(memstream.Config{Lease: lease}), results: map[string][]byte{}}
}

func (r *recorder) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	r.mu.Lock()
	for _, d := range ds {
		r.results[d.Task.ID] = d.Result
	}
	r.mu.Unlock()
	return r.Stream.Ack(ctx, ds...)
}

func (r *recorder) Extend(ctx context.Context, d peonify.Delivery, lease time.Duration) (peonify.Delivery, error) {
	r.mu.Lock()
	cancel := r.cancel
	r.mu.Unlock()
	if cancel {
		return peonify.Delivery{}, peonify.ErrCancelled
	}
	return r.Stream.Extend(ctx, d, lease)
}

func (r *recorder) Results(ctx context.Context, ids ...string) (map[string][]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]byte{}
	for _, id := range ids {
		if b, ok := r.results[id]; ok && b != nil {
			out[id] = b
		}
	}
	return out, nil
}

func (r *recorder) SetProgress(_ context.Context, _ peonify.Delivery, p peonify.Progress) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress = append(r.progress, p)
	return nil
}

func (r *recorder) Cancel(context.Context, ...string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancel = true
	return 1, nil
}

func (r *recorder) Wait(context.Context, string) (peonify.TaskInfo, error) {
	return peonify.TaskInfo{}, errors.ErrUnsupported
}

func (r *recorder) Close(context.Context) error { return nil }

// runRecorder runs a processor over r with tl until stop is called.
func runRecorder(t *testing.T, r *recorder, tl peonify.TaskList) (events chan peonify.Event, stop func()) {
	t.Helper()
	events = make(chan peonify.Event, 100)
	p, err := peonify.New(peonify.Config{Logger: quiet, OnEvent: func(e peonify.Event) { events <- e }})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddTaskList(tl); err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return events, func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func nextEvent(t *testing.T, events chan peonify.Event) peonify.Event {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no task event within 10s")
		return peonify.Event{}
	}
}

func TestResultIsAckedWithTheDelivery(t *testing.T) {
	r := newRecorder(0)
	type sum struct{ A, B int }
	events, stop := runRecorder(t, r, peonify.TaskList{
		"add": peonify.JSONResult(func(_ context.Context, s sum) (int, error) { return s.A + s.B, nil }),
		"raw": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			if err := peonify.SetResult(ctx, []byte("first")); err != nil {
				return err
			}
			return peonify.SetResult(ctx, []byte("second"))
		}),
		"none": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil }),
	})
	defer stop()
	_ = r.Enqueue(context.Background(),
		&peonify.Task{ID: "add", Type: "add", Payload: []byte(`{"A":2,"B":3}`)},
		&peonify.Task{ID: "raw", Type: "raw"},
		&peonify.Task{ID: "none", Type: "none"})
	for range 3 {
		if e := nextEvent(t, events); e.Kind != peonify.EventSucceeded {
			t.Fatalf("event %s for %s: %v", e.Kind, e.Task.ID, e.Err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.results)
		add, raw, none := string(r.results["add"]), string(r.results["raw"]), r.results["none"]
		r.mu.Unlock()
		if n == 3 {
			if add != "5" || raw != "second" || none != nil {
				t.Fatalf("acked results add=%q raw=%q none=%q; want 5, the last SetResult, and nil", add, raw, none)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 tasks acked", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestResultTooLargeIsDead(t *testing.T) {
	r := newRecorder(0)
	events, stop := runRecorder(t, r, peonify.TaskList{
		"big": peonify.JSONResult(func(context.Context, struct{}) (string, error) {
			return strings.Repeat("x", peonify.MaxResultLen), nil // two quotes more than the limit
		}),
	})
	defer stop()
	_ = r.Enqueue(context.Background(), &peonify.Task{ID: "big", Type: "big"})
	e := nextEvent(t, events)
	if e.Kind != peonify.EventDead || !strings.Contains(e.Err.Error(), "MaxResultLen") {
		t.Fatalf("event %s (%v); want dead, naming MaxResultLen", e.Kind, e.Err)
	}
}

// plain hides every optional interface of the stream it holds but Enqueuer.
type plain struct {
	peonify.Stream
	peonify.Enqueuer
}

func TestResultOnStreamWithoutTracker(t *testing.T) {
	ms := memstream.New(memstream.Config{})
	s := plain{ms, ms}
	errs := make(chan error, 3)
	events := make(chan peonify.Event, 1)
	p, _ := peonify.New(peonify.Config{Logger: quiet, OnEvent: func(e peonify.Event) { events <- e }})
	_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
		errs <- peonify.SetResult(ctx, []byte("x"))
		errs <- peonify.ReportProgress(ctx, 0.5, "half")
		errs <- peonify.Spawn(ctx, &peonify.Task{Type: "t"})
		return nil
	})})
	if err := p.AddStream(s); err != nil {
		t.Fatal(err)
	}
	_ = s.Enqueue(context.Background(), &peonify.Task{Type: "t"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for range 3 {
		if err := <-errs; !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("err = %v, want one wrapping errors.ErrUnsupported", err)
		}
	}
	if e := nextEvent(t, events); e.Kind != peonify.EventSucceeded {
		t.Errorf("event %s, want succeeded", e.Kind)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestHandlerFunctionsNeedATaskContext(t *testing.T) {
	ctx := context.Background()
	if err := peonify.SetResult(ctx, nil); err == nil {
		t.Error("SetResult outside a task: nil error")
	}
	if err := peonify.ReportProgress(ctx, 1, ""); err == nil {
		t.Error("ReportProgress outside a task: nil error")
	}
	if _, err := peonify.ParentResults(ctx); err == nil {
		t.Error("ParentResults outside a task: nil error")
	}
	if err := peonify.Spawn(ctx); err == nil {
		t.Error("Spawn outside a task: nil error")
	}
}

func TestProgressIsThrottled(t *testing.T) {
	r := newRecorder(0)
	release := make(chan struct{})
	reported := make(chan struct{})
	events, stop := runRecorder(t, r, peonify.TaskList{"p": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
		for i := range 1000 {
			if err := peonify.ReportProgress(ctx, float64(i+1)/1000, "step"); err != nil {
				return err
			}
		}
		if err := peonify.ReportProgress(ctx, 7, strings.Repeat("é", 200)); err != nil { // clamped, cut
			return err
		}
		close(reported)
		<-release
		return nil
	})})
	defer stop()
	_ = r.Enqueue(context.Background(), &peonify.Task{ID: "p", Type: "p"})
	<-reported
	// The first report is written at once, the latest one when the
	// interval since that write ends; nothing in between.
	time.Sleep(peonify.ProgressInterval + 300*time.Millisecond)
	r.mu.Lock()
	got := append([]peonify.Progress(nil), r.progress...)
	r.mu.Unlock()
	close(release)
	if e := nextEvent(t, events); e.Kind != peonify.EventSucceeded {
		t.Fatalf("event %s: %v", e.Kind, e.Err)
	}
	// The write that starts at once may see the last report already.
	if len(got) < 1 || len(got) > 2 {
		t.Fatalf("%d progress writes for 1001 reports in %s; want 1 or 2 (one at once, then the latest)", len(got), peonify.ProgressInterval)
	}
	last := got[len(got)-1]
	if last.Fraction != 1 || len(last.Message) > peonify.MaxProgressMessageLen || !strings.HasPrefix(last.Message, "é") {
		t.Errorf("last progress = %v %q; want fraction clamped to 1 and the message cut to %d bytes", last.Fraction, last.Message, peonify.MaxProgressMessageLen)
	}
	if len(got) == 2 && got[0].Message != "step" {
		t.Errorf("first write is %q; want one of the reports in the loop, written at once", got[0].Message)
	}
}

func TestCancelledTaskStopsWithinAThirdOfItsLease(t *testing.T) {
	const lease = 600 * time.Millisecond
	r := newRecorder(lease)
	causes := make(chan error, 1)
	started := make(chan time.Time, 1)
	events, stop := runRecorder(t, r, peonify.TaskList{"long": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
		started <- time.Now()
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	})})
	defer stop()
	_ = r.Enqueue(context.Background(), &peonify.Task{ID: "c", Type: "long"})
	<-started
	at := time.Now()
	_, _ = r.Cancel(context.Background(), "c")
	cause := <-causes
	if took := time.Since(at); took > lease/3+200*time.Millisecond {
		t.Errorf("the task's context ended %s after the cancel; want within a third of the %s lease", took, lease)
	}
	if !errors.Is(cause, peonify.ErrCancelled) {
		t.Errorf("cause = %v, want ErrCancelled", cause)
	}
	if e := nextEvent(t, events); e.Kind != peonify.EventCancelled {
		t.Errorf("event %s, want cancelled", e.Kind)
	}
	time.Sleep(50 * time.Millisecond)
	r.mu.Lock()
	_, acked := r.results["c"]
	r.mu.Unlock()
	if acked {
		t.Error("the cancelled task was acked")
	}
}

func TestParentResultsAndSpawnNeedAWorkflow(t *testing.T) {
	r := newRecorder(0)
	errs := make(chan error, 2)
	results := make(chan map[string][]byte, 1)
	events, stop := runRecorder(t, r, peonify.TaskList{"t": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
		m, err := peonify.ParentResults(ctx)
		errs <- err
		results <- m
		return nil
	})})
	defer stop()
	_ = r.Enqueue(context.Background(), &peonify.Task{Type: "t"})
	if err := <-errs; err != nil {
		t.Fatalf("ParentResults of a task without parents: %v", err)
	}
	if m := <-results; m == nil || len(m) != 0 {
		t.Errorf("ParentResults = %v, want an empty map", m)
	}
	nextEvent(t, events)
}

// A result too large to store fails the task for good even when the
// handler ignores SetResult's error and returns nil, or returns that error;
// a later SetResult of a result that fits replaces it.
func TestSetResultTooLargeFailsTheTask(t *testing.T) {
	r := newRecorder(0)
	big := make([]byte, peonify.MaxResultLen+1)
	events, stop := runRecorder(t, r, peonify.TaskList{
		"ignored": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			if err := peonify.SetResult(ctx, big); err == nil || !strings.Contains(err.Error(), "MaxResultLen") {
				t.Errorf("SetResult of %d bytes = %v, want an error naming MaxResultLen", len(big), err)
			}
			return nil
		}),
		"returned": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			return peonify.SetResult(ctx, big)
		}),
		"replaced": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			_ = peonify.SetResult(ctx, big)
			return peonify.SetResult(ctx, []byte("fits"))
		}),
	})
	defer stop()
	_ = r.Enqueue(context.Background(),
		&peonify.Task{ID: "ignored", Type: "ignored", MaxAttempts: 5},
		&peonify.Task{ID: "returned", Type: "returned", MaxAttempts: 5},
		&peonify.Task{ID: "replaced", Type: "replaced"})
	for range 3 {
		e := nextEvent(t, events)
		switch e.Task.ID {
		case "replaced":
			if e.Kind != peonify.EventSucceeded {
				t.Errorf("task replaced: event %s (%v), want succeeded with the result that fits", e.Kind, e.Err)
			}
		default:
			if e.Kind != peonify.EventDead || e.Task.Attempt != 1 || !strings.Contains(e.Err.Error(), "MaxResultLen") {
				t.Errorf("task %s: event %s at attempt %d (%v); want dead at the first attempt, naming MaxResultLen", e.Task.ID, e.Kind, e.Task.Attempt, e.Err)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		res, ok := r.results["replaced"]
		_, ignored := r.results["ignored"]
		r.mu.Unlock()
		if ignored {
			t.Fatal("task ignored was acked after its result was too large")
		}
		if ok {
			if string(res) != "fits" {
				t.Errorf("task replaced acked with result %q, want %q", res, "fits")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("task replaced was not acked")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
