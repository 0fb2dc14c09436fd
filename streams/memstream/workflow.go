package memstream

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/peonify/peonify"
)

// EnqueueWorkflow stores the tasks of w at once, under the stream's lock
// (see peonify.WorkflowStore): the tasks without parents are pending (or
// scheduled until their RunAt), the others wait in StateWaiting until
// every parent has finished. It prepares w first (see
// peonify.Workflow.Prepare). If a task ID of w is stored already, or a
// task of a workflow with w's ID, or a live task holds the UniqueKey of
// one of w's tasks, it stores nothing and returns a *peonify.DuplicateError
// naming them.
//
// Each task keeps a list of its dependents and a count of the parents it
// waits for, so that finishing a task costs O(its dependents).
func (s *Stream) EnqueueWorkflow(ctx context.Context, w *peonify.Workflow) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	if err := w.Prepare(now); err != nil {
		return err
	}
	if _, err := s.lockAdvanced(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if len(s.workflows[w.ID]) > 0 {
		return &peonify.DuplicateError{IDs: []string{w.ID}}
	}
	if dups := s.duplicates(w.Tasks); dups != nil {
		return &peonify.DuplicateError{IDs: dups}
	}
	s.insertGraph(w.Tasks, nil, now)
	return nil
}

// duplicates returns the IDs of tasks that are stored already, or whose
// UniqueKey a live task (or another of tasks) holds. s.mu must be held.
func (s *Stream) duplicates(tasks []*peonify.Task) []string {
	var dups []string
	keys := make(map[string]bool)
	for _, t := range tasks {
		if s.byID[t.ID] != nil {
			dups = append(dups, t.ID)
			continue
		}
		if k := t.UniqueKey; k != "" {
			if s.byUnique[k] != nil || keys[k] {
				dups = append(dups, t.ID)
			}
			keys[k] = true
		}
	}
	return dups
}

// insertGraph stores tasks, prepared and checked for duplicates, whose
// parents are among them or in stored: a task with parents waits for
// those that have not finished yet (a stored parent that was told its
// dependents already counts as finished), the others are queued. It
// returns the new entries. s.mu must be held.
func (s *Stream) insertGraph(tasks []*peonify.Task, stored map[string]*entry, now time.Time) []*entry {
	es := make(map[string]*entry, len(tasks))
	out := make([]*entry, 0, len(tasks))
	for _, t := range tasks {
		e := s.store(t, now)
		es[t.ID] = e
		out = append(out, e)
	}
	for _, e := range out {
		for _, p := range e.task.Parents {
			pe := es[p]
			if pe == nil {
				pe = stored[p]
			}
			if pe == nil || pe.settled {
				continue
			}
			pe.dependents = append(pe.dependents, e)
			e.waitingOn++
		}
		if e.waitingOn > 0 {
			e.st = stateWaiting
			s.waiting.push(e)
			continue
		}
		s.release(e, now)
	}
	s.peak = max(s.peak, len(s.byID))
	return out
}

// Spawn adds children to the workflow of the running task that parent
// delivered (see peonify.WorkflowStore), under the stream's lock: it fails
// with an error wrapping peonify.ErrLeaseLost, storing nothing, if the
// claim is no longer current. Children already stored (a duplicate run of
// the parent) are skipped. Each new child is added to the Parents of every
// dependent of the spawning task that still waits, so that the dependent
// waits for it too and reads its result with peonify.ParentResults.
func (s *Stream) Spawn(ctx context.Context, parent peonify.Delivery, children ...*peonify.Task) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	pe, err := s.lockCurrent(parent)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	wf := pe.task.Workflow
	if wf == "" {
		return fmt.Errorf("memstream: task %s is not in a workflow, so it cannot spawn children: enqueue it with EnqueueWorkflow", pe.task.ID)
	}
	var fresh []*peonify.Task
	stored := make(map[string]*entry)
	for _, c := range children {
		if c == nil || c.Workflow != wf {
			return fmt.Errorf("memstream: a child spawned by task %s is nil or not of its workflow %s: spawn with peonify.Spawn", pe.task.ID, wf)
		}
		if e := s.byID[c.ID]; e != nil {
			stored[c.ID] = e
			continue
		}
		fresh = append(fresh, c)
	}
	if len(fresh) == 0 {
		return nil
	}
	if dups := s.duplicates(fresh); dups != nil {
		return &peonify.DuplicateError{IDs: dups}
	}
	news := s.insertGraph(fresh, stored, now)
	for _, d := range pe.dependents {
		if d.st != stateWaiting {
			continue
		}
		for _, c := range news {
			c.dependents = append(c.dependents, d)
			d.waitingOn++
			d.t.Parents = append(d.t.Parents, c.task.ID)
		}
	}
	return nil
}

// GetWorkflow returns the state of the workflow with this id, its task
// counts, and its first peonify.MaxWorkflowTasksListed tasks by ID, or an
// error wrapping peonify.ErrNotFound if no task of it is stored.
func (s *Stream) GetWorkflow(ctx context.Context, id string) (peonify.WorkflowInfo, error) {
	if _, err := s.lockAdvancedCtx(ctx); err != nil {
		return peonify.WorkflowInfo{}, err
	}
	defer s.mu.Unlock()
	set := s.workflows[id]
	if len(set) == 0 {
		return peonify.WorkflowInfo{}, errNoWorkflow(id)
	}
	info := peonify.WorkflowInfo{ID: id, Counts: make(map[peonify.State]int)}
	es := make([]*entry, 0, len(set))
	for e := range set {
		es = append(es, e)
		info.Counts[e.st.public()]++
		if info.CreatedAt.IsZero() || e.task.EnqueuedAt.Before(info.CreatedAt) {
			info.CreatedAt = e.task.EnqueuedAt
		}
		if e.updated.After(info.UpdatedAt) {
			info.UpdatedAt = e.updated
		}
	}
	info.State = peonify.WorkflowStateOf(info.Counts)
	slices.SortFunc(es, func(a, b *entry) int { return strings.Compare(a.task.ID, b.task.ID) })
	es = es[:min(len(es), peonify.MaxWorkflowTasksListed)]
	info.Tasks = make([]peonify.TaskInfo, len(es))
	for i, e := range es {
		info.Tasks[i] = e.info()
		info.Tasks[i].Result = nil
	}
	return info, nil
}

// CancelWorkflow cancels every task of the workflow that has not finished,
// as Cancel does, and returns how many, or an error wrapping
// peonify.ErrNotFound if no task of it is stored.
func (s *Stream) CancelWorkflow(ctx context.Context, id string) (int, error) {
	now, err := s.lockAdvancedCtx(ctx)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	set := s.workflows[id]
	if len(set) == 0 {
		return 0, errNoWorkflow(id)
	}
	es := make([]*entry, 0, len(set))
	for e := range set {
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	return s.cancel(es, cancelReason, now), nil
}
