package sqlitestream

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/peonify/peonify"
)

// How a task's dependencies are kept (see the schema's third migration):
// a task with parents is stored in state 'waiting', with a row in
// peonify_waiting that counts its parents that have not finished, and a
// row in peonify_deps for each of them, found by parent. When a task
// finishes, in the transaction that finishes it (its Ack, its dead Nack,
// its cancellation or deletion), finished reads and deletes its rows of
// peonify_deps and counts it off each waiting dependent; a dependent
// whose count reaches zero becomes pending (or scheduled for its RunAt)
// and wakes the processor, as an Enqueue does. Since only the current
// claim's Ack changes the task (fencing), and its deps rows are gone
// afterwards, a duplicate run of a parent releases nothing.

// finish is how a task with dependents ended.
type finish int

const (
	finishDone finish = iota
	finishDead
	finishCancelled
	finishDeleted
)

func (f finish) String() string {
	switch f {
	case finishDone:
		return "done"
	case finishDead:
		return "dead"
	case finishCancelled:
		return "cancelled"
	}
	return "deleted"
}

// cancelledByRequest is the last error of a task cancelled by Cancel or
// CancelWorkflow.
const cancelledByRequest = "cancelled by request"

// released is what finishing tasks did to their dependents, for after the
// transaction commits: wake the processor, and the Wait calls of the
// dependents it cancelled.
type released struct {
	ready    bool      // a dependent became pending
	next     time.Time // the earliest RunAt of a dependent that became scheduled
	finished []string  // dependents cancelled with their parent
}

// reset forgets what a rolled back transaction recorded.
func (r *released) reset() {
	*r = released{finished: r.finished[:0]}
}

func (r *released) scheduled(at time.Time) {
	if r.next.IsZero() || at.Before(r.next) {
		r.next = at
	}
}

// afterRelease wakes the processor for the dependents that became ready
// and the waiters of those that were cancelled, once their transaction
// committed.
func (s *Stream) afterRelease(r *released) {
	if r.ready {
		s.signal()
	}
	if !r.next.IsZero() {
		s.wakeAt(r.next)
	}
	s.waits.notify(r.finished...)
}

// finished applies the end of task id (done, dead, cancelled or deleted,
// with reason) to the tasks that wait for it, in tx: a dependent counts it
// off if it succeeded, or if the dependent allows failed parents, and
// becomes ready when it has no parent left to wait for; otherwise the
// dependent is cancelled, naming the parent, and so in turn are its own
// dependents. Each task is visited once: a dependent is cancelled only
// from state waiting.
func (s *Stream) finished(tx *wtx, id string, how finish, reason string, rel *released) error {
	type end struct {
		id     string
		how    finish
		reason string
	}
	now := tx.now.UnixNano()
	queue := []end{{id, how, reason}}
	var ready, cancel []string
	for k := 0; k < len(queue); k++ {
		e := queue[k]
		ready, cancel = ready[:0], cancel[:0]
		rows, err := tx.st.countDown.Query(e.id, e.how == finishDone)
		if err != nil {
			return fmt.Errorf("release the dependents of task %s: %w", e.id, err)
		}
		for rows.Next() {
			var (
				child string
				n     int64
			)
			if err := rows.Scan(&child, &n); err != nil {
				rows.Close()
				return fmt.Errorf("release the dependents of task %s: %w", e.id, err)
			}
			if n <= 0 {
				ready = append(ready, child)
			}
		}
		if err := closeRows(rows); err != nil {
			return fmt.Errorf("release the dependents of task %s: %w", e.id, err)
		}
		if e.how != finishDone {
			rows, err := tx.st.dropWaits.Query(e.id)
			if err != nil {
				return fmt.Errorf("cancel the dependents of task %s: %w", e.id, err)
			}
			for rows.Next() {
				var child string
				if err := rows.Scan(&child); err != nil {
					rows.Close()
					return fmt.Errorf("cancel the dependents of task %s: %w", e.id, err)
				}
				cancel = append(cancel, child)
			}
			if err := closeRows(rows); err != nil {
				return fmt.Errorf("cancel the dependents of task %s: %w", e.id, err)
			}
		}
		if _, err := tx.exec(tx.st.dropDeps, e.id); err != nil {
			return fmt.Errorf("forget the dependents of task %s: %w", e.id, err)
		}
		for _, child := range ready {
			if err := release(tx, child, rel); err != nil {
				return err
			}
		}
		if len(cancel) == 0 {
			continue
		}
		why := "parent " + e.id + " " + e.how.String()
		if e.reason != "" {
			why += ": " + e.reason
		}
		why = peonify.TruncateReason(why)
		for _, child := range cancel {
			n, err := tx.exec(tx.st.cancelChild, child, why, now)
			if err != nil {
				return fmt.Errorf("cancel task %s, a dependent of task %s: %w", child, e.id, err)
			}
			if n > 0 {
				rel.finished = append(rel.finished, child)
				queue = append(queue, end{child, finishCancelled, why})
			}
		}
	}
	return nil
}

// release makes the waiting task id, whose parents have all finished,
// pending, or scheduled for its RunAt.
func release(tx *wtx, id string, rel *released) error {
	if _, err := tx.exec(tx.st.unwait, id); err != nil {
		return fmt.Errorf("release task %s: %w", id, err)
	}
	var (
		state   string
		visible int64
	)
	err := tx.st.wakeUp.QueryRow(id, tx.now.UnixNano()).Scan(&state, &visible)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil // deleted, or cancelled meanwhile
	case err != nil:
		return fmt.Errorf("release task %s: %w", id, err)
	case state == "pending":
		rel.ready = true
	default:
		rel.scheduled(time.Unix(0, visible))
	}
	return nil
}

func closeRows(rows *sql.Rows) error {
	if err := rows.Err(); err != nil {
		rows.Close()
		return err
	}
	return rows.Close()
}

// EnqueueWorkflow stores the tasks of w in one transaction, after
// w.Prepare (see peonify.WorkflowStore): the tasks without parents are
// pending (or scheduled for their RunAt), the others waiting, each until
// its last parent finishes. If a task's ID, or its UniqueKey among the
// live tasks, or w's ID is in the file already, it stores nothing and
// returns a *peonify.DuplicateError naming them. A workflow of 10,000
// tasks is one transaction of a few tens of milliseconds.
func (s *Stream) EnqueueWorkflow(ctx context.Context, w *peonify.Workflow) error {
	now := s.now()
	if err := w.Prepare(now); err != nil {
		return err
	}
	rows := make([][]any, len(w.Tasks))
	for i, t := range w.Tasks {
		row, err := insertArgs(t, now)
		if err != nil {
			return err
		}
		rows[i] = row
	}
	var dups []string
	err := s.w.do(ctx, func(tx *wtx) error {
		dups = dups[:0]
		var exists bool
		if err := tx.st.wfExists.QueryRow(w.ID).Scan(&exists); err != nil {
			return fmt.Errorf("enqueue workflow %s: %w", w.ID, err)
		}
		if exists {
			dups = append(dups, w.ID)
			return nil
		}
		// The tasks are inserted after a savepoint, which undoes them if
		// one is a duplicate, without undoing the other operations of
		// the batch.
		if _, err := tx.execSQL("SAVEPOINT peonify_workflow"); err != nil {
			return fmt.Errorf("enqueue workflow %s: %w", w.ID, err)
		}
		for i, row := range rows {
			n, err := tx.exec(tx.st.insert, row...)
			if err != nil {
				return fmt.Errorf("enqueue task %s of workflow %s: %w", w.Tasks[i].ID, w.ID, err)
			}
			if n == 0 {
				dups = append(dups, w.Tasks[i].ID)
			}
		}
		if len(dups) > 0 {
			if _, err := tx.execSQL("ROLLBACK TO peonify_workflow; RELEASE peonify_workflow"); err != nil {
				return fmt.Errorf("enqueue workflow %s: undo it: %w", w.ID, err)
			}
			return nil
		}
		for _, t := range w.Tasks {
			if err := addParents(tx, t.ID, t.Parents, len(t.Parents), t.AllowFailedParents); err != nil {
				return err
			}
		}
		if _, err := tx.execSQL("RELEASE peonify_workflow"); err != nil {
			return fmt.Errorf("enqueue workflow %s: %w", w.ID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(dups) > 0 {
		return &peonify.DuplicateError{IDs: dups}
	}
	s.enqueued(now, w.Tasks)
	return nil
}

// addParents records that task id waits for n parents, the dependencies
// on which are in parents.
func addParents(tx *wtx, id string, parents []string, n int, allowFailed bool) error {
	if n == 0 {
		return nil
	}
	for _, p := range parents {
		if _, err := tx.exec(tx.st.insertDep, p, id); err != nil {
			return fmt.Errorf("record that task %s depends on %s: %w", id, p, err)
		}
	}
	if _, err := tx.exec(tx.st.insertWait, id, n, allowFailed); err != nil {
		return fmt.Errorf("record that task %s waits for its parents: %w", id, err)
	}
	return nil
}

// enqueued wakes the processor for the tasks just stored that are ready,
// and arms the timer for the first one scheduled.
func (s *Stream) enqueued(now time.Time, tasks []*peonify.Task) {
	var (
		ready bool
		next  time.Time
	)
	for _, t := range tasks {
		switch {
		case len(t.Parents) > 0:
		case t.RunAt.After(now):
			if next.IsZero() || t.RunAt.Before(next) {
				next = t.RunAt
			}
		default:
			ready = true
		}
	}
	if ready {
		s.signal()
	}
	if !next.IsZero() {
		s.wakeAt(next)
	}
}

// Spawn adds children to the workflow of the task that parent delivered
// (see peonify.WorkflowStore), in one transaction fenced like Ack: if
// parent's claim is no longer current, it stores nothing and returns an
// error wrapping peonify.ErrLeaseLost. Children whose ID is in the file
// already (a duplicate run of the parent), or whose UniqueKey a live task
// has, are skipped. Each waiting dependent of the spawning task also waits
// for the new children, which are added to its Task.Parents, so that
// peonify.ParentResults gives it their results too.
func (s *Stream) Spawn(ctx context.Context, parent peonify.Delivery, children ...*peonify.Task) error {
	if parent.Task == nil {
		return errors.New("sqlitestream: Spawn from a delivery without a Task: pass the delivery of the running task")
	}
	if len(children) == 0 {
		return nil
	}
	if parent.Token == 0 {
		return fmt.Errorf("sqlitestream: spawn from task %s without a Token: %w (pass a delivery Poll returned)",
			parent.Task.ID, peonify.ErrLeaseLost)
	}
	now := s.now()
	ids := make(map[string]bool, len(children))
	for _, c := range children {
		if c == nil || c.ID == "" {
			return &peonify.InvalidTaskError{Reason: "a child has no ID: spawn children with peonify.Spawn, which prepares them"}
		}
		ids[c.ID] = true
	}
	rows := make([][]any, len(children))
	for i, c := range children {
		for _, p := range c.Parents {
			if !ids[p] {
				return &peonify.InvalidTaskError{ID: c.ID, Reason: fmt.Sprintf("child depends on %s, which is not among the children spawned with it", p)}
			}
		}
		if c.EnqueuedAt.IsZero() {
			c.EnqueuedAt = now
		}
		row, err := insertArgs(c, now)
		if err != nil {
			return err
		}
		rows[i] = row
	}
	var (
		lost    bool
		invalid error
		rel     released
		added   []*peonify.Task
	)
	err := s.w.do(ctx, func(tx *wtx) error {
		lost, invalid, added = false, nil, added[:0]
		rel.reset()
		var wf string
		err := tx.st.claimWf.QueryRow(parent.Task.ID, int64(parent.Token)).Scan(&wf)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			lost = true
			return nil
		case err != nil:
			return fmt.Errorf("spawn from task %s: %w", parent.Task.ID, err)
		}
		for _, c := range children {
			if wf == "" || c.Workflow != wf {
				invalid = &peonify.InvalidTaskError{ID: c.ID, Reason: fmt.Sprintf(
					"child of task %s belongs to workflow %q, not to its parent's %q", parent.Task.ID, c.Workflow, wf)}
				return nil
			}
		}
		stored := make(map[string]bool, len(children))
		for i, row := range rows {
			n, err := tx.exec(tx.st.insert, row...)
			if err != nil {
				return fmt.Errorf("spawn task %s: %w", children[i].ID, err)
			}
			if n > 0 {
				stored[children[i].ID] = true
				added = append(added, children[i])
			}
		}
		if err := s.linkChildren(tx, added, stored, &rel); err != nil {
			return err
		}
		if len(added) == 0 {
			return nil
		}
		return s.extendDependents(tx, parent.Task.ID, added)
	})
	switch {
	case err != nil:
		return err
	case lost:
		return fmt.Errorf("sqlitestream: spawn from task %s: %w (it was acked, nacked, cancelled or claimed again); nothing stored",
			parent.Task.ID, peonify.ErrLeaseLost)
	case invalid != nil:
		return invalid
	}
	s.enqueued(now, added)
	s.afterRelease(&rel)
	return nil
}

// linkChildren records the dependencies of the children Spawn stored
// among themselves. A parent stored by an earlier call (a duplicate run
// may spawn fewer children, or others) counts only if it has not
// finished; one that failed, or is gone, cancels the child unless it
// allows failed parents.
func (s *Stream) linkChildren(tx *wtx, added []*peonify.Task, stored map[string]bool, rel *released) error {
	type failed struct{ id, why string }
	var fails []failed
	for _, c := range added {
		if len(c.Parents) == 0 {
			continue
		}
		var (
			deps []string
			why  string
		)
		for _, p := range c.Parents {
			if stored[p] {
				deps = append(deps, p)
				continue
			}
			var state string
			err := tx.st.stateOf.QueryRow(p).Scan(&state)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				why = "parent " + p + " deleted"
			case err != nil:
				return fmt.Errorf("read the state of task %s: %w", p, err)
			case state == "done":
			case state == "dead" || state == "cancelled":
				why = "parent " + p + " " + state
			default:
				deps = append(deps, p)
			}
		}
		if err := addParents(tx, c.ID, deps, len(deps), c.AllowFailedParents); err != nil {
			return err
		}
		switch {
		case why != "" && !c.AllowFailedParents:
			fails = append(fails, failed{c.ID, why})
		case len(deps) == 0:
			if err := release(tx, c.ID, rel); err != nil {
				return err
			}
		}
	}
	for _, f := range fails {
		if _, err := tx.exec(tx.st.unwait, f.id); err != nil {
			return fmt.Errorf("cancel task %s: %w", f.id, err)
		}
		n, err := tx.exec(tx.st.cancelChild, f.id, f.why, tx.now.UnixNano())
		if err != nil {
			return fmt.Errorf("cancel task %s: %w", f.id, err)
		}
		if n > 0 {
			rel.finished = append(rel.finished, f.id)
			if err := s.finished(tx, f.id, finishCancelled, f.why, rel); err != nil {
				return err
			}
		}
	}
	return nil
}

// extendDependents makes every waiting dependent of task id wait for the
// children it spawned too, and adds them to its parents.
func (s *Stream) extendDependents(tx *wtx, id string, added []*peonify.Task) error {
	rows, err := tx.st.addWaits.Query(id, len(added))
	if err != nil {
		return fmt.Errorf("add the children of task %s to its dependents: %w", id, err)
	}
	var deps []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			rows.Close()
			return fmt.Errorf("add the children of task %s to its dependents: %w", id, err)
		}
		deps = append(deps, d)
	}
	if err := closeRows(rows); err != nil {
		return fmt.Errorf("add the children of task %s to its dependents: %w", id, err)
	}
	for _, d := range deps {
		var parents sql.NullString
		if err := tx.conn.QueryRowContext(context.Background(),
			`SELECT parents FROM peonify_tasks WHERE id = ?1`, d).Scan(&parents); err != nil {
			return fmt.Errorf("read the parents of task %s: %w", d, err)
		}
		var list []string
		if parents.Valid {
			if err := json.Unmarshal([]byte(parents.String), &list); err != nil {
				return fmt.Errorf("task %s has an unreadable list of parents: %w", d, err)
			}
		}
		for _, c := range added {
			list = append(list, c.ID)
			if _, err := tx.exec(tx.st.insertDep, c.ID, d); err != nil {
				return fmt.Errorf("record that task %s depends on %s: %w", d, c.ID, err)
			}
		}
		b, err := json.Marshal(list)
		if err != nil {
			return fmt.Errorf("store the parents of task %s: %w", d, err)
		}
		if _, err := tx.execSQL(`UPDATE peonify_tasks SET parents = ?2 WHERE id = ?1`, d, string(b)); err != nil {
			return fmt.Errorf("store the parents of task %s: %w", d, err)
		}
	}
	return nil
}

// GetWorkflow returns the workflow with this ID (see
// peonify.WorkflowStore): its state, its tasks counted by state as the
// Inspector reports them, and its first peonify.MaxWorkflowTasksListed
// tasks by ID, without their results. It returns an error wrapping
// peonify.ErrNotFound if no task of the file belongs to it (its tasks
// may have been cleaned up: see Config.ResultRetention).
func (s *Stream) GetWorkflow(ctx context.Context, id string) (peonify.WorkflowInfo, error) {
	if s.isClosed() {
		return peonify.WorkflowInfo{}, errClosed
	}
	info := peonify.WorkflowInfo{ID: id, Counts: map[peonify.State]int{}}
	now := s.now()
	// One read transaction: the counts and the list see the same tasks.
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return info, fmt.Errorf("sqlitestream: get workflow %q: %w", id, err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT
			CASE WHEN state IN ('scheduled', 'running') AND visible_at <= ?2 THEN 'pending' ELSE state END AS st,
			count(*), min(enqueued_at), max(updated_at)
		FROM peonify_tasks WHERE workflow = ?1 AND workflow <> '' GROUP BY st`, id, now.UnixNano())
	if err != nil {
		return info, fmt.Errorf("sqlitestream: get workflow %q: %w", id, err)
	}
	var created, updated int64
	for rows.Next() {
		var (
			state      string
			n          int
			minEnq, up int64
		)
		if err := rows.Scan(&state, &n, &minEnq, &up); err != nil {
			rows.Close()
			return info, fmt.Errorf("sqlitestream: get workflow %q: %w", id, err)
		}
		info.Counts[peonify.State(state)] += n
		if created == 0 || minEnq < created {
			created = minEnq
		}
		updated = max(updated, up)
	}
	if err := closeRows(rows); err != nil {
		return info, fmt.Errorf("sqlitestream: get workflow %q: %w", id, err)
	}
	if len(info.Counts) == 0 {
		return info, fmt.Errorf("sqlitestream: workflow %q: %w", id, peonify.ErrNotFound)
	}
	info.State = peonify.WorkflowStateOf(info.Counts)
	info.CreatedAt, info.UpdatedAt = fromNanos(created), fromNanos(updated)
	rows, err = tx.QueryContext(ctx, `SELECT `+taskColumnsNoResult+` FROM peonify_tasks
		WHERE workflow = ?1 AND workflow <> '' ORDER BY id LIMIT ?2`, id, peonify.MaxWorkflowTasksListed)
	if err != nil {
		return info, fmt.Errorf("sqlitestream: list the tasks of workflow %q: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanTask(rows)
		if err != nil {
			return info, fmt.Errorf("sqlitestream: list the tasks of workflow %q: %w", id, err)
		}
		reported(&r, now)
		info.Tasks = append(info.Tasks, r.TaskInfo)
	}
	if err := rows.Err(); err != nil {
		return info, fmt.Errorf("sqlitestream: list the tasks of workflow %q: %w", id, err)
	}
	return info, nil
}

// CancelWorkflow cancels every task of the workflow that has not finished,
// as Cancel does, and returns how many. It returns an error wrapping
// peonify.ErrNotFound if no task of the file belongs to the workflow.
func (s *Stream) CancelWorkflow(ctx context.Context, id string) (int, error) {
	var (
		ids    []string
		exists bool
		rel    released
	)
	err := s.w.do(ctx, func(tx *wtx) error {
		ids = ids[:0]
		rel.reset()
		if err := tx.st.wfExists.QueryRow(id).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return nil
		}
		now := tx.now.UnixNano()
		rows, err := tx.conn.QueryContext(context.Background(), `UPDATE peonify_tasks
			SET state = 'cancelled', token = -token, last_error = ?2, visible_at = ?3, updated_at = ?3
			WHERE workflow = ?1 AND workflow <> '' AND state IN ('waiting', 'pending', 'scheduled', 'running')
			RETURNING id`, id, cancelledByRequest, now)
		if err != nil {
			return err
		}
		for rows.Next() {
			var t string
			if err := rows.Scan(&t); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, t)
		}
		if err := closeRows(rows); err != nil {
			return err
		}
		for _, t := range ids {
			if _, err := tx.exec(tx.st.unwait, t); err != nil {
				return err
			}
		}
		for _, t := range ids {
			if err := s.finished(tx, t, finishCancelled, cancelledByRequest, &rel); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlitestream: cancel workflow %q: %w", id, err)
	}
	if !exists {
		return 0, fmt.Errorf("sqlitestream: workflow %q: %w", id, peonify.ErrNotFound)
	}
	s.waits.notify(ids...)
	s.afterRelease(&rel)
	if len(ids) > 0 && s.limits.Load() != nil {
		s.signal() // running tasks of the workflow held permits
	}
	return len(ids), nil
}
