package streamtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// Timeout bounds each call made with a Context: far above what a call to a
// server on loopback takes, so that only a hang reaches it.
const Timeout = 30 * time.Second

// Stream is a stream that tasks can be enqueued on, as every stream
// package's own is.
type Stream interface {
	peonify.Stream
	peonify.Enqueuer
}

// Counter is the part of peonify.Inspector that the harness reads.
type Counter interface {
	Counts(ctx context.Context) (map[peonify.State]int, error)
}

// Context returns a context that ends after Timeout or when the test
// ends, whichever comes first.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// Enqueue enqueues tasks on e, failing the test if that fails.
func Enqueue(t testing.TB, e peonify.Enqueuer, tasks ...*peonify.Task) {
	t.Helper()
	if err := e.Enqueue(Context(t), tasks...); err != nil {
		t.Fatal(err)
	}
}

// Tasks returns n tasks of type typ, each with the small JSON payload
// {"n":1}, for a test to enqueue.
func Tasks(n int, typ string) []*peonify.Task {
	tasks := make([]*peonify.Task, n)
	for i := range tasks {
		tasks[i] = &peonify.Task{Type: typ, Payload: []byte(`{"n":1}`)}
	}
	return tasks
}

// Backfill enqueues n tasks of type typ on e, in calls of 1000, the task
// with index i having the ID id(i), and returns the IDs in order.
func Backfill(t testing.TB, e peonify.Enqueuer, n int, typ string, id func(i int) string) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for lo := 0; lo < n; lo += 1000 {
		batch := make([]*peonify.Task, 0, 1000)
		for i := lo; i < min(lo+1000, n); i++ {
			batch = append(batch, &peonify.Task{ID: id(i), Type: typ})
			ids = append(ids, batch[len(batch)-1].ID)
		}
		Enqueue(t, e, batch...)
	}
	return ids
}

// Processor returns a processor with cfg that runs the handlers of tl on
// the tasks of s, failing the test if it cannot be set up.
func Processor(t testing.TB, cfg peonify.Config, s peonify.Stream, tl peonify.TaskList) *peonify.Processor {
	t.Helper()
	p, err := peonify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddTaskList(tl); err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(s); err != nil {
		t.Fatal(err)
	}
	return p
}

// Chain returns a workflow of n tasks of type typ, each a dependent of the
// one before.
func Chain(typ string, n int) *peonify.Workflow {
	w := &peonify.Workflow{}
	var prev *peonify.Task
	for range n {
		if prev == nil {
			prev = w.Add(&peonify.Task{Type: typ})
		} else {
			prev = w.Add(&peonify.Task{Type: typ}, prev)
		}
	}
	return w
}

// Poll polls s once for up to limit tasks, failing the test on an error.
func Poll(t testing.TB, s peonify.Stream, limit int) []peonify.Delivery {
	t.Helper()
	ds, err := s.Poll(Context(t), limit)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// PollUntil polls s until it delivers at least one task, failing the test
// if within passes first. It is for state that changes in the server on
// its own (a lease expiry, a scheduled time).
func PollUntil(t testing.TB, s peonify.Stream, limit int, within time.Duration) []peonify.Delivery {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if ds := Poll(t, s, limit); len(ds) > 0 {
			return ds
		}
		if time.Now().After(deadline) {
			t.Fatalf("no task delivered within %s", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// RandHex returns n random bytes in hex.
func RandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Name returns the test's name, cut to maxLen bytes, with every character
// but ASCII letters, digits, '-' and '_' replaced by '_', then '-' and 12
// random hex digits: a queue or stream name that no other test uses and
// that every server accepts.
func Name(t testing.TB, maxLen int) string {
	name := strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' {
			return r
		}
		return '_'
	}, t.Name())
	if len(name) > maxLen {
		name = name[:maxLen]
	}
	return name + "-" + RandHex(6)
}

// Logger returns a logger that writes warnings and errors to the test's
// output, where they show up next to the failure they explain.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// Run runs p in the background until the returned stop is called. stop
// ends Run's context, waits for Run to return and fails the test with
// Errorf if Run returned an error.
func Run(t testing.TB, p *peonify.Processor) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	return func() {
		t.Helper()
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run = %v", err)
		}
	}
}

// Register adds s to a new processor that logs to the test, failing the
// test if either step fails, and returns the processor.
func Register(t testing.TB, s peonify.Stream) *peonify.Processor {
	t.Helper()
	p, err := peonify.New(peonify.Config{Logger: Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(s); err != nil {
		t.Fatal(err)
	}
	return p
}

// CloseAtEnd closes s when the test ends, failing the test with Error if
// Close returns an error.
func CloseAtEnd(t testing.TB, s interface{ Close(context.Context) error }) {
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
}

// RunUntil runs p until done is closed or receives, then ends Run. It
// fails the test with Fatal, saying what, if that takes over 10s, and if
// Run returns an error.
func RunUntil(t testing.TB, p *peonify.Processor, done <-chan struct{}, what string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal(what)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// CloseOnRun adds to p a handler for tasks of type typ that closes the
// returned channel when it runs, failing the test if it cannot be added.
// A second run panics.
func CloseOnRun(t testing.TB, p *peonify.Processor, typ string) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	if err := p.AddTaskList(peonify.TaskList{typ: peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		close(done)
		return nil
	})}); err != nil {
		t.Fatal(err)
	}
	return done
}
