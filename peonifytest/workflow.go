package peonifytest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/peonify/peonify"
)

// The workflow checks (peonify.WorkflowStore). They need a Tracker and an
// Inspector too, and skip, saying why, for a stream that is not a
// WorkflowStore; the WorkflowStore check fails for such a stream unless
// Features.NoWorkflows says it is meant.

// fanOut is how many children the WorkflowFanOut check spawns.
const fanOut = 1000

// wfTask returns a new task of the check's type with suffix, for a
// workflow.
func (h *harness) wfTask(suffix string) *peonify.Task {
	tk := h.newTask()
	tk.Type += "." + suffix
	return tk
}

// enqueueWorkflow stores w, failing the test on an error.
func (h *harness) enqueueWorkflow(ws peonify.WorkflowStore, w *peonify.Workflow) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx(), h.f.Timeout)
	defer cancel()
	if err := ws.EnqueueWorkflow(ctx, w); err != nil {
		h.t.Fatalf("EnqueueWorkflow of %d tasks: %v", len(w.Tasks), err)
	}
}

// getWorkflow returns the workflow's info, failing the test on an error.
func (h *harness) getWorkflow(ws peonify.WorkflowStore, id string) peonify.WorkflowInfo {
	h.t.Helper()
	info, err := ws.GetWorkflow(h.ctx(), id)
	if err != nil {
		h.t.Fatalf("GetWorkflow(%s): %v", id, err)
	}
	if info.ID != id {
		h.t.Errorf("GetWorkflow(%s).ID = %q", id, info.ID)
	}
	if want := peonify.WorkflowStateOf(info.Counts); info.State != want {
		h.t.Errorf("GetWorkflow(%s).State = %q, but its Counts %v make it %q (peonify.WorkflowStateOf)", id, info.State, info.Counts, want)
	}
	return info
}

// wantReasonNames checks that the cancelled task id's reason names the
// task that caused it.
func (h *harness) wantReasonNames(id, cause, when string) {
	h.t.Helper()
	info := h.wantStateNow(id, peonify.StateCancelled, when)
	if !strings.Contains(info.LastError, cause) {
		h.t.Errorf("%s: Inspector.Get(%s).LastError = %q, want a reason naming the parent %s (\"parent %s dead: ...\")", when, id, info.LastError, cause, cause)
	}
}

// testWorkflowDiamond runs the workflow A → (B, C) → D through a real
// peonify.Processor with JSONResult handlers: B and C read A's result with
// ParentResults, D reads B's and C's; no task starts before its parents
// ended; the tasks with parents wait in StateWaiting until then; and
// GetWorkflow shows the workflow succeeded.
func testWorkflowDiamond(h *harness) {
	ws, tr := h.workflows()
	type num struct{ N int }
	w := &peonify.Workflow{ID: "peonifytest-" + peonify.NewID()}
	a := w.Add(h.wfTask("a"))
	b := w.Add(h.wfTask("b"), a)
	c := w.Add(h.wfTask("c"), a)
	d := w.Add(h.wfTask("d"), b, c)
	h.enqueueWorkflow(ws, w)
	for _, tk := range w.Tasks {
		if tk.Workflow != w.ID {
			h.t.Errorf("after EnqueueWorkflow, task %s has Workflow %q, want %q (Workflow.Prepare fills it)", tk.ID, tk.Workflow, w.ID)
		}
	}
	h.wantStateNow(a.ID, peonify.StatePending, "a workflow task without parents")
	for _, tk := range []*peonify.Task{b, c, d} {
		info := h.wantStateNow(tk.ID, peonify.StateWaiting, "a workflow task whose parents have not finished")
		if info.Task.Workflow != w.ID || !slices.Equal(info.Task.Parents, tk.Parents) {
			h.t.Errorf("Inspector.Get(%s) shows Workflow %q and Parents %v, want %q and %v", tk.ID, info.Task.Workflow, info.Task.Parents, w.ID, tk.Parents)
		}
	}
	if info := h.getWorkflow(ws, w.ID); info.State != peonify.WorkflowRunning || info.Counts[peonify.StateWaiting] != 3 || info.Counts[peonify.StatePending] != 1 {
		h.t.Errorf("GetWorkflow(%s) before it ran = state %q, counts %v; want running, 1 pending and 3 waiting", w.ID, info.State, info.Counts)
	}

	var (
		mu      sync.Mutex
		started = map[string]time.Time{}
		ended   = map[string]time.Time{}
		parents = map[string][]string{} // task -> parent IDs ParentResults returned
	)
	handler := func(add int) peonify.Handler {
		return peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			mu.Lock()
			started[t.ID] = time.Now()
			mu.Unlock()
			res, err := peonify.ParentResults(ctx)
			if err != nil {
				return peonify.SkipRetry(fmt.Errorf("ParentResults: %w", err))
			}
			sum := 0
			ids := make([]string, 0, len(res))
			for id, r := range res {
				var n num
				if err := json.Unmarshal(r, &n); err != nil {
					return peonify.SkipRetry(fmt.Errorf("the result of parent %s, %q, does not decode: %w", id, r, err))
				}
				sum += n.N
				ids = append(ids, id)
			}
			slices.Sort(ids)
			step := peonify.JSONResult(func(context.Context, json.RawMessage) (num, error) {
				return num{N: sum + add}, nil
			})
			err = step.Execute(ctx, t)
			mu.Lock()
			parents[t.ID] = ids
			ended[t.ID] = time.Now()
			mu.Unlock()
			return err
		})
	}
	stop := h.runProcessor(peonify.TaskList{a.Type: handler(1), b.Type: handler(10), c.Type: handler(100), d.Type: handler(1000)})
	defer stop()

	ctx, cancel := context.WithTimeout(h.ctx(), h.f.Timeout)
	defer cancel()
	info, err := tr.Wait(ctx, d.ID)
	if err != nil {
		h.t.Fatalf("Tracker.Wait for the last task of the workflow: %v", err)
	}
	if info.State != peonify.StateDone {
		h.t.Fatalf("the last task of the workflow ended %q (LastError %q), want done", info.State, info.LastError)
	}
	var got num
	if err := json.Unmarshal(info.Result, &got); err != nil || got.N != 1112 {
		h.t.Errorf("the last task's result is %q, want {\"N\":1112}: D adds B's (11) and C's (101) results, which add A's (1)", info.Result)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, tk := range w.Tasks {
		want := slices.Sorted(slices.Values(tk.Parents))
		if !slices.Equal(parents[tk.ID], want) {
			h.t.Errorf("task %s read the results of parents %v with ParentResults, want %v", tk.ID, parents[tk.ID], want)
		}
		for _, p := range tk.Parents {
			if !started[tk.ID].After(ended[p]) {
				h.t.Errorf("task %s started at %s, before its parent %s ended at %s", tk.ID,
					started[tk.ID].Format(time.StampMicro), p, ended[p].Format(time.StampMicro))
			}
		}
	}
	wi := h.getWorkflow(ws, w.ID)
	if wi.State != peonify.WorkflowSucceeded || wi.Counts[peonify.StateDone] != 4 {
		h.t.Errorf("GetWorkflow(%s) = state %q, counts %v; want succeeded with 4 done", w.ID, wi.State, wi.Counts)
	}
	ids := make([]string, 0, len(wi.Tasks))
	for _, ti := range wi.Tasks {
		ids = append(ids, ti.Task.ID)
	}
	want := []string{a.ID, b.ID, c.ID, d.ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		h.t.Errorf("GetWorkflow(%s).Tasks are %v, want %v (by ID)", w.ID, ids, want)
	}
	if wi.CreatedAt.IsZero() || wi.UpdatedAt.Before(wi.CreatedAt) {
		h.t.Errorf("GetWorkflow(%s) has CreatedAt %s and UpdatedAt %s: want when its first task was enqueued, and when one last changed", w.ID, wi.CreatedAt, wi.UpdatedAt)
	}
	if _, err := ws.GetWorkflow(h.ctx(), peonify.NewID()); !errors.Is(err, peonify.ErrNotFound) {
		h.t.Errorf("GetWorkflow of an unknown ID returned %v, want an error wrapping peonify.ErrNotFound", err)
	}
}

// totalCount returns the number of tasks Inspector.Counts reports.
func (h *harness) totalCount() (int, map[peonify.State]int) {
	h.t.Helper()
	c, err := h.ins.Counts(h.ctx())
	if err != nil {
		h.t.Fatalf("Inspector.Counts: %v", err)
	}
	n := 0
	for _, v := range c {
		n += v
	}
	return n, c
}

// testWorkflowInvalid checks that EnqueueWorkflow stores nothing when it
// fails: a cycle and an unknown parent are errors, and a workflow whose ID
// or one of whose task IDs is stored already is a *DuplicateError naming
// them.
func testWorkflowInvalid(h *harness) {
	ws, _ := h.workflows()
	cycle := &peonify.Workflow{}
	x, y, z := h.wfTask("x"), h.wfTask("y"), h.wfTask("z")
	x.ID, y.ID, z.ID = peonify.NewID(), peonify.NewID(), peonify.NewID()
	x.Parents, y.Parents, z.Parents = []string{z.ID}, []string{x.ID}, []string{y.ID}
	cycle.Tasks = []*peonify.Task{h.wfTask("root"), x, y, z}
	unknown := &peonify.Workflow{}
	u := unknown.Add(h.wfTask("u"))
	v := unknown.Add(h.wfTask("v"), u)
	v.Parents = append(v.Parents, "peonifytest-no-such-task")
	for _, c := range []struct {
		what string
		w    *peonify.Workflow
	}{{"a cycle", cycle}, {"an unknown parent", unknown}} {
		err := ws.EnqueueWorkflow(h.ctx(), c.w)
		var inv *peonify.InvalidTaskError
		if !errors.As(err, &inv) {
			h.t.Errorf("EnqueueWorkflow of a workflow with %s returned %v, want a *peonify.InvalidTaskError (Workflow.Prepare)", c.what, err)
		}
		for _, tk := range c.w.Tasks {
			if tk.ID != "" {
				h.wantNotFound("after EnqueueWorkflow of a workflow with "+c.what, tk.ID)
			}
		}
	}
	if n, c := h.totalCount(); n != 0 {
		h.t.Errorf("Inspector.Counts() = %v after two invalid workflows, want nothing stored", c)
	}

	w := &peonify.Workflow{ID: "peonifytest-" + peonify.NewID()}
	a := w.Add(h.wfTask("a"))
	b := w.Add(h.wfTask("b"), a)
	h.enqueueWorkflow(ws, w)
	again := &peonify.Workflow{ID: w.ID}
	a2 := again.Add(&peonify.Task{ID: a.ID, Type: a.Type})
	again.Add(&peonify.Task{ID: b.ID, Type: b.Type}, a2)
	sameTask := &peonify.Workflow{}
	fresh := sameTask.Add(h.wfTask("fresh"))
	sameTask.Add(&peonify.Task{ID: b.ID, Type: b.Type}, fresh)
	sameID := &peonify.Workflow{ID: w.ID}
	fresh2 := sameID.Add(h.wfTask("fresh2"))
	for _, c := range []struct {
		what  string
		w     *peonify.Workflow
		names []string // one of these
		fresh *peonify.Task
	}{
		{"the same workflow again", again, []string{a.ID, b.ID, w.ID}, nil},
		{"a workflow with a stored task's ID", sameTask, []string{b.ID}, fresh},
		{"a workflow with a stored workflow's ID", sameID, []string{w.ID}, fresh2},
	} {
		err := ws.EnqueueWorkflow(h.ctx(), c.w)
		var dup *peonify.DuplicateError
		switch {
		case !errors.As(err, &dup):
			h.t.Errorf("EnqueueWorkflow of %s returned %v, want a *peonify.DuplicateError", c.what, err)
		case !slices.ContainsFunc(dup.IDs, func(id string) bool { return slices.Contains(c.names, id) }):
			h.t.Errorf("EnqueueWorkflow of %s returned a DuplicateError naming %v, want it to name one of %v (the stored tasks, or the workflow)", c.what, dup.IDs, c.names)
		}
		if c.fresh != nil {
			h.wantNotFound("after EnqueueWorkflow of "+c.what, c.fresh.ID)
		}
	}
	if n, c := h.totalCount(); n != 2 || c[peonify.StatePending] != 1 || c[peonify.StateWaiting] != 1 {
		h.t.Errorf("Inspector.Counts() = %v after one workflow of 2 tasks and three duplicates, want 1 pending and 1 waiting", c)
	}
	if info := h.getWorkflow(ws, w.ID); len(info.Tasks) != 2 {
		h.t.Errorf("GetWorkflow(%s) lists %d tasks after duplicates were refused, want 2", w.ID, len(info.Tasks))
	}
}

// testWorkflowCascade checks what a failed parent does: when P goes dead,
// its dependent X and X's dependent Y are cancelled with reasons naming
// P and X; Z, which allows failed parents, runs once its other parent Q
// succeeded (a batch callback), and its dependent W after it; the
// workflow ends failed.
func testWorkflowCascade(h *harness) {
	ws, tr := h.workflows()
	w := &peonify.Workflow{ID: "peonifytest-" + peonify.NewID()}
	p := w.Add(h.wfTask("p"))
	q := w.Add(h.wfTask("q"))
	x := w.Add(h.wfTask("x"), p)
	y := w.Add(h.wfTask("y"), x)
	z := h.wfTask("z")
	z.AllowFailedParents = true
	w.Add(z, p, q)
	wt := w.Add(h.wfTask("w"), z)
	h.enqueueWorkflow(ws, w)

	var dq peonify.Delivery
	for _, d := range h.collect(2, 10) {
		switch d.Task.ID {
		case p.ID:
			h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "peonifytest: parent failed"})
		case q.ID:
			dq = d
		default:
			h.t.Fatalf("Poll claimed %s, want the tasks without parents (%s and %s)", describe1(d), p.ID, q.ID)
		}
	}
	h.wantReasonNames(x.ID, p.ID, "the dependent of a dead parent")
	h.wantReasonNames(y.ID, x.ID, "the dependent of a cancelled dependent")
	h.wantStateNow(z.ID, peonify.StateWaiting, "a task allowing failed parents, one of which is still running")
	h.quietWhileHeld([]peonify.Delivery{dq}, "the only tasks left wait for a running parent")
	h.ackResult(dq, []byte(`"q"`))
	dz := h.next()
	if dz.Task.ID != z.ID {
		h.t.Fatalf("after its parents finished, Poll claimed %s, want the task allowing failed parents (%s)", describe1(dz), z.ID)
	}
	if !dz.Task.AllowFailedParents || !slices.Equal(dz.Task.Parents, z.Parents) || dz.Task.Workflow != w.ID {
		h.t.Errorf("delivered %s with AllowFailedParents %t, Parents %v, Workflow %q; want true, %v, %q", z.ID, dz.Task.AllowFailedParents, dz.Task.Parents, dz.Task.Workflow, z.Parents, w.ID)
	}
	if res, err := tr.Results(h.ctx(), dz.Task.Parents...); err != nil || len(res) != 1 || string(res[q.ID]) != `"q"` {
		h.t.Errorf("Tracker.Results of the parents of %s = %q, %v; want only %s's result", z.ID, res, err, q.ID)
	}
	h.ack(dz)
	dw := h.next()
	if dw.Task.ID != wt.ID {
		h.t.Fatalf("after %s succeeded, Poll claimed %s, want its dependent %s", z.ID, describe1(dw), wt.ID)
	}
	h.ack(dw)
	info := h.getWorkflow(ws, w.ID)
	if info.State != peonify.WorkflowFailed || info.Counts[peonify.StateDead] != 1 || info.Counts[peonify.StateCancelled] != 2 || info.Counts[peonify.StateDone] != 3 {
		h.t.Errorf("GetWorkflow(%s) = state %q, counts %v; want failed, 1 dead, 2 cancelled, 3 done", w.ID, info.State, info.Counts)
	}
}

// testWorkflowStaleAckDoesNotRelease checks that only the current claim's
// ack releases a dependent: after the parent's lease ended and it was
// claimed again, the first claim's ack leaves the child waiting; the
// current claim's ack releases it, once, however often it is repeated.
func testWorkflowStaleAckDoesNotRelease(h *harness) {
	ws, _ := h.workflows()
	h.needLease()
	w := &peonify.Workflow{}
	a := w.Add(h.wfTask("a"))
	b := w.Add(h.wfTask("b"), a)
	h.enqueueWorkflow(ws, w)
	d := h.next()
	d2 := h.reclaim(d)
	h.checkStaleResult("Ack", h.s.Ack(h.ctx(), d))
	h.wantStateNow(b.ID, peonify.StateWaiting, "the child after a stale ack of its parent")
	h.wantStateNow(a.ID, peonify.StateRunning, "the parent after a stale ack")
	h.quietWhileHeld([]peonify.Delivery{d2}, "the child waits for its parent's current claim, and the parent is leased until "+d2.Deadline.Format(time.StampMilli))
	h.ack(d2)
	h.ack(d2)
	h.checkStaleResult("Ack", h.s.Ack(h.ctx(), d))
	db := h.next()
	if db.Task.ID != b.ID {
		h.t.Fatalf("after the current ack of its parent, Poll claimed %s, want the child %s", describe1(db), b.ID)
	}
	h.ack(d2)
	h.nothingFor(h.f.Settle, "the child was released once, and is leased")
	h.wantStateNow(b.ID, peonify.StateRunning, "the child, released once")
	h.ack(db)
	if n := h.claims[b.ID]; n != 1 {
		h.t.Errorf("the child was delivered %d times, want once", n)
	}
}

// testWorkflowFanOut runs, through a real peonify.Processor, a task that
// spawns 1,000 children with peonify.Spawn; its dependent runs only after
// every child succeeded, and reads their results with ParentResults
// (Spawn adds the children to the dependents' parents).
func testWorkflowFanOut(h *harness) {
	ws, tr := h.workflows()
	w := &peonify.Workflow{ID: "peonifytest-" + peonify.NewID()}
	root := w.Add(h.wfTask("root"))
	sink := w.Add(h.wfTask("sink"), root)
	childType := h.typeOf() + ".child"
	h.enqueueWorkflow(ws, w)

	var (
		mu        sync.Mutex
		lastChild time.Time
		children  = map[string]bool{}
		sinkStart time.Time
		sinkSaw   map[string][]byte
		sinkErr   error
	)
	tl := peonify.TaskList{
		root.Type: peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			cs := make([]*peonify.Task, fanOut)
			for i := range cs {
				cs[i] = &peonify.Task{Type: childType, Payload: []byte(fmt.Sprint(i))}
			}
			return peonify.Spawn(ctx, cs...)
		}),
		childType: peonify.JSONResult(func(ctx context.Context, i int) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			lastChild = time.Now()
			children[fmt.Sprint(i)] = true
			return 2 * i, nil
		}),
		sink.Type: peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			res, err := peonify.ParentResults(ctx)
			mu.Lock()
			defer mu.Unlock()
			sinkStart, sinkSaw, sinkErr = time.Now(), res, err
			return nil
		}),
	}
	stop := h.runProcessor(tl)
	defer stop()
	// A thousand tasks through one processor: on a loaded machine an
	// embedded store under -race has taken over 20s.
	ctx, cancel := context.WithTimeout(h.ctx(), 4*h.f.Timeout)
	defer cancel()
	info, err := tr.Wait(ctx, sink.ID)
	if err != nil || info.State != peonify.StateDone {
		mu.Lock()
		n := len(children)
		mu.Unlock()
		h.t.Fatalf("Tracker.Wait for the fan-in task = state %q (LastError %q), %v; want done (%d of %d children ran)", info.State, info.LastError, err, n, fanOut)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(children) != fanOut {
		h.t.Errorf("%d of %d spawned children ran before the fan-in task", len(children), fanOut)
	}
	if !sinkStart.After(lastChild) {
		h.t.Errorf("the fan-in task started at %s, before the last child ended at %s", sinkStart.Format(time.StampMicro), lastChild.Format(time.StampMicro))
	}
	if sinkErr != nil {
		h.t.Fatalf("ParentResults in the fan-in task: %v", sinkErr)
	}
	sum := 0
	for _, r := range sinkSaw {
		var n int
		if err := json.Unmarshal(r, &n); err != nil {
			h.t.Fatalf("a child's result %q does not decode: %v", r, err)
		}
		sum += n
	}
	if len(sinkSaw) != fanOut || sum != fanOut*(fanOut-1) {
		h.t.Errorf("the fan-in task read %d results with ParentResults (sum %d), want the %d children's (sum %d): Spawn adds the children to the Parents of the spawning task's dependents",
			len(sinkSaw), sum, fanOut, fanOut*(fanOut-1))
	}
	wi := h.getWorkflow(ws, w.ID)
	if wi.State != peonify.WorkflowSucceeded || wi.Counts[peonify.StateDone] != fanOut+2 {
		h.t.Errorf("GetWorkflow(%s) = state %q, counts %v; want succeeded with %d done", w.ID, wi.State, wi.Counts, fanOut+2)
	}
	if len(wi.Tasks) != min(fanOut+2, peonify.MaxWorkflowTasksListed) {
		h.t.Errorf("GetWorkflow(%s) lists %d tasks, want %d (at most peonify.MaxWorkflowTasksListed)", w.ID, len(wi.Tasks), min(fanOut+2, peonify.MaxWorkflowTasksListed))
	}
}

// testCancelWorkflow checks CancelWorkflow: it cancels the workflow's
// unfinished tasks, running and waiting ones, and counts them; done tasks
// stay done; the running task's Extend then fails with ErrCancelled; an
// unknown workflow is ErrNotFound.
func testCancelWorkflow(h *harness) {
	ws, _ := h.workflows()
	w := &peonify.Workflow{ID: "peonifytest-" + peonify.NewID()}
	a := w.Add(h.wfTask("a"))
	b := w.Add(h.wfTask("b"), a)
	c := w.Add(h.wfTask("c"), b)
	other := w.Add(h.wfTask("other"))
	h.enqueueWorkflow(ws, w)
	var da peonify.Delivery
	for _, d := range h.collect(2, 10) {
		if d.Task.ID == other.ID {
			h.ackResult(d, []byte(`"done"`))
		} else {
			da = d
		}
	}
	n, err := ws.CancelWorkflow(h.ctx(), w.ID)
	if err != nil || n != 3 {
		h.t.Fatalf("CancelWorkflow = %d, %v; want 3 (one running, two waiting), nil", n, err)
	}
	for _, tk := range []*peonify.Task{a, b, c} {
		h.wantCancelled(tk.ID, "a task of a cancelled workflow")
	}
	h.wantStateNow(other.ID, peonify.StateDone, "a done task of a cancelled workflow")
	if h.ext != nil && h.f.Lease > 0 {
		_, err := h.ext.Extend(h.ctx(), da, h.f.Lease)
		h.noteLate(da.Deadline)
		if !errors.Is(err, peonify.ErrCancelled) {
			h.failf("Extend of a running task of a cancelled workflow returned %v, want an error wrapping peonify.ErrCancelled", err)
		}
	}
	h.checkStaleResult("Ack of a cancelled task", h.s.Ack(h.ctx(), da))
	h.nothingFor(h.f.Settle, "every task of the workflow is finished")
	if info := h.getWorkflow(ws, w.ID); info.State != peonify.WorkflowCancelled {
		h.t.Errorf("GetWorkflow(%s).State = %q after CancelWorkflow, want %q", w.ID, info.State, peonify.WorkflowCancelled)
	}
	if n, err := ws.CancelWorkflow(h.ctx(), w.ID); err != nil || n != 0 {
		h.t.Errorf("a second CancelWorkflow = %d, %v; want 0, nil", n, err)
	}
	if _, err := ws.CancelWorkflow(h.ctx(), peonify.NewID()); !errors.Is(err, peonify.ErrNotFound) {
		h.t.Errorf("CancelWorkflow of an unknown workflow returned %v, want an error wrapping peonify.ErrNotFound", err)
	}
}

// testWorkflowDeleteCascades checks that deleting a task with waiting
// dependents cancels them (transitively), so that none waits forever, and
// that a waiting task can be deleted too.
func testWorkflowDeleteCascades(h *harness) {
	ws, _ := h.workflows()
	w := &peonify.Workflow{}
	a := w.Add(h.wfTask("a"))
	b := w.Add(h.wfTask("b"), a)
	c := w.Add(h.wfTask("c"), b)
	x := w.Add(h.wfTask("x"))
	y := w.Add(h.wfTask("y"), x)
	z := w.Add(h.wfTask("z"), y)
	h.enqueueWorkflow(ws, w)
	if n, err := h.ins.Delete(h.ctx(), a.ID, y.ID); err != nil || n != 2 {
		h.t.Fatalf("Inspector.Delete of a pending and a waiting task = %d, %v; want 2, nil", n, err)
	}
	h.wantNotFound("after Delete", a.ID, y.ID)
	h.wantReasonNames(b.ID, a.ID, "the dependent of a deleted task")
	h.wantReasonNames(c.ID, b.ID, "the dependent of a cancelled dependent")
	h.wantReasonNames(z.ID, y.ID, "the dependent of a deleted waiting task")
	d := h.next()
	if d.Task.ID != x.ID {
		h.t.Fatalf("Poll claimed %s, want %s, the only task left to run", describe1(d), x.ID)
	}
	h.ack(d)
	h.nothingFor(h.f.Settle, "the deleted task's dependents are cancelled")
	if info := h.getWorkflow(ws, w.ID); info.State != peonify.WorkflowCancelled || info.Counts[peonify.StateCancelled] != 3 {
		h.t.Errorf("GetWorkflow = state %q, counts %v; want cancelled, 3 cancelled (x's done task may be gone or done)", info.State, info.Counts)
	}
}
