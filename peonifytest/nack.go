package peonifytest

import (
	"time"

	"github.com/peonify/peonify"
)

// nackDelay is the delay of the suite's delayed nacks and scheduled tasks.
const nackDelay = 400 * time.Millisecond

// testNackFailed checks that a failed task waits for its delay, then comes
// back as the next attempt with its last error.
func testNackFailed(h *harness) {
	tk := h.newTask()
	h.enqueue(tk)
	d := h.next()
	const reason = "peonifytest: transient failure"
	start := time.Now()
	h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: nackDelay, Reason: reason})
	if info, ok := h.wantState(tk.ID, peonify.StateScheduled, "during the delay of a failed Nack"); ok {
		if info.Attempts != 1 {
			h.t.Errorf("after one failed attempt, Inspector.Get(%s).Attempts = %d, want 1", tk.ID, info.Attempts)
		}
		if info.LastError != reason {
			h.t.Errorf("after a failed Nack, Inspector.Get(%s).LastError = %q, want the Nack's Reason %q", tk.ID, info.LastError, reason)
		}
	}
	d2 := h.nextAfter(start.Add(nackDelay-slack), "the task was nacked as failed with a delay of "+nackDelay.String())
	if d2.Task.ID != tk.ID {
		h.t.Fatalf("after the retry delay, Poll returned %s, want task %s", describe1(d2), tk.ID)
	}
	if d2.Task.Attempt != 2 {
		h.t.Errorf("a task retried after a failed attempt has Attempt %d, want 2", d2.Task.Attempt)
	}
	if !h.f.NoLastError && d2.Task.LastError != reason {
		h.t.Errorf("a task retried after a failed attempt has LastError %q, want the Nack's Reason %q "+
			"(set Features.NoLastError if the stream cannot keep it)", d2.Task.LastError, reason)
	}
	h.checkTask(d2.Task, tk)
	h.ack(d2)
}

// testNackReleased checks that a released task comes back without counting
// the attempt, at once or after the release's delay.
func testNackReleased(h *harness) {
	tk := h.newTask()
	h.enqueue(tk)
	d := h.next()
	h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeReleased})
	d = h.next()
	if d.Task.ID != tk.ID {
		h.t.Fatalf("after a release, Poll returned %s, want task %s", describe1(d), tk.ID)
	}
	if d.Task.Attempt != 1 {
		h.t.Errorf("a released task came back with Attempt %d, want 1: a release does not count as an attempt", d.Task.Attempt)
	}

	start := time.Now()
	h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeReleased, Delay: nackDelay})
	d = h.nextAfter(start.Add(nackDelay-slack), "the task was released with a delay of "+nackDelay.String())
	if d.Task.Attempt != 1 {
		h.t.Errorf("a task released twice came back with Attempt %d, want 1", d.Task.Attempt)
	}
	h.ack(d)
}

// testNackDead checks that a dead task is never delivered again.
func testNackDead(h *harness) {
	h.enqueue(h.newTask())
	d := h.next()
	h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "peonifytest: poison"})
	h.nothingUntil(h.afterLease(d.Deadline), "the task was nacked as dead")
}
