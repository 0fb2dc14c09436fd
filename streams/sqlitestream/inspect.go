package sqlitestream

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/peonify/peonify"
)

// The Inspector reports the state a task is in now, which is not always the
// state stored: a scheduled task whose time has come and a running task whose
// lease ended are pending, though the stored state changes only at the next
// poll. stateWhere returns the SQL condition for a state as it is reported,
// with ?1 standing for the current time in Unix nanoseconds.
func stateWhere(state peonify.State) (string, error) {
	switch state {
	case peonify.StatePending:
		return `(state = 'pending' OR (state = 'scheduled' AND visible_at <= ?1)
			OR (state = 'running' AND visible_at <= ?1))`, nil
	case peonify.StateScheduled:
		return `(state = 'scheduled' AND visible_at > ?1)`, nil
	case peonify.StateRunning:
		return `(state = 'running' AND visible_at > ?1)`, nil
	case peonify.StateDead:
		return `(state = 'dead' AND ?1 = ?1)`, nil
	case peonify.StateDone:
		return `(state = 'done' AND ?1 = ?1)`, nil
	case peonify.StateWaiting:
		return `(state = 'waiting' AND ?1 = ?1)`, nil
	case peonify.StateCancelled:
		return `(state = 'cancelled' AND ?1 = ?1)`, nil
	}
	return "", fmt.Errorf("sqlitestream: unknown task state %q: use one of peonify.States", state)
}

// reported returns the state of r as the Inspector reports it at now.
func reported(r *taskRow, now time.Time) {
	switch r.State {
	case peonify.StateScheduled, peonify.StateRunning:
		if !r.visibleAt.After(now) {
			r.State = peonify.StatePending
			r.LeaseUntil = time.Time{}
		}
	case peonify.StatePending:
		r.LeaseUntil = time.Time{}
	}
}

// Counts returns how many tasks are in each state. Every state is in the
// map, with zero when it has no tasks.
func (s *Stream) Counts(ctx context.Context) (map[peonify.State]int, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	// Each count reads one state's partial index only.
	var pending, schedDue, sched, runExpired, running, dead, done, waiting, cancelled int
	err := s.db.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM peonify_tasks WHERE state = 'pending'),
		(SELECT count(*) FROM peonify_tasks WHERE state = 'scheduled' AND visible_at <= ?1),
		(SELECT count(*) FROM peonify_tasks WHERE state = 'scheduled'),
		(SELECT count(*) FROM peonify_tasks WHERE state = 'running' AND visible_at <= ?1),
		(SELECT count(*) FROM peonify_tasks WHERE state = 'running'),
		(SELECT count(*) FROM peonify_tasks WHERE state = 'dead'),
		(SELECT count(*) FROM peonify_tasks WHERE state = 'done'),
		(SELECT count(*) FROM peonify_tasks WHERE state = 'waiting'),
		(SELECT count(*) FROM peonify_tasks WHERE state = 'cancelled')`, s.now().UnixNano()).
		Scan(&pending, &schedDue, &sched, &runExpired, &running, &dead, &done, &waiting, &cancelled)
	if err != nil {
		return nil, fmt.Errorf("sqlitestream: count tasks: %w", err)
	}
	return map[peonify.State]int{
		peonify.StateWaiting:   waiting,
		peonify.StatePending:   pending + schedDue + runExpired,
		peonify.StateScheduled: sched - schedDue,
		peonify.StateRunning:   running - runExpired,
		peonify.StateDead:      dead,
		peonify.StateCancelled: cancelled,
		peonify.StateDone:      done,
	}, nil
}

// List returns up to opts.Limit tasks in opts.State ordered by ID, after
// the ID opts.After, of type opts.Type and with key opts.Key when they
// are set.
func (s *Stream) List(ctx context.Context, opts peonify.ListOptions) ([]peonify.TaskInfo, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	opts, err := opts.Normalize()
	if err != nil {
		return nil, fmt.Errorf("sqlitestream: %w", err)
	}
	where, err := stateWhere(opts.State)
	if err != nil {
		return nil, err
	}
	now := s.now()
	rows, err := s.db.QueryContext(ctx, `SELECT `+taskColumns+` FROM peonify_tasks
		WHERE `+where+` AND (?2 = '' OR type = ?2) AND (?5 = '' OR key = ?5) AND id > ?3 ORDER BY id LIMIT ?4`,
		now.UnixNano(), opts.Type, opts.After, opts.Limit, opts.Key)
	if err != nil {
		return nil, fmt.Errorf("sqlitestream: list %s tasks: %w", opts.State, err)
	}
	defer rows.Close()
	var infos []peonify.TaskInfo
	for rows.Next() {
		r, err := scanTask(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlitestream: list %s tasks: %w", opts.State, err)
		}
		reported(&r, now)
		infos = append(infos, r.TaskInfo)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestream: list %s tasks: %w", opts.State, err)
	}
	return infos, nil
}

// Get returns the task with this ID, or an error wrapping
// peonify.ErrNotFound.
func (s *Stream) Get(ctx context.Context, id string) (peonify.TaskInfo, error) {
	if s.isClosed() {
		return peonify.TaskInfo{}, errClosed
	}
	now := s.now()
	r, err := scanTask(s.db.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM peonify_tasks WHERE id = ?1`, id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return peonify.TaskInfo{}, fmt.Errorf("sqlitestream: task %q: %w", id, peonify.ErrNotFound)
	case err != nil:
		return peonify.TaskInfo{}, fmt.Errorf("sqlitestream: get task %q: %w", id, err)
	}
	reported(&r, now)
	return r.TaskInfo, nil
}

// Retry makes dead tasks pending again with no attempts counted; they keep
// their last error. With no ids it retries every dead task. A dead task
// whose UniqueKey was taken by a live task meanwhile stays dead. Retry
// returns how many tasks it made pending.
func (s *Stream) Retry(ctx context.Context, ids ...string) (int, error) {
	var total int64
	err := s.w.do(ctx, func(tx *wtx) error {
		total = 0
		const set = `UPDATE OR IGNORE peonify_tasks
			SET state = 'pending', attempts = 0, token = 0, visible_at = ?1, updated_at = ?1`
		now := tx.now.UnixNano()
		if len(ids) == 0 {
			n, err := tx.execSQL(set+` WHERE state = 'dead'`, now)
			total = n
			return err
		}
		for _, id := range ids {
			n, err := tx.execSQL(set+` WHERE id = ?2 AND state = 'dead'`, now, id)
			if err != nil {
				return err
			}
			total += n
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlitestream: retry dead tasks: %w", err)
	}
	if total > 0 {
		s.signal()
	}
	return int(total), nil
}

// Delete removes the tasks with these IDs unless they are running (leased
// and the lease has not ended), and returns how many it removed. The
// waiting dependents of a deleted task of a workflow that had not finished
// are cancelled, naming it, unless they allow failed parents.
func (s *Stream) Delete(ctx context.Context, ids ...string) (int, error) {
	var (
		total int64
		rel   released
	)
	err := s.w.do(ctx, func(tx *wtx) error {
		total = 0
		rel.reset()
		for _, id := range ids {
			var wf, state string
			err := tx.conn.QueryRowContext(context.Background(), `DELETE FROM peonify_tasks
				WHERE id = ?2 AND NOT (state = 'running' AND visible_at > ?1)
				RETURNING workflow, state`, tx.now.UnixNano(), id).Scan(&wf, &state)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				continue
			case err != nil:
				return err
			}
			total++
			if err := s.deleted(tx, id, wf, state, &rel); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlitestream: delete tasks: %w", err)
	}
	if total > 0 {
		s.waits.notify(ids...)
		s.afterRelease(&rel)
		if s.limits.Load() != nil {
			s.signal() // a deleted task may have held an ordered key
		}
	}
	return int(total), nil
}

// deleted applies the deletion of task id, of workflow wf, that was in
// state: a task of a workflow that had not finished ends for its
// dependents.
func (s *Stream) deleted(tx *wtx, id, wf, state string, rel *released) error {
	if wf == "" || peonify.State(state).Finished() {
		return nil
	}
	if _, err := tx.exec(tx.st.unwait, id); err != nil {
		return err
	}
	return s.finished(tx, id, finishDeleted, "", rel)
}

// Purge removes every task in state and returns how many it removed.
// Running tasks cannot be purged: their processors still hold them.
// Purging waiting, pending or scheduled tasks of a workflow cancels their
// dependents, as Delete does.
func (s *Stream) Purge(ctx context.Context, state peonify.State) (int, error) {
	if state == peonify.StateRunning {
		return 0, errors.New("sqlitestream: running tasks cannot be purged: " +
			"wait for them to finish, or stop their processors and purge them as pending once their leases end")
	}
	where, err := stateWhere(state)
	if err != nil {
		return 0, err
	}
	var (
		n   int64
		rel released
	)
	err = s.w.do(ctx, func(tx *wtx) (err error) {
		rel.reset()
		// The tasks of workflows among them, whose dependents wait:
		// finished tasks have released theirs already.
		type gone struct{ id, wf, state string }
		var wfs []gone
		if !state.Finished() {
			rows, err := tx.conn.QueryContext(context.Background(), `SELECT id, workflow, state FROM peonify_tasks
				WHERE `+where+` AND workflow <> ''`, tx.now.UnixNano())
			if err != nil {
				return err
			}
			for rows.Next() {
				var g gone
				if err := rows.Scan(&g.id, &g.wf, &g.state); err != nil {
					rows.Close()
					return err
				}
				wfs = append(wfs, g)
			}
			if err := closeRows(rows); err != nil {
				return err
			}
		}
		if n, err = tx.execSQL(`DELETE FROM peonify_tasks WHERE `+where, tx.now.UnixNano()); err != nil {
			return err
		}
		for _, g := range wfs {
			if err := s.deleted(tx, g.id, g.wf, g.state, &rel); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlitestream: purge %s tasks: %w", state, err)
	}
	if n > 0 {
		s.waits.notifyAll()
		s.afterRelease(&rel)
	}
	return int(n), nil
}

// isClosed reports whether Close was called.
func (s *Stream) isClosed() bool {
	select {
	case <-s.w.quit:
		return true
	default:
		return false
	}
}
