package peonify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Workflow is a set of tasks with dependencies between them, a directed
// acyclic graph, that a WorkflowStore enqueues atomically: all of its tasks
// or none. A task with Parents starts only when every parent has
// succeeded, and reads their results with ParentResults; a task without
// parents starts at once. If a parent goes dead or is cancelled, its
// dependents are cancelled with a reason naming it (and theirs in turn),
// unless they set AllowFailedParents: they then run once every parent has
// finished, whatever the outcome, which makes a batch callback ("when all
// of these are done, run this").
//
// Build one with Add, which fills IDs and Parents:
//
//	w := &peonify.Workflow{}
//	a := w.Add(&peonify.Task{Type: "fetch"})
//	b := w.Add(&peonify.Task{Type: "resize"}, a)
//	c := w.Add(&peonify.Task{Type: "thumbnail"}, a)
//	w.Add(&peonify.Task{Type: "publish"}, b, c)
//	err := store.EnqueueWorkflow(ctx, w)
//
// A running task can add tasks to its workflow with Spawn.
type Workflow struct {
	// ID identifies the workflow; EnqueueWorkflow fills an empty one with
	// NewID. At most MaxIDLen bytes.
	ID string

	// Tasks are the workflow's tasks. Each one's Workflow is set to ID,
	// and its Parents name other tasks of Tasks by ID.
	Tasks []*Task
}

// Add adds t to the workflow as a dependent of parents, which must have
// been added before, and returns t. It fills an empty t.ID with NewID, so
// that later tasks can name t as a parent.
func (w *Workflow) Add(t *Task, parents ...*Task) *Task {
	if t.ID == "" {
		t.ID = NewID()
	}
	for _, p := range parents {
		if p.ID == "" {
			p.ID = NewID()
		}
		t.Parents = append(t.Parents, p.ID)
	}
	w.Tasks = append(w.Tasks, t)
	return t
}

// Prepare checks the workflow and fills what EnqueueWorkflow fills: an
// empty ID, and each task's ID, EnqueuedAt and Workflow (see
// Task.Prepare). It returns an *InvalidTaskError if a task is invalid,
// belongs to another workflow, has an ID another task has, or names a
// parent that is not in the workflow, itself, or a parent twice, and if
// the dependencies form a cycle (naming a task on it). Stores call it at
// the top of EnqueueWorkflow, before storing anything.
func (w *Workflow) Prepare(now time.Time) error {
	if w == nil || len(w.Tasks) == 0 {
		return &InvalidTaskError{Reason: "workflow has no tasks: add some with Workflow.Add"}
	}
	if len(w.ID) > MaxIDLen {
		return &InvalidTaskError{Reason: fmt.Sprintf("workflow ID is longer than %d bytes", MaxIDLen)}
	}
	if w.ID == "" {
		w.ID = NewID()
	}
	return prepareGraph(w.ID, w.Tasks, now)
}

// prepareGraph prepares tasks of workflow wf whose parents are among tasks.
func prepareGraph(wf string, tasks []*Task, now time.Time) error {
	index := make(map[string]int, len(tasks))
	for i, t := range tasks {
		if t == nil {
			return &InvalidTaskError{Reason: fmt.Sprintf("workflow %s: task %d is nil", wf, i)}
		}
		if t.Workflow != "" && t.Workflow != wf {
			return &InvalidTaskError{ID: t.ID, Reason: fmt.Sprintf("task belongs to workflow %s, not %s", t.Workflow, wf)}
		}
		if err := t.validate(true); err != nil {
			return err
		}
		if t.ID == "" {
			t.ID = NewID()
		}
		if _, dup := index[t.ID]; dup {
			return &InvalidTaskError{ID: t.ID, Reason: fmt.Sprintf("workflow %s has two tasks with this ID", wf)}
		}
		index[t.ID] = i
	}
	// Kahn's algorithm: count each task's parents in the graph, and take
	// tasks whose parents are all taken; what is left is on a cycle.
	waiting := make([]int, len(tasks))
	children := make(map[int][]int)
	for i, t := range tasks {
		seen := make(map[string]bool, len(t.Parents))
		for _, p := range t.Parents {
			switch {
			case p == t.ID:
				return &InvalidTaskError{ID: t.ID, Reason: "task names itself as a parent"}
			case seen[p]:
				return &InvalidTaskError{ID: t.ID, Reason: fmt.Sprintf("task names parent %s twice", p)}
			}
			seen[p] = true
			j, ok := index[p]
			if !ok {
				return &InvalidTaskError{ID: t.ID, Reason: fmt.Sprintf("task depends on %s, which is not a task of workflow %s", p, wf)}
			}
			waiting[i]++
			children[j] = append(children[j], i)
		}
	}
	ready := make([]int, 0, len(tasks))
	for i, n := range waiting {
		if n == 0 {
			ready = append(ready, i)
		}
	}
	for k := 0; k < len(ready); k++ {
		for _, c := range children[ready[k]] {
			if waiting[c]--; waiting[c] == 0 {
				ready = append(ready, c)
			}
		}
	}
	if len(ready) < len(tasks) {
		for i, n := range waiting {
			if n > 0 {
				return &InvalidTaskError{ID: tasks[i].ID, Reason: fmt.Sprintf("workflow %s has a cycle through this task", wf)}
			}
		}
	}
	for _, t := range tasks {
		t.Workflow = wf
		if t.EnqueuedAt.IsZero() {
			t.EnqueuedAt = now
		}
	}
	return nil
}

// WorkflowStore is implemented by stores that run workflows: they release
// a task's dependents in the same transaction (or script) as its ack, so
// that a crash at any point never starts a dependent before all its
// parents succeeded, never releases it twice, and never leaves it waiting
// forever; a duplicate run of a parent (delivery is at-least-once) does
// not release its dependents twice, because only the current claim's ack
// counts. Tasks waiting for their parents are in StateWaiting.
//
// Deleting or purging a task that has dependents cancels them, as if it
// had been cancelled. Retrying a dead task does not bring back the
// dependents its death cancelled.
type WorkflowStore interface {
	// EnqueueWorkflow prepares w (see Workflow.Prepare) and stores all of
	// its tasks in one transaction: when it returns nil, all are durable;
	// when it returns an error, none was stored by this call. If the
	// workflow's ID or one of its task IDs is stored already, it stores
	// nothing and returns a *DuplicateError naming them, so that retrying
	// after an unknown outcome is safe.
	EnqueueWorkflow(ctx context.Context, w *Workflow) error

	// Spawn adds children to the workflow of the running task that parent
	// delivered, in one transaction that is fenced like Ack: it fails with
	// an error wrapping ErrLeaseLost (storing nothing) if the claim is no
	// longer current. The children's Parents name other children of the
	// same call. Every dependent of the spawning task also waits for all
	// the children, so a fan-out within a task is followed by its fan-in.
	// Children already stored (same ID: a duplicate run of the parent)
	// are not stored again; Spawn then returns nil.
	Spawn(ctx context.Context, parent Delivery, children ...*Task) error

	// GetWorkflow returns the workflow's state, its task counts by state,
	// and its first MaxWorkflowTasksListed tasks by ID (without their
	// results), or an error wrapping ErrNotFound.
	GetWorkflow(ctx context.Context, id string) (WorkflowInfo, error)

	// CancelWorkflow cancels every task of the workflow that has not
	// finished, as Tracker.Cancel does, and returns how many.
	CancelWorkflow(ctx context.Context, id string) (int, error)
}

// MaxWorkflowTasksListed is the most tasks WorkflowStore.GetWorkflow lists.
const MaxWorkflowTasksListed = 1000

// WorkflowState is a workflow's state, derived from its tasks' states.
type WorkflowState string

// The workflow states (see WorkflowStateOf).
const (
	WorkflowRunning   WorkflowState = "running"   // some tasks have not finished
	WorkflowSucceeded WorkflowState = "succeeded" // every task is done
	WorkflowFailed    WorkflowState = "failed"    // every task finished, and some are dead
	WorkflowCancelled WorkflowState = "cancelled" // every task finished, none is dead, and some were cancelled
)

// WorkflowStateOf returns the state of a workflow whose tasks are counted
// by state in counts.
func WorkflowStateOf(counts map[State]int) WorkflowState {
	for s, n := range counts {
		if n > 0 && !s.Finished() {
			return WorkflowRunning
		}
	}
	switch {
	case counts[StateDead] > 0:
		return WorkflowFailed
	case counts[StateCancelled] > 0:
		return WorkflowCancelled
	}
	return WorkflowSucceeded
}

// WorkflowInfo is a workflow as WorkflowStore.GetWorkflow shows it.
type WorkflowInfo struct {
	ID        string
	State     WorkflowState
	Counts    map[State]int // tasks by state
	Tasks     []TaskInfo    // the first MaxWorkflowTasksListed tasks by ID, without results
	CreatedAt time.Time     // when its first task was enqueued
	UpdatedAt time.Time     // when one of its tasks last changed
}

// Spawn adds children to the workflow of the running task whose context ctx
// is (see WorkflowStore.Spawn): they run at once, or after their parents
// among children, and the task's own dependents wait for all of them. A
// child's empty ID is filled with one derived from the task's ID and the
// child's rank among the children this run spawned, so that a second run
// of the task (delivery is at-least-once) spawns the same children, which
// are then not stored twice. Spawn stores nothing when it returns an
// error.
//
// It returns an error if ctx is not a task's context, if the task is not
// in a workflow, or, wrapping errors.ErrUnsupported, if its stream has no
// workflows.
func Spawn(ctx context.Context, children ...*Task) error {
	r := runOf(ctx)
	if r == nil {
		return errNotInTask
	}
	t := r.task
	if r.wf == nil {
		return fmt.Errorf("peonify: stream %s has no workflows: %w", r.st.name, errors.ErrUnsupported)
	}
	if t.Workflow == "" {
		return fmt.Errorf("peonify: task %s is not in a workflow, so it cannot spawn children: enqueue it with EnqueueWorkflow", t.ID)
	}
	if len(children) == 0 {
		return nil
	}
	r.mu.Lock()
	n := r.spawned
	for _, c := range children {
		if c != nil && c.ID == "" {
			n++
			c.ID = childID(t.ID, n)
		}
	}
	r.spawned = n
	r.mu.Unlock()
	if err := prepareGraph(t.Workflow, children, time.Now()); err != nil {
		return err
	}
	return r.wf.Spawn(ctx, r.delivery(), children...)
}

// childID derives the ID of the n-th child spawned by the task with ID
// parent.
func childID(parent string, n int) string {
	id := parent + ".c" + strconv.Itoa(n)
	if len(id) > MaxIDLen {
		id = parent[:MaxIDLen-len(id)+len(parent)] + id[len(parent):]
	}
	return id
}
