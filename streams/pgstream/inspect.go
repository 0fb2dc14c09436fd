package pgstream

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/peonify/peonify"
)

// Counts returns the number of tasks of the queue in each state; states
// with no tasks are missing. A pending task whose RunAt is in the future
// counts as scheduled.
func (s *Stream) Counts(ctx context.Context) (map[peonify.State]int, error) {
	if s.closed.Load() {
		return nil, peonify.ErrClosed
	}
	rows, err := s.pool.Query(ctx, s.sql.counts, s.cfg.Queue)
	if err != nil {
		return nil, s.dbError("counting tasks", err)
	}
	counts := make(map[peonify.State]int)
	var (
		state string
		n     int
	)
	_, err = pgx.ForEachRow(rows, []any{&state, &n}, func() error {
		counts[peonify.State(state)] = n
		return nil
	})
	if err != nil {
		return nil, s.dbError("counting tasks", err)
	}
	return counts, nil
}

// stateFilter turns an Inspector state into the stored state and, for the
// two faces of "pending", whether run_at must be in the future.
func stateFilter(st peonify.State) (string, *bool, error) {
	future, now := true, false
	switch st {
	case peonify.StatePending:
		return "pending", &now, nil
	case peonify.StateScheduled:
		return "pending", &future, nil
	case peonify.StateRunning, peonify.StateDead, peonify.StateDone, peonify.StateWaiting, peonify.StateCancelled:
		return string(st), nil, nil
	}
	return "", nil, fmt.Errorf("pgstream: unknown task state %q: use one of peonify.States", st)
}

// List returns tasks of the queue in opts.State, ordered by ID: only
// those of opts.Type and opts.Key when they are set.
func (s *Stream) List(ctx context.Context, opts peonify.ListOptions) ([]peonify.TaskInfo, error) {
	if s.closed.Load() {
		return nil, peonify.ErrClosed
	}
	opts, err := opts.Normalize()
	if err != nil {
		return nil, fmt.Errorf("pgstream: %w", err)
	}
	state, future, err := stateFilter(opts.State)
	if err != nil {
		return nil, err
	}
	limit := opts.Limit
	var typ *string
	if opts.Type != "" {
		typ = &opts.Type
	}
	var key *string
	if opts.Key != "" {
		key = &opts.Key
	}
	rows, err := s.pool.Query(ctx, s.sql.list, s.cfg.Queue, state, typ, opts.After, limit, future, key)
	if err != nil {
		return nil, s.dbError("listing tasks", err)
	}
	defer rows.Close()
	var infos []peonify.TaskInfo
	for rows.Next() {
		info, _, err := scanTask(rows)
		if err != nil {
			return nil, s.dbError("listing tasks", err)
		}
		infos = append(infos, info)
	}
	if err := rows.Err(); err != nil {
		return nil, s.dbError("listing tasks", err)
	}
	return infos, nil
}

// Get returns one task of the queue, or an error wrapping
// peonify.ErrNotFound.
func (s *Stream) Get(ctx context.Context, id string) (peonify.TaskInfo, error) {
	if s.closed.Load() {
		return peonify.TaskInfo{}, peonify.ErrClosed
	}
	rows, err := s.pool.Query(ctx, s.sql.get, s.cfg.Queue, id)
	if err != nil {
		return peonify.TaskInfo{}, s.dbError("reading task "+id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return peonify.TaskInfo{}, s.dbError("reading task "+id, err)
		}
		return peonify.TaskInfo{}, fmt.Errorf("pgstream: task %q in queue %q: %w", id, s.cfg.Queue, peonify.ErrNotFound)
	}
	info, _, err := scanTask(rows)
	if err != nil {
		return peonify.TaskInfo{}, s.dbError("reading task "+id, err)
	}
	return info, nil
}

// Retry makes dead tasks pending again with a fresh attempt count; with no
// ids it retries every dead task of the queue. A dead task whose UniqueKey
// now belongs to another live task is left dead. It returns how many it
// retried.
func (s *Stream) Retry(ctx context.Context, ids ...string) (int, error) {
	if s.closed.Load() {
		return 0, peonify.ErrClosed
	}
	var arg []string
	if len(ids) > 0 {
		arg = ids
	}
	var n, notified int
	if err := s.pool.QueryRow(ctx, s.sql.retry, s.cfg.Queue, arg, s.channel).Scan(&n, &notified); err != nil {
		return 0, s.dbError("retrying dead tasks", err)
	}
	if n > 0 {
		s.signal()
	}
	return n, nil
}

// Delete removes the tasks with the given ids that are not running, and
// returns how many it removed. Deleting a waiting, pending or scheduled
// workflow task cancels its dependents (with the reason "parent <id>
// deleted"), or releases those that allow failed parents, in the same
// transaction.
func (s *Stream) Delete(ctx context.Context, ids ...string) (int, error) {
	if s.closed.Load() {
		return 0, peonify.ErrClosed
	}
	if len(ids) == 0 {
		return 0, nil
	}
	n, err := s.deleteSettled(ctx, s.sql.deleteIDs, s.cfg.Queue, ids, s.fin)
	if err != nil {
		return 0, s.dbError("deleting tasks", err)
	}
	if n > 0 && s.plan.Load() != nil {
		s.signal() // a deleted task may have held back its key (Ordered)
	}
	return n, nil
}

// deleteSettled runs a delete statement (deleteIDs or purge) and, in the
// same transaction, cancels or releases the dependents of the unfinished
// workflow tasks it deleted. It returns how many tasks it deleted.
func (s *Stream) deleteSettled(ctx context.Context, q string, args ...any) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var wf []string
		if err := tx.QueryRow(ctx, q, args...).Scan(&n, &wf); err != nil {
			return err
		}
		whys := make([]string, len(wf))
		for i := range whys {
			whys[i] = "deleted"
		}
		return s.settle(ctx, tx, wf, whys, true)
	})
	if err != nil {
		return 0, err
	}
	if n > 0 {
		s.kickWaiters()
	}
	return n, nil
}

// Purge removes every task of the queue in state: StateDead, StateDone,
// StateCancelled, StateWaiting, StatePending (ready tasks) or
// StateScheduled. Running tasks cannot be purged. Unfinished workflow
// tasks settle their dependents as Delete does. It returns how many it
// removed.
func (s *Stream) Purge(ctx context.Context, state peonify.State) (int, error) {
	if s.closed.Load() {
		return 0, peonify.ErrClosed
	}
	if state == peonify.StateRunning {
		return 0, errors.New("pgstream: cannot purge running tasks: wait for them to finish or their leases to expire")
	}
	st, future, err := stateFilter(state)
	if err != nil {
		return 0, err
	}
	n, err := s.deleteSettled(ctx, s.sql.purge, s.cfg.Queue, st, s.fin, future)
	if err != nil {
		return 0, s.dbError("purging "+string(state)+" tasks", err)
	}
	return n, nil
}

// Pause stops delivery from the queue, for every processor on it: Poll
// returns nothing until Resume. Enqueueing goes on. Running tasks are not
// affected.
func (s *Stream) Pause(ctx context.Context) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	if _, err := s.pool.Exec(ctx, s.sql.pause, s.cfg.Queue); err != nil {
		return s.dbError("pausing", err)
	}
	return nil
}

// Resume restarts delivery from a paused queue and wakes its processors.
func (s *Stream) Resume(ctx context.Context) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	var notified int
	if err := s.pool.QueryRow(ctx, s.sql.resume, s.cfg.Queue, s.channel).Scan(&notified); err != nil {
		return s.dbError("resuming", err)
	}
	s.signal()
	return nil
}

// Paused reports whether the queue is paused.
func (s *Stream) Paused(ctx context.Context) (bool, error) {
	if s.closed.Load() {
		return false, peonify.ErrClosed
	}
	var p bool
	if err := s.pool.QueryRow(ctx, s.sql.paused, s.cfg.Queue).Scan(&p); err != nil {
		return false, s.dbError("reading the pause state", err)
	}
	return p, nil
}
