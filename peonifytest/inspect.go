package peonifytest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/peonify/peonify"
)

// InspectCall names an Inspector call in Features.InspectorUnsupported:
// "Counts", "Retry", or List, Get, Delete or Purge with the state of the
// tasks it is about, as in "List(pending)" or "Get(running)". "Get(done)"
// and "Delete(done)" also stand for a task that is gone (acked and not
// kept, or deleted) or was never stored.
type InspectCall string

// callOf returns the InspectCall of method about tasks in state st.
func callOf(method string, st peonify.State) InspectCall {
	return InspectCall(method + "(" + string(st) + ")")
}

// inspectCalls lists every valid InspectCall.
func inspectCalls() []InspectCall {
	calls := []InspectCall{"Counts", "Retry"}
	for _, m := range []string{"List", "Get", "Delete", "Purge"} {
		for _, st := range peonify.States {
			calls = append(calls, callOf(m, st))
		}
	}
	return calls
}

// checkInspectCalls returns an error naming the first call that is not a
// valid InspectCall.
func checkInspectCalls(calls []InspectCall) error {
	valid := inspectCalls()
	for _, c := range calls {
		if !slices.Contains(valid, c) {
			return fmt.Errorf("Features.InspectorUnsupported: %q is not an Inspector call: use one of %v", c, valid)
		}
	}
	return nil
}

// answered judges the error of an Inspector call. It returns false if err
// wraps errors.ErrUnsupported and Features.InspectorUnsupported lists the
// call: the caller then skips what depends on the answer. It fails the
// test if err wraps errors.ErrUnsupported and the call is not listed, and
// reports a listed call that answered otherwise, for the list to stay
// true. It returns true in every other case, for the caller to check err
// and the answer.
func (h *harness) answered(call InspectCall, err error) bool {
	h.t.Helper()
	listed := h.unsupported[call]
	switch {
	case errors.Is(err, errors.ErrUnsupported) && listed:
		return false
	case errors.Is(err, errors.ErrUnsupported):
		h.t.Fatalf("Inspector %s: %v; the stream must answer it, or list it in Features.InspectorUnsupported if its server cannot", call, err)
	case listed:
		h.t.Errorf("Inspector %s returned %v, not an error wrapping errors.ErrUnsupported, though Features.InspectorUnsupported lists it: remove it from the list",
			call, err)
	}
	return true
}

// get returns task id, which should be in state st, as the Inspector sees
// it, failing the test on an error. ok is false when the stream has no
// Inspector, or lists Get of st as unsupported.
func (h *harness) get(id string, st peonify.State) (info peonify.TaskInfo, ok bool) {
	h.t.Helper()
	if h.ins == nil {
		return info, false
	}
	info, err := h.ins.Get(h.ctx(), id)
	if !h.answered(callOf("Get", st), err) {
		return info, false
	}
	if err != nil {
		h.t.Fatalf("Inspector.Get(%s) of a %s task: %v", id, st, err)
	}
	if info.Task.ID != id {
		h.t.Fatalf("Inspector.Get(%s) returned task %q", id, info.Task.ID)
	}
	return info, true
}

// wantState checks the Inspector's state of task id, when the Inspector
// can tell (see get).
func (h *harness) wantState(id string, want peonify.State, when string) (peonify.TaskInfo, bool) {
	h.t.Helper()
	info, ok := h.get(id, want)
	if ok && info.State != want {
		h.t.Errorf("%s: Inspector.Get(%s).State = %q, want %q", when, id, info.State, want)
	}
	return info, ok
}

// wantGone checks that the Inspector shows task id as removed or done.
func (h *harness) wantGone(id, when string) {
	h.t.Helper()
	if h.ins == nil {
		return
	}
	info, err := h.ins.Get(h.ctx(), id)
	switch {
	case !h.answered(callOf("Get", peonify.StateDone), err):
	case errors.Is(err, peonify.ErrNotFound):
	case err != nil:
		h.t.Errorf("%s: Inspector.Get(%s): %v, want an error wrapping peonify.ErrNotFound or a done task", when, id, err)
	case info.State != peonify.StateDone:
		h.t.Errorf("%s: Inspector.Get(%s).State = %q, want the task gone or %q", when, id, info.State, peonify.StateDone)
	}
}

// wantCount checks one state's count from Inspector.Counts. A broker may
// update its counts a moment after the change (a message on its way to a
// consumer), so it asks again until Features.Timeout.
func (h *harness) wantCount(st peonify.State, want int) {
	h.t.Helper()
	if h.ins == nil {
		return
	}
	deadline := time.Now().Add(h.f.Timeout)
	for {
		counts, err := h.ins.Counts(h.ctx())
		if !h.answered("Counts", err) {
			return
		}
		if err != nil {
			h.t.Fatalf("Inspector.Counts: %v", err)
		}
		if counts[st] == want {
			return
		}
		if time.Now().After(deadline) {
			h.t.Errorf("Inspector.Counts()[%q] = %d, want %d (all counts: %v)", st, counts[st], want, counts)
			return
		}
		h.pause(pollPause)
	}
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

	if info, ok := h.wantState(tk.ID, peonify.StateDead, "after Nack(dead)"); ok {
		if !strings.Contains(info.LastError, reason) {
			h.t.Errorf("Inspector.Get(%s).LastError = %q, want the dead reason %q", tk.ID, info.LastError, reason)
		}
		if string(info.Task.Payload) != string(tk.Payload) || info.Task.Type != tk.Type {
			h.t.Errorf("Inspector.Get(%s) shows Type %q and payload %q, want %q and %q", tk.ID, info.Task.Type, info.Task.Payload, tk.Type, tk.Payload)
		}
	}
	list, err := h.ins.List(h.ctx(), peonify.ListOptions{State: peonify.StateDead})
	if h.answered(callOf("List", peonify.StateDead), err) {
		if err != nil {
			h.t.Fatalf("Inspector.List(dead): %v", err)
		}
		if i := slices.IndexFunc(list, func(ti peonify.TaskInfo) bool { return ti.Task.ID == tk.ID }); i < 0 {
			h.t.Errorf("Inspector.List(dead) does not show dead task %s (it lists %d tasks)", tk.ID, len(list))
		} else if list[i].State != peonify.StateDead || !strings.Contains(list[i].LastError, reason) {
			h.t.Errorf("Inspector.List(dead) shows task %s in state %q with error %q, want %q and %q",
				tk.ID, list[i].State, list[i].LastError, peonify.StateDead, reason)
		}
	}
	h.wantCount(peonify.StateDead, 1)

	n, err := h.ins.Retry(h.ctx(), tk.ID)
	if !h.answered("Retry", err) {
		return
	}
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

// testInspector walks tasks through the states an Inspector reports and
// checks List paging, Delete and Purge. Calls that the stream lists as
// unsupported are accepted as such, and what depends on their answers is
// skipped.
func testInspector(h *harness) {
	h.needInspector()
	ctx := h.ctx()
	_, err := h.ins.Get(ctx, peonify.NewID())
	if h.answered(callOf("Get", peonify.StateDone), err) && !errors.Is(err, peonify.ErrNotFound) {
		h.t.Errorf("Inspector.Get of an unknown ID returned %v, want an error wrapping peonify.ErrNotFound", err)
	}

	tasks := h.newTasks(3) // IDs made in order, so they sort in order
	h.enqueue(tasks...)
	h.wantCount(peonify.StatePending, 3)
	list := func(opts peonify.ListOptions) ([]string, bool) {
		h.t.Helper()
		infos, err := h.ins.List(ctx, opts)
		if !h.answered(callOf("List", opts.State), err) {
			return nil, false
		}
		if err != nil {
			h.t.Fatalf("Inspector.List(%+v): %v", opts, err)
		}
		ids := make([]string, 0, len(infos))
		for _, ti := range infos {
			ids = append(ids, ti.Task.ID)
		}
		return ids, true
	}
	a, b, c := tasks[0].ID, tasks[1].ID, tasks[2].ID
	if got, ok := list(peonify.ListOptions{State: peonify.StatePending}); ok && !slices.Equal(got, []string{a, b, c}) {
		h.t.Errorf("Inspector.List(pending) = %v, want %v ordered by ID", got, []string{a, b, c})
	}
	if got, ok := list(peonify.ListOptions{State: peonify.StatePending, Limit: 2}); ok && !slices.Equal(got, []string{a, b}) {
		h.t.Errorf("Inspector.List(pending, Limit 2) = %v, want %v", got, []string{a, b})
	}
	if got, ok := list(peonify.ListOptions{State: peonify.StatePending, After: b}); ok && !slices.Equal(got, []string{c}) {
		h.t.Errorf("Inspector.List(pending, After %s) = %v, want %v", b, got, []string{c})
	}
	if got, ok := list(peonify.ListOptions{State: peonify.StatePending, Type: "peonifytest.no-such-type"}); ok && len(got) != 0 {
		h.t.Errorf("Inspector.List(pending, Type no-such-type) = %v, want none", got)
	}
	if info, ok := h.wantState(a, peonify.StatePending, "after Enqueue"); ok &&
		(info.Task.Type != tasks[0].Type || string(info.Task.Payload) != string(tasks[0].Payload)) {
		h.t.Errorf("Inspector.Get(%s) shows Type %q and payload %q, want %q and %q",
			a, info.Task.Type, info.Task.Payload, tasks[0].Type, tasks[0].Payload)
	}

	d := h.next()
	id := d.Task.ID
	if info, ok := h.wantState(id, peonify.StateRunning, "after Poll"); ok {
		if info.Attempts != 1 {
			h.t.Errorf("Inspector.Get(%s).Attempts = %d while its first attempt runs, want 1", id, info.Attempts)
		}
		if h.f.Lease > 0 && info.LeaseUntil.IsZero() {
			h.t.Errorf("Inspector.Get(%s).LeaseUntil is zero for a running task", id)
		}
	}
	if n, err := h.ins.Delete(ctx, id); h.answered(callOf("Delete", peonify.StateRunning), err) && (err != nil || n != 0) {
		h.t.Errorf("Inspector.Delete of a running task = %d, %v; want 0, nil: Delete removes only tasks that are not running", n, err)
	}
	h.wantState(id, peonify.StateRunning, "after Delete of a running task")

	h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Hour, Reason: "peonifytest: later"})
	if info, ok := h.wantState(id, peonify.StateScheduled, "after Nack(failed) with a delay of 1h"); ok && info.LastError != "peonifytest: later" {
		h.t.Errorf("Inspector.Get(%s).LastError = %q after a failed Nack, want its Reason %q", id, info.LastError, "peonifytest: later")
	}
	scheduled := 1
	n, err := h.ins.Delete(ctx, id)
	if h.answered(callOf("Delete", peonify.StateScheduled), err) {
		if err != nil || n != 1 {
			h.t.Errorf("Inspector.Delete of a scheduled task = %d, %v; want 1, nil", n, err)
		}
		_, err := h.ins.Get(ctx, id)
		if h.answered(callOf("Get", peonify.StateDone), err) && !errors.Is(err, peonify.ErrNotFound) {
			h.t.Errorf("Inspector.Get of a deleted task returned %v, want an error wrapping peonify.ErrNotFound", err)
		}
		scheduled = 0
	}
	h.wantCount(peonify.StatePending, 2)
	h.wantCount(peonify.StateScheduled, scheduled)

	n, err = h.ins.Purge(ctx, peonify.StatePending)
	if !h.answered(callOf("Purge", peonify.StatePending), err) {
		return
	}
	if err != nil || n != 2 {
		h.t.Errorf("Inspector.Purge(pending) = %d, %v; want 2, nil", n, err)
	}
	h.wantCount(peonify.StatePending, 0)
	h.nothingFor(h.f.Settle, "every task was deleted, purged or delayed by an hour")
}

// testInspectorUnsupported makes each call that Features.InspectorUnsupported
// lists, about a task in the state it names, and checks that it returns an
// error wrapping errors.ErrUnsupported that says why.
func testInspectorUnsupported(h *harness) {
	h.needInspector()
	if len(h.f.InspectorUnsupported) == 0 {
		h.t.Log("Features.InspectorUnsupported is empty: the other checks require an answer to every Inspector call")
		return
	}
	h.t.Logf("Inspector calls the stream lists as unsupported: %v", h.f.InspectorUnsupported)
	ctx := h.ctx()

	// A task in each state that a listed Get or Delete is about, made in
	// an order in which each Poll claims the task just enqueued.
	needs := func(st peonify.State) bool {
		return h.unsupported[callOf("Get", st)] || h.unsupported[callOf("Delete", st)]
	}
	ids := map[peonify.State]string{peonify.StateDone: peonify.NewID()}
	for _, st := range []peonify.State{peonify.StateRunning, peonify.StateScheduled, peonify.StateDead} {
		if !needs(st) {
			continue
		}
		tk := h.newTask()
		h.enqueue(tk)
		d := h.next()
		if d.Task.ID != tk.ID {
			h.t.Fatalf("Poll returned %s, want task %s, the only one pending", describe1(d), tk.ID)
		}
		switch st {
		case peonify.StateScheduled:
			h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Hour, Reason: "peonifytest: later"})
		case peonify.StateDead:
			h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "peonifytest: poison"})
		}
		ids[st] = tk.ID
	}
	if needs(peonify.StatePending) {
		tk := h.newTask()
		h.enqueue(tk)
		ids[peonify.StatePending] = tk.ID
	}

	for _, call := range h.f.InspectorUnsupported {
		method, arg, _ := strings.Cut(strings.TrimSuffix(string(call), ")"), "(")
		st := peonify.State(arg)
		var err error
		switch method {
		case "Counts":
			_, err = h.ins.Counts(ctx)
		case "Retry":
			_, err = h.ins.Retry(ctx)
		case "List":
			_, err = h.ins.List(ctx, peonify.ListOptions{State: st})
		case "Purge":
			_, err = h.ins.Purge(ctx, st)
		case "Get":
			_, err = h.ins.Get(ctx, ids[st])
		case "Delete":
			_, err = h.ins.Delete(ctx, ids[st])
		}
		switch {
		case !errors.Is(err, errors.ErrUnsupported):
			h.t.Errorf("Inspector %s returned %v; Features.InspectorUnsupported lists it, so it must return an error wrapping errors.ErrUnsupported",
				call, err)
		case err.Error() == errors.ErrUnsupported.Error():
			h.t.Errorf("Inspector %s returned a bare errors.ErrUnsupported: wrap it with why the stream cannot answer", call)
		}
	}
}
