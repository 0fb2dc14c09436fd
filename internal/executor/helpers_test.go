package executor

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

func TestMain(m *testing.M) {
	// The test binary is the supervisor of the commands of Exec executors
	// with Supervise, as peonify is in peonify run.
	if code, ok := SupervisorMain(os.Args[1:]); ok {
		os.Exit(code)
	}
	if raceEnabled {
		// A race-enabled program, each supervisor included, sleeps a second
		// at exit by default.
		os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	}
	goleak.VerifyTestMain(m)
}

// outcome runs task through a real processor with h as its handler and
// returns the first outcome event (succeeded, retried or dead), so that
// tests see exactly what the processor makes of the executor's error.
func outcome(t *testing.T, h peonify.Handler, task *peonify.Task) peonify.Event {
	t.Helper()
	e, _ := run(t, h, task, false)
	return e
}

// untracked is a stream that keeps no results: it shows its processor
// only the Stream methods of the stream it holds (no Unwrap).
type untracked struct{ peonify.Stream }

// run is outcome on a store that keeps results, memstream, unless
// untrack: it returns the first outcome event, and the result the store
// kept for the task once it finished (nil if none was kept).
func run(t *testing.T, h peonify.Handler, task *peonify.Task, untrack bool) (peonify.Event, []byte) {
	t.Helper()
	events := make(chan peonify.Event, 16)
	p, err := peonify.New(peonify.Config{
		Workers: 1,
		Retry:   peonify.RetryPolicy{MinBackoff: time.Hour, MaxBackoff: time.Hour},
		Logger:  slog.New(slog.DiscardHandler),
		OnEvent: func(e peonify.Event) { events <- e },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddTaskList(peonify.TaskList{task.Type: h}); err != nil {
		t.Fatal(err)
	}
	s := memstream.New(memstream.Config{})
	if err := s.Enqueue(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	var stream peonify.Stream = s
	if untrack {
		stream = untracked{s}
	}
	if err := p.AddStream(stream); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var e peonify.Event
	select {
	case e = <-events:
	case <-time.After(20 * time.Second):
		t.Fatal("no outcome within 20s")
	}
	if e.Kind != peonify.EventSucceeded {
		return e, nil
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	ti, err := s.Wait(wctx, task.ID)
	switch {
	case errors.Is(err, peonify.ErrNotFound):
		return e, nil // done without a result: not kept
	case err != nil:
		t.Fatalf("waiting for task %s: %v", task.ID, err)
	}
	return e, ti.Result
}
