package peonifytest

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/peonify/peonify"
)

// testScheduled checks that a task is not delivered before its RunAt, is
// delivered after it, and that a RunAt in the past means now.
func testScheduled(h *harness) {
	if h.f.NoScheduling {
		h.t.Skip("Features.NoScheduling: the stream cannot hold a task until its RunAt")
	}
	runAt := time.Now().Add(nackDelay)
	late, due := h.newTask(), h.newTask()
	late.RunAt = runAt
	due.RunAt = time.Now().Add(-time.Hour)
	h.enqueue(late, due)

	d := h.next()
	if d.Task.ID != due.ID {
		h.t.Fatalf("Poll returned %s; want task %s, whose RunAt is in the past, and not task %s, due at %s",
			describe1(d), due.ID, late.ID, runAt.Format(time.StampMilli))
	}
	h.ack(d)
	h.wantState(late.ID, peonify.StateScheduled, "before its RunAt")
	d = h.nextAfter(runAt.Add(-slack), "a task is scheduled for "+runAt.Format(time.StampMilli))
	if d.Task.ID != late.ID {
		h.t.Fatalf("after its RunAt, Poll returned %s, want task %s", describe1(d), late.ID)
	}
	if d.Task.Attempt != 1 {
		h.t.Errorf("a scheduled task's first delivery has Attempt %d, want 1", d.Task.Attempt)
	}
	h.ack(d)
}

// testPriority checks that ready tasks are delivered highest priority
// first.
func testPriority(h *harness) {
	if h.f.NoPriority {
		h.t.Skip("Features.NoPriority: the stream does not order tasks by priority")
	}
	prios := []int{1, 5, -3, 10, 0, 7}
	tasks := h.newTasks(len(prios))
	for i, tk := range tasks {
		tk.Priority = prios[i]
	}
	h.enqueue(tasks...)

	var got []int
	for range tasks {
		d := h.next()
		got = append(got, d.Task.Priority)
		h.ack(d)
	}
	want := slices.Clone(prios)
	slices.SortFunc(want, func(a, b int) int { return b - a })
	if !slices.Equal(got, want) {
		h.t.Errorf("one Poll(1) after another delivered priorities %v, want %v (highest first; set Features.NoPriority if the stream cannot)", got, want)
	}
}

// wantDuplicate checks that err reports the tasks with the given IDs as
// duplicates.
func (h *harness) wantDuplicate(err error, what string, ids ...string) {
	h.t.Helper()
	if !errors.Is(err, peonify.ErrDuplicate) {
		h.t.Errorf("%s returned %v, want an error matching peonify.ErrDuplicate", what, err)
		return
	}
	if h.enq == nil {
		return
	}
	var de *peonify.DuplicateError
	if !errors.As(err, &de) {
		h.t.Errorf("%s returned %v, want a *peonify.DuplicateError naming the duplicates", what, err)
		return
	}
	if !slices.Equal(de.IDs, ids) {
		h.t.Errorf("%s returned a DuplicateError for %v, want %v", what, de.IDs, ids)
	}
}

// testDuplicateID checks that a task ID is stored once: a second Enqueue
// with it reports ErrDuplicate, stores the other tasks of the call, and
// keeps the first task as it was.
func testDuplicateID(h *harness) {
	if h.f.NoDuplicateCheck {
		h.t.Skip("Features.NoDuplicateCheck: the stream does not detect duplicate task IDs")
	}
	first := h.newTask()
	h.enqueue(first)
	again := &peonify.Task{ID: first.ID, Type: first.Type, Payload: []byte("second copy")}
	other := h.newTask()
	h.wantDuplicate(h.tryEnqueue(again.Clone(), other), "Enqueue of a stored ID along with a new task", first.ID)

	ds := h.collect(2, 10)
	for _, d := range ds {
		switch d.Task.ID {
		case first.ID:
			h.checkTask(d.Task, first)
		case other.ID:
			h.checkTask(d.Task, other)
		default:
			h.t.Errorf("Poll returned %s, which was not enqueued", describe1(d))
		}
	}
	if ds[0].Task.ID == ds[1].Task.ID {
		h.t.Errorf("task %s was stored twice", ds[0].Task.ID)
	}
	h.wantDuplicate(h.tryEnqueue(again.Clone()), "Enqueue of the ID of a running task", first.ID)
	h.ack(ds...)
	h.nothingUntil(h.afterLease(latestDeadline(ds)), fmt.Sprintf("task %s was stored once and acked", first.ID))
}

// testDuplicateUniqueKey checks that a UniqueKey is held by one live task
// at a time, and freed when that task is acked.
func testDuplicateUniqueKey(h *harness) {
	if h.f.NoDuplicateCheck || h.f.NoUniqueKey {
		h.t.Skip("Features.NoDuplicateCheck or NoUniqueKey: the stream does not detect duplicate unique keys")
	}
	key := "peonifytest-" + peonify.NewID()
	keyed := func() *peonify.Task {
		tk := h.newTask()
		tk.UniqueKey = key
		return tk
	}
	first := keyed()
	h.enqueue(first)
	dup := keyed()
	h.wantDuplicate(h.tryEnqueue(dup), "Enqueue of a second pending task with the same UniqueKey", dup.ID)
	d := h.next()
	if d.Task.ID != first.ID {
		h.t.Fatalf("Poll returned %s, want task %s (the first with its UniqueKey)", describe1(d), first.ID)
	}
	dup = keyed()
	h.wantDuplicate(h.tryEnqueue(dup), "Enqueue of a task whose UniqueKey a running task holds", dup.ID)
	h.ack(d)

	after := keyed()
	if err := h.tryEnqueue(after); err != nil {
		h.t.Fatalf("Enqueue with a UniqueKey whose task was acked: %v; the key must be free once no live task holds it", err)
	}
	d = h.next()
	if d.Task.ID != after.ID {
		h.t.Errorf("Poll returned %s, want task %s", describe1(d), after.ID)
	}
	h.ack(d)
	h.nothingUntil(h.afterLease(d.Deadline), "every stored task was acked")
}

// testInvalidTask checks that Enqueue rejects a task without a Type, and a
// nil task, without storing anything.
func testInvalidTask(h *harness) {
	h.needEnqueuer()
	bad := &peonify.Task{ID: peonify.NewID(), Payload: []byte("no type")}
	err := h.tryEnqueue(bad)
	var ie *peonify.InvalidTaskError
	if !errors.As(err, &ie) {
		h.t.Errorf("Enqueue of a task without a Type returned %v, want a *peonify.InvalidTaskError (see Task.Prepare)", err)
	}
	noPanic(h.t, "Enqueue(nil task)", func() {
		if err := h.tryEnqueue(nil); err == nil {
			h.t.Error("Enqueue of a nil task returned nil, want an error")
		}
	})
	h.nothingFor(h.f.Settle, "only invalid tasks were enqueued")
}
