package redisstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/peonify/peonify"
)

// MaxWorkflowTasks is the most tasks EnqueueWorkflow stores, and Spawn
// adds, in one call. Each call is one script run, which holds the Redis
// server while it runs: 10,000 tasks took 110 to 180 ms of server time on
// a loaded 2-core test machine (see the README).
const MaxWorkflowTasks = 50000

// EnqueueWorkflow prepares w (see peonify.Workflow.Prepare) and stores
// all of its tasks in one script run: tasks without parents are added to
// the stream (or the schedule, with a RunAt in the future), the others
// wait in their task hashes (peonify.StateWaiting) until their parents
// have finished. If the workflow's ID has tasks stored already, or one of
// its tasks is stored already (its ID, within Config.DedupWindow its
// Enqueue, or its UniqueKey held by a live task), it stores nothing and
// returns a *peonify.DuplicateError naming them. At most
// MaxWorkflowTasks tasks.
func (s *Stream) EnqueueWorkflow(ctx context.Context, w *peonify.Workflow) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	if err := w.Prepare(time.Now()); err != nil {
		return err
	}
	if len(w.Tasks) > MaxWorkflowTasks {
		return &peonify.InvalidTaskError{Reason: fmt.Sprintf("workflow %s has %d tasks, more than redisstream.MaxWorkflowTasks (%d): split it, or add tasks from a running task with Spawn",
			w.ID, len(w.Tasks), MaxWorkflowTasks)}
	}
	args := make([]any, 0, 2+20*len(w.Tasks))
	args = append(args, max(s.cfg.DedupWindow.Milliseconds(), 0), w.ID)
	for _, t := range w.Tasks {
		var err error
		if args, err = appendTask(args, t); err != nil {
			return err
		}
	}
	res, err := s.runDurable(ctx, enqueueWorkflowScript, args...).Slice()
	if err != nil {
		return s.redisError("enqueueing workflow "+w.ID, err)
	}
	return s.stored(res, w.ID)
}

// stored reads the reply of enqueueWorkflowScript or spawnScript.
func (s *Stream) stored(res []any, wf string) error {
	status, _ := res[0].(int64)
	if status == 0 {
		dups, _ := res[1].([]any)
		ids := make([]string, 0, len(dups))
		for _, d := range dups {
			id, _ := d.(string)
			ids = append(ids, id)
		}
		return &peonify.DuplicateError{IDs: ids}
	}
	if len(res) != 3 {
		return s.redisError("storing tasks of workflow "+wf, errors.New("unexpected reply"))
	}
	if released, _ := res[1].(int64); released > 0 {
		s.signal()
	}
	if first, _ := res[2].(int64); first > 0 {
		s.noteDue(time.UnixMilli(first))
	}
	return nil
}

// appendTask adds the arguments of a task of a workflow (see
// WF.readTasks) to args.
func appendTask(args []any, t *peonify.Task) ([]any, error) {
	if err := checkHeaders(t); err != nil {
		return nil, err
	}
	f, err := fields(t)
	if err != nil {
		return nil, err
	}
	due := int64(0)
	if !t.RunAt.IsZero() {
		due = (t.RunAt.UnixMicro() + 999) / 1000 // never early
	}
	args = append(args, t.ID, t.UniqueKey, due, len(t.Parents))
	for _, p := range t.Parents {
		args = append(args, p)
	}
	args = append(args, t.EnqueuedAt.UnixMilli(), len(f)/2)
	return append(args, f...), nil
}

// Spawn adds children to the workflow of the task that parent delivered,
// in one script run fenced like Ack: if the claim is no longer current it
// stores nothing and returns an error wrapping peonify.ErrLeaseLost (or
// peonify.ErrCancelled, if the task was cancelled). Children stored
// already (a duplicate run of the parent) are skipped. A child waits for
// its parents among the children; every waiting dependent of the parent
// task waits for all the new children too, and has them added to its
// Parents, so that ParentResults has their results.
func (s *Stream) Spawn(ctx context.Context, parent peonify.Delivery, children ...*peonify.Task) error {
	if err := checkDelivery(s, parent, "Spawn"); err != nil {
		return err
	}
	wf := parent.Task.Workflow
	if wf == "" {
		return fmt.Errorf("redisstream: task %s is not in a workflow, so it cannot spawn children: enqueue it with EnqueueWorkflow", parent.Task.ID)
	}
	if len(children) == 0 {
		return nil
	}
	if len(children) > MaxWorkflowTasks {
		return &peonify.InvalidTaskError{Reason: fmt.Sprintf("Spawn of %d children, more than redisstream.MaxWorkflowTasks (%d)", len(children), MaxWorkflowTasks)}
	}
	now := time.Now()
	args := make([]any, 0, 5+20*len(children))
	args = append(args, ref(parent), parent.Token, parent.Task.ID, max(s.cfg.DedupWindow.Milliseconds(), 0), wf)
	for _, c := range children {
		switch {
		case c == nil:
			return &peonify.InvalidTaskError{Reason: "Spawn of a nil child"}
		case c.ID == "":
			return &peonify.InvalidTaskError{Reason: "Spawn of a child without an ID: call peonify.Spawn, which prepares children"}
		case c.Workflow != wf:
			return &peonify.InvalidTaskError{ID: c.ID, Reason: fmt.Sprintf("child belongs to workflow %q, not %q of the spawning task", c.Workflow, wf)}
		}
		if c.EnqueuedAt.IsZero() {
			c.EnqueuedAt = now
		}
		var err error
		if args, err = appendTask(args, c); err != nil {
			return err
		}
	}
	res, err := s.runDurable(ctx, spawnScript, args...).Slice()
	if err != nil {
		return s.redisError("spawning children of task "+parent.Task.ID, err)
	}
	if status, _ := res[0].(int64); status != 1 {
		cause := peonify.ErrLeaseLost
		if status == 2 {
			cause = peonify.ErrCancelled
		}
		return fmt.Errorf("redisstream: children of task %s not stored: %w", parent.Task.ID, cause)
	}
	return s.stored(res, wf)
}

// checkDelivery checks that d is a delivery of this open stream.
func checkDelivery(s *Stream, d peonify.Delivery, op string) error {
	if d.Task == nil {
		return fmt.Errorf("redisstream: %s of a delivery without a task", op)
	}
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	if ref(d) == "" {
		return fmt.Errorf("redisstream: %s of task %s, which is not a delivery from Poll: %w", op, d.Task.ID, peonify.ErrLeaseLost)
	}
	return nil
}

// GetWorkflow returns the workflow's state, its tasks counted by state,
// and its first peonify.MaxWorkflowTasksListed tasks by ID, without their
// results, or an error wrapping peonify.ErrNotFound. Its tasks are
// found through the workflow's sorted set (Keys.Workflow); done tasks
// count until their retention ends.
func (s *Stream) GetWorkflow(ctx context.Context, id string) (peonify.WorkflowInfo, error) {
	if s.closed.Load() {
		return peonify.WorkflowInfo{}, peonify.ErrClosed
	}
	res, err := s.run(ctx, workflowScript, id, s.cfg.ResultRetention.Milliseconds()).Slice()
	if err != nil {
		return peonify.WorkflowInfo{}, s.redisError("reading workflow "+id, err)
	}
	if len(res) == 0 {
		return peonify.WorkflowInfo{}, fmt.Errorf("redisstream: workflow %q in queue %q: %w", id, s.cfg.Queue, peonify.ErrNotFound)
	}
	info := peonify.WorkflowInfo{ID: id, Counts: make(map[peonify.State]int)}
	ids := make([]string, 0, len(res)/4)
	for i := 0; i+3 < len(res); i += 4 {
		tid, _ := res[i].(string)
		st, _ := res[i+1].(string)
		up, _ := res[i+2].(int64)
		enq := time.UnixMilli(toInt(res[i+3]))
		ids = append(ids, tid)
		info.Counts[peonify.State(st)]++
		if info.CreatedAt.IsZero() || enq.Before(info.CreatedAt) {
			info.CreatedAt = enq
		}
		if t := time.UnixMilli(up); t.After(info.UpdatedAt) {
			info.UpdatedAt = t
		}
	}
	info.State = peonify.WorkflowStateOf(info.Counts)
	slices.Sort(ids)
	ids = ids[:min(len(ids), peonify.MaxWorkflowTasksListed)]
	if info.Tasks, err = s.infos(ctx, ids); err != nil {
		return peonify.WorkflowInfo{}, err
	}
	for i := range info.Tasks {
		info.Tasks[i].Result = nil
	}
	return info, nil
}

// toInt reads an integer of a script's reply, sent as an integer or a
// string.
func toInt(v any) int64 {
	switch v := v.(type) {
	case int64:
		return v
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}

// CancelWorkflow cancels every task of the workflow that has not
// finished, as Cancel does, in one script run, and returns how many; an
// error wrapping peonify.ErrNotFound if the workflow has no tasks.
func (s *Stream) CancelWorkflow(ctx context.Context, id string) (int, error) {
	if s.closed.Load() {
		return 0, peonify.ErrClosed
	}
	n, released, err := s.cancelRun(ctx, cancelWorkflowScript, id)
	if err != nil {
		return 0, s.redisError("cancelling workflow "+id, err)
	}
	if n < 0 {
		return 0, fmt.Errorf("redisstream: workflow %q in queue %q: %w", id, s.cfg.Queue, peonify.ErrNotFound)
	}
	if released > 0 {
		s.signal()
	}
	return n, nil
}
