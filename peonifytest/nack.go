package peonifytest

import (
	"errors"
	"slices"
	"strings"
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
	if h.ins != nil {
		info := h.wantState(tk.ID, peonify.StateScheduled, "during the delay of a failed Nack")
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

// testDeadInspectable checks that an Inspector shows a dead task with its
// reason, and that Retry makes it deliverable again with a fresh count.
func testDeadInspectable(h *harness) {
	h.needInspector()
	tk := h.newTask()
	h.enqueue(tk)
	d := h.next()
	const reason = "peonifytest: poison payload"
	h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: reason})

	info := h.wantState(tk.ID, peonify.StateDead, "after Nack(dead)")
	if !strings.Contains(info.LastError, reason) {
		h.t.Errorf("Inspector.Get(%s).LastError = %q, want the dead reason %q", tk.ID, info.LastError, reason)
	}
	if string(info.Task.Payload) != string(tk.Payload) || info.Task.Type != tk.Type {
		h.t.Errorf("Inspector.Get(%s) shows Type %q and payload %q, want %q and %q", tk.ID, info.Task.Type, info.Task.Payload, tk.Type, tk.Payload)
	}
	list, err := h.ins.List(h.ctx(), peonify.ListOptions{State: peonify.StateDead})
	if err != nil {
		h.t.Fatalf("Inspector.List(dead): %v", err)
	}
	if i := slices.IndexFunc(list, func(ti peonify.TaskInfo) bool { return ti.Task.ID == tk.ID }); i < 0 {
		h.t.Errorf("Inspector.List(dead) does not show dead task %s (it lists %d tasks)", tk.ID, len(list))
	} else if list[i].State != peonify.StateDead || !strings.Contains(list[i].LastError, reason) {
		h.t.Errorf("Inspector.List(dead) shows task %s in state %q with error %q, want %q and %q",
			tk.ID, list[i].State, list[i].LastError, peonify.StateDead, reason)
	}
	h.wantCount(peonify.StateDead, 1)

	n, err := h.ins.Retry(h.ctx(), tk.ID)
	if err != nil || n != 1 {
		h.t.Fatalf("Inspector.Retry(%s) = %d, %v; want 1, nil", tk.ID, n, err)
	}
	d = h.next()
	if d.Task.ID != tk.ID {
		h.t.Fatalf("after Retry, Poll returned %s, want task %s", describe1(d), tk.ID)
	}
	if d.Task.Attempt != 1 {
		h.t.Errorf("a retried dead task came back with Attempt %d, want 1: Retry gives a fresh attempt count", d.Task.Attempt)
	}
	h.ack(d)
	h.wantCount(peonify.StateDead, 0)
}

// wantCount checks one state's count from Inspector.Counts.
func (h *harness) wantCount(st peonify.State, want int) {
	h.t.Helper()
	counts, err := h.ins.Counts(h.ctx())
	if err != nil {
		h.t.Fatalf("Inspector.Counts: %v", err)
	}
	if counts[st] != want {
		h.t.Errorf("Inspector.Counts()[%q] = %d, want %d (all counts: %v)", st, counts[st], want, counts)
	}
}

// testInspector walks tasks through the states an Inspector reports and
// checks List paging, Delete and Purge.
func testInspector(h *harness) {
	h.needInspector()
	ctx := h.ctx()
	if _, err := h.ins.Get(ctx, peonify.NewID()); !errors.Is(err, peonify.ErrNotFound) {
		h.t.Errorf("Inspector.Get of an unknown ID returned %v, want an error wrapping peonify.ErrNotFound", err)
	}

	tasks := h.newTasks(3) // IDs made in order, so they sort in order
	h.enqueue(tasks...)
	h.wantCount(peonify.StatePending, 3)
	ids := func(infos []peonify.TaskInfo) []string {
		out := make([]string, 0, len(infos))
		for _, ti := range infos {
			out = append(out, ti.Task.ID)
		}
		return out
	}
	list := func(opts peonify.ListOptions) []string {
		h.t.Helper()
		infos, err := h.ins.List(ctx, opts)
		if err != nil {
			h.t.Fatalf("Inspector.List(%+v): %v", opts, err)
		}
		return ids(infos)
	}
	a, b, c := tasks[0].ID, tasks[1].ID, tasks[2].ID
	if got := list(peonify.ListOptions{State: peonify.StatePending}); !slices.Equal(got, []string{a, b, c}) {
		h.t.Errorf("Inspector.List(pending) = %v, want %v ordered by ID", got, []string{a, b, c})
	}
	if got := list(peonify.ListOptions{State: peonify.StatePending, Limit: 2}); !slices.Equal(got, []string{a, b}) {
		h.t.Errorf("Inspector.List(pending, Limit 2) = %v, want %v", got, []string{a, b})
	}
	if got := list(peonify.ListOptions{State: peonify.StatePending, After: b}); !slices.Equal(got, []string{c}) {
		h.t.Errorf("Inspector.List(pending, After %s) = %v, want %v", b, got, []string{c})
	}
	if got := list(peonify.ListOptions{State: peonify.StatePending, Type: "peonifytest.no-such-type"}); len(got) != 0 {
		h.t.Errorf("Inspector.List(pending, Type no-such-type) = %v, want none", got)
	}
	info := h.wantState(a, peonify.StatePending, "after Enqueue")
	if info.Task.Type != tasks[0].Type || string(info.Task.Payload) != string(tasks[0].Payload) {
		h.t.Errorf("Inspector.Get(%s) shows Type %q and payload %q, want %q and %q",
			a, info.Task.Type, info.Task.Payload, tasks[0].Type, tasks[0].Payload)
	}

	d := h.next()
	id := d.Task.ID
	info = h.wantState(id, peonify.StateRunning, "after Poll")
	if info.Attempts != 1 {
		h.t.Errorf("Inspector.Get(%s).Attempts = %d while its first attempt runs, want 1", id, info.Attempts)
	}
	if h.f.Lease > 0 && info.LeaseUntil.IsZero() {
		h.t.Errorf("Inspector.Get(%s).LeaseUntil is zero for a running task", id)
	}
	if n, err := h.ins.Delete(ctx, id); err != nil || n != 0 {
		h.t.Errorf("Inspector.Delete of a running task = %d, %v; want 0, nil: Delete removes only tasks that are not running", n, err)
	}
	h.wantState(id, peonify.StateRunning, "after Delete of a running task")

	h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Hour, Reason: "peonifytest: later"})
	info = h.wantState(id, peonify.StateScheduled, "after Nack(failed) with a delay of 1h")
	if info.LastError != "peonifytest: later" {
		h.t.Errorf("Inspector.Get(%s).LastError = %q after a failed Nack, want its Reason %q", id, info.LastError, "peonifytest: later")
	}
	if n, err := h.ins.Delete(ctx, id); err != nil || n != 1 {
		h.t.Errorf("Inspector.Delete of a scheduled task = %d, %v; want 1, nil", n, err)
	}
	if _, err := h.ins.Get(ctx, id); !errors.Is(err, peonify.ErrNotFound) {
		h.t.Errorf("Inspector.Get of a deleted task returned %v, want an error wrapping peonify.ErrNotFound", err)
	}
	h.wantCount(peonify.StatePending, 2)
	h.wantCount(peonify.StateScheduled, 0)

	if n, err := h.ins.Purge(ctx, peonify.StatePending); err != nil || n != 2 {
		h.t.Errorf("Inspector.Purge(pending) = %d, %v; want 2, nil", n, err)
	}
	h.wantCount(peonify.StatePending, 0)
	h.nothingFor(h.f.Settle, "every task was deleted or purged")
}
