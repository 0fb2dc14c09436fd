package peonifytest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/peonify/peonify"
)

// testProcessor runs a real Processor over the stream: 200 tasks, every
// tenth failing its first attempt, are all processed; then Run drains and
// returns nil when its context is cancelled.
func testProcessor(h *harness) {
	const n = 200
	typ := "peonifytest.processor"
	tasks := h.newTasks(n)
	failFirst := make(map[string]bool)
	for i, tk := range tasks {
		tk.Type = typ
		if i%10 == 0 {
			failFirst[tk.ID] = true
		}
	}
	for chunk := range slices.Chunk(tasks, 100) {
		h.enqueue(chunk...)
	}

	var (
		mu      sync.Mutex
		done    = make(map[string]int) // task ID -> successful runs
		wrong   []string               // tasks that arrived damaged
		allDone = make(chan struct{})
	)
	want := make(map[string]*peonify.Task, n)
	for _, tk := range tasks {
		want[tk.ID] = tk
	}
	handler := peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
		mu.Lock()
		defer mu.Unlock()
		if w := want[t.ID]; w == nil || string(t.Payload) != string(w.Payload) {
			wrong = append(wrong, t.ID)
		}
		if failFirst[t.ID] && t.Attempt == 1 {
			return errors.New("peonifytest: first attempt fails")
		}
		done[t.ID]++
		if len(done) == n && done[t.ID] == 1 {
			close(allDone)
		}
		return nil
	})

	cfg := h.processorConfig()
	cfg.Retry = fastRetry
	p, err := peonify.New(cfg)
	if err != nil {
		h.t.Fatalf("peonify.New: %v", err)
	}
	if err := p.AddTaskList(peonify.TaskList{typ: handler}); err != nil {
		h.t.Fatalf("AddTaskList: %v", err)
	}
	if err := p.AddStream(h.s); err != nil {
		h.t.Fatalf("AddStream: %v", err)
	}

	h.runUntilDone(p, allDone, func() {
		mu.Lock()
		h.t.Errorf("the processor completed %d of %d tasks within %s", len(done), n, h.f.Timeout)
		mu.Unlock()
	})

	mu.Lock()
	defer mu.Unlock()
	for _, id := range wrong {
		h.t.Errorf("the handler received task %s, which was not enqueued or whose payload changed", id)
	}
	for _, tk := range tasks {
		if c := done[tk.ID]; c > 1 {
			h.t.Logf("task %s completed %d times; delivery is at-least-once, but with no crash or lost lease it should run once", tk.ID, c)
		}
	}
}

// runUntilDone runs p until allDone is closed, calling late if that takes
// longer than Features.Timeout, and fails the test if Run returns before
// its context ends. Then it cancels Run and checks that Run returns nil
// within Features.Timeout.
func (h *harness) runUntilDone(p *peonify.Processor, allDone <-chan struct{}, late func()) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(h.ctx())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()

	timer := time.NewTimer(h.f.Timeout)
	defer timer.Stop()
	select {
	case <-allDone:
	case err := <-runErr:
		h.t.Fatalf("Processor.Run returned %v before its context ended", err)
	case <-timer.C:
		late()
	}
	cancel()
	timer.Reset(h.f.Timeout)
	select {
	case err := <-runErr:
		if err != nil {
			h.t.Errorf("Processor.Run returned %v after its context was cancelled, want nil", err)
		}
	case <-timer.C:
		h.t.Fatalf("Processor.Run did not return within %s of its context being cancelled", h.f.Timeout)
	}
}
