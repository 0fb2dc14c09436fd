package sqlitestream_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// TestProcessor runs a peonify.Processor on the stream: tasks that succeed,
// fail once and then succeed, and fail for good; then a graceful shutdown.
func TestProcessor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := sqlitestream.Open(path, sqlitestream.Config{Lease: 5 * time.Second, KeepDone: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 300
	var tasks []*peonify.Task
	for i := range n {
		typ := "ok"
		switch i % 10 {
		case 1:
			typ = "flaky"
		case 2:
			typ = "poison"
		}
		tasks = append(tasks, &peonify.Task{ID: fmt.Sprintf("t%03d", i), Type: typ})
	}
	if err := s.Enqueue(ctx, tasks...); err != nil {
		t.Fatal(err)
	}

	var (
		mu    sync.Mutex
		runs  = map[string]int{}
		ended atomic.Int64
	)
	allDone := make(chan struct{})
	count := func(t *peonify.Task) int {
		mu.Lock()
		defer mu.Unlock()
		runs[t.ID]++
		return runs[t.ID]
	}
	p := streamtest.Processor(t, peonify.Config{
		Logger:  slog.New(slog.DiscardHandler),
		Workers: 8,
		Retry:   peonify.RetryPolicy{MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond},
		OnEvent: func(e peonify.Event) {
			if e.Kind == peonify.EventSucceeded || e.Kind == peonify.EventDead {
				if ended.Add(1) == n {
					close(allDone)
				}
			}
		},
	}, s, peonify.TaskList{
		"ok": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error { count(t); return nil }),
		"flaky": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			if count(t) == 1 {
				return errors.New("first attempt fails")
			}
			return nil
		}),
		"poison": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			count(t)
			return peonify.SkipRetry(errors.New("cannot ever work"))
		}),
	})
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx) }()
	select {
	case <-allDone:
	case <-time.After(30 * time.Second):
		t.Fatalf("only %d of %d tasks finished within 30s", ended.Load(), n)
	}
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}

	// The processor closed the stream; reopen the file to inspect it.
	s, err = sqlitestream.Open(path, sqlitestream.Config{KeepDone: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts[peonify.StateDone] != n-n/10 || counts[peonify.StateDead] != n/10 ||
		counts[peonify.StatePending]+counts[peonify.StateScheduled]+counts[peonify.StateRunning] != 0 {
		t.Fatalf("counts after the run = %v, want %d done and %d dead", counts, n-n/10, n/10)
	}
	info, err := s.Get(ctx, "t002")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != peonify.StateDead || info.Attempts != 1 || info.LastError == "" {
		t.Errorf("poison task: %+v; want dead after 1 attempt with its error", info)
	}
	info, err = s.Get(ctx, "t001")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != peonify.StateDone || info.Attempts != 2 {
		t.Errorf("flaky task: %+v; want done after 2 attempts", info)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, r := range runs {
		if want := map[bool]int{true: 2, false: 1}[id[len(id)-1] == '1']; r != want {
			t.Errorf("task %s ran %d times, want %d", id, r, want)
		}
	}
}

// BenchmarkProcessor measures end-to-end throughput: a processor with
// no-op handlers and default settings drains tasks stored beforehand,
// claiming, running and acking them durably (see streamtest.Drain).
func BenchmarkProcessor(b *testing.B) {
	for _, sync := range []sqlitestream.Synchronous{sqlitestream.SynchronousFull, sqlitestream.SynchronousNormal} {
		b.Run("sync="+sync.String(), func(b *testing.B) { benchProcessor(b, sync) })
	}
}

func benchProcessor(b *testing.B, sync sqlitestream.Synchronous) {
	s, err := sqlitestream.Open(filepath.Join(b.TempDir(), "tasks.db"), sqlitestream.Config{Synchronous: sync})
	if err != nil {
		b.Fatal(err)
	}
	streamtest.Drain{}.Run(b, s) // the processor closes s
}
