package sqlitestream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// runChain runs a chain of n steps on an idle processor: each step reads
// its parent's result and adds one. It returns how long each step took,
// from the end of the one before to its own end.
func runChain(t testing.TB, s *sqlitestream.Stream, n int) []time.Duration {
	t.Helper()
	ctx := context.Background()
	var (
		mu   sync.Mutex
		ends []time.Time
	)
	p := streamtest.Processor(t, peonify.Config{Logger: slog.New(slog.DiscardHandler)}, s, peonify.TaskList{
		"step": peonify.HandlerFunc(func(ctx context.Context, task *peonify.Task) error {
			res, err := peonify.ParentResults(ctx)
			if err != nil {
				return err
			}
			v := 0
			for _, r := range res {
				if err := json.Unmarshal(r, &v); err != nil {
					return err
				}
			}
			b, _ := json.Marshal(v + 1)
			mu.Lock()
			ends = append(ends, time.Now())
			mu.Unlock()
			return peonify.SetResult(ctx, b)
		}),
	})
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	time.Sleep(50 * time.Millisecond) // the processor is idle
	w := &peonify.Workflow{}
	var last *peonify.Task
	for range n {
		if last == nil {
			last = w.Add(&peonify.Task{Type: "step"})
		} else {
			last = w.Add(&peonify.Task{Type: "step"}, last)
		}
	}
	start := time.Now()
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info, err := s.Wait(wctx, last.ID)
	if err != nil || info.State != peonify.StateDone || string(info.Result) != fmt.Sprint(n) {
		t.Fatalf("Wait for the last step = %+v (result %q), %v; want done with result %d", info.State, info.Result, err, n)
	}
	mu.Lock()
	defer mu.Unlock()
	steps := make([]time.Duration, len(ends))
	prev := start
	for i, e := range ends {
		steps[i], prev = e.Sub(prev), e
	}
	return steps
}

// TestWorkflowChainProcessor runs a 10-step chain through a processor,
// each step reading its parent's result: the release at each ack wakes
// the processor at once, so a step takes about a commit and the
// processor's ack batching (2 ms), not a poll interval.
func TestWorkflowChainProcessor(t *testing.T) {
	s, err := sqlitestream.Open(filepath.Join(t.TempDir(), "tasks.db"), sqlitestream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	steps := runChain(t, s, 10)
	sorted := slices.Clone(steps)
	slices.Sort(sorted)
	p50 := sorted[len(sorted)/2]
	t.Logf("10-step chain: p50 %v per step, steps %v", p50, steps)
	// A step that waited for a poll interval (the processor's idle poll
	// is 1s by default) was not woken by its release.
	if p50 > 200*time.Millisecond {
		t.Fatalf("p50 per step = %v: the release does not wake the processor", p50)
	}
}

// BenchmarkWorkflowChain measures the latency of a step of a 10-step chain
// on an idle processor (ns/op is per step).
func BenchmarkWorkflowChain(b *testing.B) {
	var all []time.Duration
	for range b.N {
		s, err := sqlitestream.Open(filepath.Join(b.TempDir(), "tasks.db"), sqlitestream.Config{})
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, runChain(b, s, 10)...)
	}
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms/step")
}

// BenchmarkWorkflowFanOut compares a workflow of one root, 10,000
// children and one fan-in task, with results, against 10,000 plain tasks,
// through a processor: tasks/s of each and their ratio.
func BenchmarkWorkflowFanOut(b *testing.B) {
	const n = 10000
	var plain, wf time.Duration
	for range b.N {
		plain += drainPlain(b, n)
		wf += drainFanOut(b, n)
	}
	b.ReportMetric(float64(n*b.N)/plain.Seconds(), "plain-tasks/s")
	b.ReportMetric(float64((n+2)*b.N)/wf.Seconds(), "workflow-tasks/s")
	b.ReportMetric(plain.Seconds()/wf.Seconds()*float64(n+2)/n, "ratio")
}

func drainPlain(b *testing.B, n int) time.Duration {
	s, err := sqlitestream.Open(filepath.Join(b.TempDir(), "tasks.db"), sqlitestream.Config{})
	if err != nil {
		b.Fatal(err)
	}
	tasks := make([]*peonify.Task, n)
	for i := range tasks {
		tasks[i] = &peonify.Task{Type: "child"}
	}
	done := make(chan struct{})
	var mu sync.Mutex
	left := n
	tl := peonify.TaskList{"child": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		mu.Lock()
		if left--; left == 0 {
			close(done)
		}
		mu.Unlock()
		return nil
	})}
	return runUntil(b, s, tl, done, func() {
		if err := s.Enqueue(context.Background(), tasks...); err != nil {
			b.Fatal(err)
		}
	})
}

func drainFanOut(b *testing.B, n int) time.Duration {
	s, err := sqlitestream.Open(filepath.Join(b.TempDir(), "tasks.db"), sqlitestream.Config{})
	if err != nil {
		b.Fatal(err)
	}
	w := &peonify.Workflow{}
	root := w.Add(&peonify.Task{Type: "root"})
	var children []*peonify.Task
	for range n {
		children = append(children, w.Add(&peonify.Task{Type: "child"}, root))
	}
	w.Add(&peonify.Task{Type: "sink"}, children...)
	done := make(chan struct{})
	tl := peonify.TaskList{
		"root":  peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error { return peonify.SetResult(ctx, []byte("1")) }),
		"child": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error { return peonify.SetResult(ctx, []byte("2")) }),
		"sink": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			close(done)
			return nil
		}),
	}
	return runUntil(b, s, tl, done, func() {
		if err := s.EnqueueWorkflow(context.Background(), w); err != nil {
			b.Fatal(err)
		}
	})
}

// runUntil runs a processor on s, calls enqueue, and returns how long
// until done is closed, from the enqueue on.
func runUntil(b *testing.B, s *sqlitestream.Stream, tl peonify.TaskList, done chan struct{}, enqueue func()) time.Duration {
	p := streamtest.Processor(b, peonify.Config{Logger: slog.New(slog.DiscardHandler)}, s, tl)
	ctx, stop := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	enqueue()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatal("not done within 5 minutes")
	}
	took := time.Since(start)
	stop()
	if err := <-runErr; err != nil {
		b.Fatal(err)
	}
	return took
}
