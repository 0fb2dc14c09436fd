package peonifytest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/peonify/peonify"
)

// cancelSlack is how much later than a third of the lease a running
// task's handler may see its cancellation: the extension that reports it,
// and the scheduling of a loaded machine.
const cancelSlack = 500 * time.Millisecond

// wantCancelled checks that task id is cancelled with a reason.
func (h *harness) wantCancelled(id, when string) peonify.TaskInfo {
	h.t.Helper()
	info := h.wantStateNow(id, peonify.StateCancelled, when)
	if !lowerContains(info.LastError, "cancel") {
		h.t.Errorf("%s: Inspector.Get(%s).LastError = %q, want a reason saying it was cancelled", when, id, info.LastError)
	}
	return info
}

// cancel calls Tracker.Cancel and checks the count it returns.
func (h *harness) cancel(tr peonify.Tracker, want int, ids ...string) {
	h.t.Helper()
	n, err := tr.Cancel(h.ctx(), ids...)
	if err != nil || n != want {
		h.t.Fatalf("Tracker.Cancel of %d IDs = %d, %v; want %d, nil", len(ids), n, err, want)
	}
}

// testCancelPending checks that Cancel moves pending and scheduled tasks
// to StateCancelled, from which they are never delivered, counts only
// them, and skips finished (done, dead, cancelled) and unknown IDs.
func testCancelPending(h *harness) {
	tr := h.tracker()
	pending, scheduled, done, dead := h.newTask(), h.newTask(), h.newTask(), h.newTask()
	h.enqueue(done, dead)
	for _, d := range h.collect(2, 10) {
		if d.Task.ID == done.ID {
			h.ackResult(d, []byte(`"kept"`))
		} else {
			h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "peonifytest: dead"})
		}
	}
	runAt := time.Now().Add(4 * h.f.Settle)
	ids := []string{pending.ID, done.ID, dead.ID, peonify.NewID()}
	want := 1
	h.enqueue(pending)
	if !h.f.NoScheduling {
		scheduled.RunAt = runAt
		h.enqueue(scheduled)
		ids = append(ids, scheduled.ID)
		want++
	}
	h.cancel(tr, want, ids...)
	h.wantCancelled(pending.ID, "a pending task after Cancel")
	if !h.f.NoScheduling {
		h.wantCancelled(scheduled.ID, "a scheduled task after Cancel")
	}
	h.wantStateNow(done.ID, peonify.StateDone, "a done task after Cancel")
	h.wantStateNow(dead.ID, peonify.StateDead, "a dead task after Cancel")
	h.wantCount(peonify.StateCancelled, want)
	until := time.Now().Add(h.f.Settle)
	if !h.f.NoScheduling && runAt.After(until) {
		until = runAt.Add(h.f.Settle)
	}
	h.nothingUntil(until, "cancelled tasks are never delivered")
	h.cancel(tr, 0, pending.ID)
	if info, err := tr.Wait(h.ctx(), pending.ID); err != nil || info.State != peonify.StateCancelled {
		h.t.Errorf("Tracker.Wait(%s) of a cancelled task = state %q, %v; want %q at once", pending.ID, info.State, err, peonify.StateCancelled)
	}
	if n, err := h.ins.Purge(h.ctx(), peonify.StateCancelled); err != nil || n != want {
		h.t.Errorf("Inspector.Purge(cancelled) = %d, %v; want %d, nil", n, err, want)
	}
	h.wantNotFound("after Purge(cancelled)", pending.ID)
}

// testCancelRunning checks Cancel of a running task: it is cancelled at
// once; its claim's Extend and SetProgress fail with ErrCancelled; its
// Ack and Nack are stale and change nothing; it is never delivered again,
// not even when its lease ends.
func testCancelRunning(h *harness) {
	tr := h.tracker()
	tk := h.newTask()
	h.enqueue(tk)
	d := h.next()
	h.cancel(tr, 1, tk.ID)
	h.wantCancelled(tk.ID, "a running task after Cancel")
	h.wantCount(peonify.StateRunning, 0)
	if h.ext != nil && h.f.Lease > 0 {
		if _, err := h.ext.Extend(h.ctx(), d, h.f.Lease); !errors.Is(err, peonify.ErrCancelled) {
			h.failf("Extend of a cancelled task's claim returned %v, want an error wrapping peonify.ErrCancelled (the processor then cancels the handler)", err)
		}
	}
	if err := tr.SetProgress(h.ctx(), d, peonify.Progress{Fraction: 0.5, UpdatedAt: time.Now()}); !errors.Is(err, peonify.ErrCancelled) {
		h.failf("SetProgress of a cancelled task's claim returned %v, want an error wrapping peonify.ErrCancelled", err)
	}
	acked := d
	acked.Result = []byte(`"too late"`)
	h.checkStaleResult("Ack of a cancelled task", h.s.Ack(h.ctx(), acked))
	info := h.wantCancelled(tk.ID, "a cancelled task after its claim's Ack")
	if info.Result != nil {
		h.t.Errorf("the Ack of a cancelled task's claim stored its result %q: it must be ignored", info.Result)
	}
	h.checkStaleResult("Nack of a cancelled task", h.s.Nack(h.ctx(), d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Reason: "peonifytest: failed"}))
	h.wantCancelled(tk.ID, "a cancelled task after its claim's Nack")
	h.nothingUntil(h.afterLease(d.Deadline), "a cancelled task is never delivered again, even once its lease ends")
	h.wantCancelled(tk.ID, "a cancelled task after its lease ended")
}

// testCancelRunningProcessor runs a real peonify.Processor whose handler
// blocks until its context ends, cancels the running task, and checks that
// the handler's context ends with cause peonify.ErrCancelled within a
// third of the lease (plus slack), and that the task stays cancelled and
// is not retried.
func testCancelRunningProcessor(h *harness) {
	tr := h.tracker()
	h.needLease()
	tk := h.newTask()
	var (
		mu      sync.Mutex
		runs    int
		started = make(chan struct{}, 10)
		ended   = make(chan error, 10)
	)
	stop := h.runProcessor(peonify.TaskList{tk.Type: peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
		mu.Lock()
		runs++
		mu.Unlock()
		started <- struct{}{}
		<-ctx.Done()
		ended <- context.Cause(ctx)
		return ctx.Err()
	})})
	defer stop()
	h.enqueue(tk)
	select {
	case <-started:
	case <-time.After(h.f.Timeout):
		h.t.Fatalf("the processor did not start task %s within %s", tk.ID, h.f.Timeout)
	}
	cancelledAt := time.Now()
	h.cancel(tr, 1, tk.ID)
	within := h.f.Lease/3 + cancelSlack
	select {
	case cause := <-ended:
		took := time.Since(cancelledAt)
		if !errors.Is(cause, peonify.ErrCancelled) {
			h.t.Errorf("the cancelled task's handler context ended with cause %v, want peonify.ErrCancelled: Extend of a cancelled task's claim returns an error wrapping it", cause)
		}
		if took > within {
			h.t.Errorf("the cancelled task's handler context ended %s after Cancel, want within a third of the %s lease plus %s", took.Round(time.Millisecond), h.f.Lease, cancelSlack)
		}
		h.t.Logf("the handler saw the cancellation %s after Cancel", took.Round(time.Millisecond))
	case <-time.After(h.f.Timeout):
		h.t.Fatalf("the cancelled task's handler context did not end within %s of Cancel", h.f.Timeout)
	}
	// The lease the processor held ends, and nothing runs the task again.
	h.pause(h.f.Lease + h.f.Settle)
	mu.Lock()
	n := runs
	mu.Unlock()
	if n != 1 {
		h.t.Errorf("the cancelled task ran %d times, want once: a cancelled task is never retried", n)
	}
	h.wantCancelled(tk.ID, "a task cancelled while the processor ran it")
	if c, err := h.ins.Counts(h.ctx()); err == nil && c[peonify.StateRunning]+c[peonify.StatePending]+c[peonify.StateScheduled] != 0 {
		h.t.Errorf("Inspector.Counts() = %v after the only task was cancelled, want no running, pending or scheduled task", c)
	}
}
