package sqlitestream

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peonify/peonify"
)

// waitRecheck is how often a Wait reads its task again without being
// woken: a task finished by another process sharing the file wakes no
// one in this one, unless the file watch (Config.WatchInterval) saw the
// commit first.
const waitRecheck = time.Second

// Results returns the results of the done tasks among ids that have one,
// by ID, in one query (see peonify.Tracker). A task that is not done, was
// done without a result, was cleaned up (see Config.ResultRetention) or
// never existed is missing from the map.
func (s *Stream) Results(ctx context.Context, ids ...string) (map[string][]byte, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	out := make(map[string][]byte, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, fmt.Errorf("sqlitestream: results: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, result FROM peonify_tasks
		WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'done' AND result IS NOT NULL`, string(list))
	if err != nil {
		return nil, fmt.Errorf("sqlitestream: results: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id  string
			res []byte
		)
		if err := rows.Scan(&id, &res); err != nil {
			return nil, fmt.Errorf("sqlitestream: results: %w", err)
		}
		if res == nil {
			res = []byte{}
		}
		out[id] = res
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestream: results: %w", err)
	}
	return out, nil
}

// SetProgress records p as the progress of the task that d delivered,
// fenced like Ack: for a claim that is no longer current it returns an
// error wrapping peonify.ErrLeaseLost, and one wrapping
// peonify.ErrCancelled if the task was cancelled. Get and List show the
// last progress while the task runs and after it finished.
func (s *Stream) SetProgress(ctx context.Context, d peonify.Delivery, p peonify.Progress) error {
	if d.Task == nil {
		return errors.New("sqlitestream: SetProgress of a delivery without a Task: pass the delivery of the running task")
	}
	if d.Token == 0 {
		return fmt.Errorf("sqlitestream: progress of task %s without a Token: %w (pass a delivery Poll returned)",
			d.Task.ID, peonify.ErrLeaseLost)
	}
	var lost, cancelled bool
	err := s.w.do(ctx, func(tx *wtx) error {
		at := p.UpdatedAt
		if at.IsZero() {
			at = tx.now
		}
		n, err := tx.exec(tx.st.progress, d.Task.ID, int64(d.Token), min(max(p.Fraction, 0), 1), p.Message,
			at.UnixNano(), tx.now.UnixNano())
		if err != nil {
			return fmt.Errorf("store the progress of task %s: %w", d.Task.ID, err)
		}
		lost = n == 0
		if lost {
			if cancelled, err = claimCancelled(tx, d); err != nil {
				return fmt.Errorf("store the progress of task %s: %w", d.Task.ID, err)
			}
		}
		return nil
	})
	switch {
	case err != nil:
		return err
	case cancelled:
		return fmt.Errorf("sqlitestream: progress of task %s: %w", d.Task.ID, peonify.ErrCancelled)
	case lost:
		return fmt.Errorf("sqlitestream: progress of task %s: %w (it was acked, nacked or claimed again)",
			d.Task.ID, peonify.ErrLeaseLost)
	}
	return nil
}

// claimCancelled reports whether d's claim, which no fenced statement
// matched, was cancelled while it ran: cancel negates the token of the
// claim.
func claimCancelled(tx *wtx, d peonify.Delivery) (bool, error) {
	var n int
	err := tx.st.isCancelled.QueryRow(d.Task.ID, int64(d.Token)).Scan(&n)
	return n > 0, err
}

// Cancel cancels the tasks with these IDs that have not finished (see
// peonify.Tracker) and returns how many it cancelled. Each moves to
// peonify.StateCancelled with the last error "cancelled by request", at
// once, a running one included: it no longer counts towards limits, its
// claim's Extend and SetProgress return an error wrapping
// peonify.ErrCancelled, and its Ack and Nack change nothing. The waiting
// dependents of a cancelled task are cancelled with it, naming it, unless
// they allow failed parents. Finished and unknown IDs are skipped.
func (s *Stream) Cancel(ctx context.Context, ids ...string) (int, error) {
	var (
		done []string
		rel  released
	)
	err := s.w.do(ctx, func(tx *wtx) error {
		done = done[:0]
		rel.reset()
		now := tx.now.UnixNano()
		for _, id := range ids {
			var wf string
			err := tx.st.cancel.QueryRow(id, cancelledByRequest, now).Scan(&wf)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				continue
			case err != nil:
				return fmt.Errorf("cancel task %s: %w", id, err)
			}
			done = append(done, id)
			if wf == "" {
				continue
			}
			if _, err := tx.exec(tx.st.unwait, id); err != nil {
				return fmt.Errorf("cancel task %s: %w", id, err)
			}
			if err := s.finished(tx, id, finishCancelled, cancelledByRequest, &rel); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlitestream: cancel tasks: %w", err)
	}
	s.waits.notify(done...)
	s.afterRelease(&rel)
	if len(done) > 0 && s.limits.Load() != nil {
		s.signal() // a cancelled running task held permits
	}
	return len(done), nil
}

// Wait waits until the task with this ID has finished (done, dead or
// cancelled) and returns it, or returns an error wrapping
// peonify.ErrNotFound if no such task is in the file (a done task that was
// not kept: see Config.ResultRetention), or ctx's error. It is woken at
// once when the task finishes through this Stream; when another process
// finishes it, within Config.WatchInterval (the file watch), and in any
// case within a second.
func (s *Stream) Wait(ctx context.Context, id string) (peonify.TaskInfo, error) {
	if s.isClosed() {
		return peonify.TaskInfo{}, errClosed
	}
	w := s.waits.add(id)
	defer s.waits.remove(id, w)
	t := time.NewTicker(waitRecheck)
	defer t.Stop()
	for {
		ch := s.waits.channel(w)
		info, err := s.Get(ctx, id)
		switch {
		case err != nil && ctx.Err() != nil:
			return peonify.TaskInfo{}, ctx.Err()
		case err != nil:
			return peonify.TaskInfo{}, err
		case info.State.Finished():
			return info, nil
		}
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			return peonify.TaskInfo{}, ctx.Err()
		case <-s.w.quit:
			return peonify.TaskInfo{}, errClosed
		}
	}
}

// waitSet is the Wait calls in progress, by task ID. Finishing a task
// closes its waiters' channel (and gives them a new one), so that they
// read it again. When no one waits, notifying costs an atomic load.
type waitSet struct {
	n  atomic.Int64 // entries in m
	mu sync.Mutex
	m  map[string]*waiter
}

// waiter is the Wait calls of one task.
type waiter struct {
	ch   chan struct{} // closed when the task may have finished
	refs int
}

func (ws *waitSet) active() bool { return ws.n.Load() > 0 }

// add registers a Wait for id.
func (ws *waitSet) add(id string) *waiter {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.m == nil {
		ws.m = map[string]*waiter{}
	}
	w := ws.m[id]
	if w == nil {
		w = &waiter{ch: make(chan struct{})}
		ws.m[id] = w
		ws.n.Add(1)
	}
	w.refs++
	return w
}

// remove ends a Wait for id.
func (ws *waitSet) remove(id string, w *waiter) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if w.refs--; w.refs == 0 {
		delete(ws.m, id)
		ws.n.Add(-1)
	}
}

// channel returns the channel that the next notification of w closes.
func (ws *waitSet) channel(w *waiter) <-chan struct{} {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return w.ch
}

// notify wakes the Wait calls of ids.
func (ws *waitSet) notify(ids ...string) {
	if len(ids) == 0 || !ws.active() {
		return
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, id := range ids {
		if w := ws.m[id]; w != nil {
			close(w.ch)
			w.ch = make(chan struct{})
		}
	}
}

// notifyAll wakes every Wait call, for tasks deleted in bulk.
func (ws *waitSet) notifyAll() {
	if !ws.active() {
		return
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.m {
		close(w.ch)
		w.ch = make(chan struct{})
	}
}

// ids returns the IDs that Wait calls wait for.
func (ws *waitSet) ids() []string {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ids := make([]string, 0, len(ws.m))
	for id := range ws.m {
		ids = append(ids, id)
	}
	return ids
}

// checkWaits wakes, after a commit to the file that may come from another
// process, the Wait calls whose task has finished or is gone: one query
// for all of them, on the watch's connection.
func (s *Stream) checkWaits(ctx context.Context, conn *sql.Conn) {
	if !s.waits.active() {
		return
	}
	ids := s.waits.ids()
	list, err := json.Marshal(ids)
	if err != nil {
		return
	}
	rows, err := conn.QueryContext(ctx, `SELECT id FROM peonify_tasks
		WHERE id IN (SELECT value FROM json_each(?1)) AND state IN ('waiting', 'pending', 'scheduled', 'running')`, string(list))
	if err != nil {
		return // transient; the waits read again within a second
	}
	live := make(map[string]bool, len(ids))
	for rows.Next() {
		var id string
		if rows.Scan(&id) == nil {
			live[id] = true
		}
	}
	if rows.Close() != nil || rows.Err() != nil {
		return
	}
	var over []string
	for _, id := range ids {
		if !live[id] {
			over = append(over, id)
		}
	}
	s.waits.notify(over...)
}
