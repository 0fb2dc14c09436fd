package peonifytest

import (
	"context"
	"errors"
	"time"

	"github.com/peonify/peonify"
)

// testAckRemoves checks that acked tasks, acked in one batch, are never
// delivered again and are gone from the Inspector's view.
func testAckRemoves(h *harness) {
	tasks := h.newTasks(3)
	h.enqueue(tasks...)
	ds := h.collect(len(tasks), len(tasks))
	h.ack(ds...)
	h.nothingUntil(h.afterLease(latestDeadline(ds)), "every task was acked, so none may be delivered again")
	for _, tk := range tasks {
		h.wantGone(tk.ID, "after Ack")
	}
	for _, st := range []peonify.State{peonify.StatePending, peonify.StateScheduled, peonify.StateRunning, peonify.StateDead} {
		h.wantCount(st, 0)
	}
}

// testAckIdempotent checks that acking twice, acking nothing, and nacking
// an acked delivery are harmless.
func testAckIdempotent(h *harness) {
	tk := h.newTask()
	h.enqueue(tk)
	d := h.next()
	h.ack(d)
	if err := h.s.Ack(h.ctx(), d); err != nil {
		h.t.Errorf("a second Ack of the same delivery returned %v: Ack must be idempotent", err)
	}
	if err := h.s.Ack(h.ctx()); err != nil {
		h.t.Errorf("Ack of no deliveries returned %v, want nil", err)
	}
	err := h.s.Nack(h.ctx(), d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Reason: "peonifytest: nack after ack"})
	h.checkStaleResult("Nack(failed) after Ack", err)
	err = h.s.Nack(h.ctx(), d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "peonifytest: nack after ack"})
	h.checkStaleResult("Nack(dead) after Ack", err)
	h.nothingUntil(h.afterLease(d.Deadline), "the task was acked; a later Nack must not bring it back")
	h.wantGone(tk.ID, "after Ack then Nack")
}

// testLeaseExpiry checks that a task whose lease ends without an ack comes
// back, not before the lease ends, as attempt 2.
func testLeaseExpiry(h *harness) {
	h.needLease()
	tk := h.newTask()
	h.enqueue(tk)
	d1 := h.next()
	d2 := h.reclaim(d1)
	h.checkTask(d2.Task, tk)
	h.ack(d2)
	h.nothingUntil(h.afterLease(d2.Deadline), "the task was acked")
}

// testExtendKeepsLease checks that a task extended the way the processor
// does it, at half its lease, stays leased past its original deadline and
// can then be acked.
func testExtendKeepsLease(h *harness) {
	h.needExtender()
	h.enqueue(h.newTask())
	d := h.next()
	cur := d
	for range 2 {
		h.leasedUntil(cur.Deadline.Add(-h.f.Lease/2), "the task is leased")
		before := time.Now()
		nd := h.extend(cur)
		if !nd.Deadline.After(cur.Deadline) {
			h.t.Fatalf("Extend at %s returned Deadline %s, not after the old one, %s",
				before.Format(time.StampMilli), nd.Deadline.Format(time.StampMilli), cur.Deadline.Format(time.StampMilli))
		}
		if tol := max(slack, h.f.Lease/4); nd.Deadline.Before(before.Add(h.f.Lease - tol)) {
			h.t.Errorf("Extend(lease=%s) returned Deadline %s after the call, want about the lease",
				h.f.Lease, nd.Deadline.Sub(before).Round(time.Millisecond))
		}
		cur = nd
	}
	h.leasedUntil(cur.Deadline.Add(-h.f.Lease/2),
		"the lease was extended past its original end, "+d.Deadline.Format(time.StampMilli))
	h.ack(cur)
	h.nothingUntil(h.afterLease(cur.Deadline), "the task was acked after its lease was extended")
}

// staleSetup enqueues a task, claims it, lets the lease end and claims it
// again; it returns the stale claim and the current one.
func (h *harness) staleSetup() (stale, current peonify.Delivery) {
	h.t.Helper()
	h.needLease()
	h.enqueue(h.newTask())
	stale = h.next()
	return stale, h.reclaim(stale)
}

// checkClaimHolds checks, after a stale Ack or Nack, that the current claim
// is untouched: nothing else is delivered, the Inspector shows the task
// running, and the claim can be extended. It returns the current claim.
func (h *harness) checkClaimHolds(current peonify.Delivery, after string) peonify.Delivery {
	h.t.Helper()
	until := minTime(time.Now().Add(h.f.Settle), current.Deadline.Add(-h.f.Lease/4))
	h.leasedUntil(until, "the task is still leased by its new claim after "+after)
	if h.ins != nil {
		info, err := h.ins.Get(h.ctx(), current.Task.ID)
		h.noteLate(current.Deadline)
		switch {
		case !h.answered(callOf("Get", peonify.StateRunning), err):
		case err != nil:
			h.failf("after %s, Inspector.Get(%s): %v; the stale call must not remove a task that a newer claim holds",
				after, current.Task.ID, err)
		case info.State != peonify.StateRunning:
			h.failf("after %s, Inspector.Get(%s).State = %q, want %q: the stale call must not touch the newer claim",
				after, current.Task.ID, info.State, peonify.StateRunning)
		}
	}
	if h.ext != nil {
		ctx, cancel := context.WithTimeout(h.ctx(), h.f.Timeout)
		defer cancel()
		nd, err := h.ext.Extend(ctx, current, h.f.Lease)
		h.noteLate(current.Deadline)
		if err != nil {
			h.failf("after %s, Extend of the current claim failed: %v; the stale call must not touch the newer claim", after, err)
		}
		current = nd
	}
	return current
}

// testStaleAck checks that an Ack from a claim whose lease ended and whose
// task was claimed again does not remove the new claim, and does not stop
// the current deliveries of its batch from being acked.
func testStaleAck(h *harness) {
	stale, current := h.staleSetup()
	h.enqueue(h.newTask())
	other := h.next()
	err := h.s.Ack(h.ctx(), stale, other)
	h.noteLate(other.Deadline)
	h.checkStaleResult("Ack of a batch with a stale delivery", err)
	current = h.checkClaimHolds(current, "a stale Ack")
	h.ack(current)
	h.nothingUntil(h.afterLease(latestDeadline([]peonify.Delivery{current, other})),
		"both tasks were acked by their current claims; neither may be delivered again")
	h.wantGone(current.Task.ID, "after the current claim's Ack")
	h.wantGone(other.Task.ID, "after an Ack of it in a batch with a stale delivery")
}

// testStaleNack checks that Nacks from a claim whose lease ended and whose
// task was claimed again do not touch the new claim.
func testStaleNack(h *harness) {
	stale, current := h.staleSetup()
	for _, o := range []peonify.Outcome{peonify.OutcomeFailed, peonify.OutcomeReleased, peonify.OutcomeDead} {
		err := h.s.Nack(h.ctx(), stale, peonify.NackOptions{Outcome: o, Reason: "peonifytest: stale nack"})
		h.checkStaleResult("Nack("+o.String()+")", err)
	}
	current = h.checkClaimHolds(current, "stale Nacks")
	h.ack(current)
	h.nothingUntil(h.afterLease(current.Deadline), "the task was acked by its current claim; it must not be delivered a third time")
	h.wantGone(current.Task.ID, "after stale Nacks and the current claim's Ack")
}

// testStaleExtend checks that Extend of a claim that is no longer current
// reports ErrLeaseLost, both after a re-claim and after an Ack.
func testStaleExtend(h *harness) {
	h.needExtender()
	stale, current := h.staleSetup()
	_, err := h.ext.Extend(h.ctx(), stale, h.f.Lease)
	if !errors.Is(err, peonify.ErrLeaseLost) {
		h.t.Errorf("Extend of a claim whose task was claimed again returned %v, want an error wrapping peonify.ErrLeaseLost", err)
	}
	h.ack(current)
	_, err = h.ext.Extend(h.ctx(), current, h.f.Lease)
	if !errors.Is(err, peonify.ErrLeaseLost) {
		h.t.Errorf("Extend of an acked claim returned %v, want an error wrapping peonify.ErrLeaseLost", err)
	}
}
