package pgstream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamkit"
)

var (
	_ peonify.Tracker       = (*Stream)(nil)
	_ peonify.WorkflowStore = (*Stream)(nil)
)

// cancelReason is the last error of a task cancelled by Cancel or
// CancelWorkflow.
const cancelReason = "cancelled by request"

// waitRecheck is how often Wait looks at its tasks without a
// notification: for finishes whose NOTIFY was missed (a lost LISTEN
// connection) or never sent (a task without a result or workflow, deleted
// when acked). Without LISTEN it is waitRecheckNoListen.
const (
	waitRecheck         = 2 * time.Second
	waitRecheckNoListen = 250 * time.Millisecond
)

// finishedChannelName is the NOTIFY channel on which a schema's finished
// tasks (done with a result or in a workflow, dead, cancelled, deleted)
// are announced, for Wait; the payload is the queue.
func finishedChannelName(schema string) string { return schema + ".peonify_finished" }

// tracked reports whether an ack of ds needs the tracking function
// (results, workflows) rather than the plain statement.
func tracked(ds []peonify.Delivery) bool {
	for _, d := range ds {
		if d.Task != nil && d.Token != 0 && (d.Result != nil || d.Task.Workflow != "") {
			return true
		}
	}
	return false
}

// ackTracked acks deliveries some of which have a result or a workflow, in
// one call of the peonify_ack function: results stored and dependents
// released in the same transaction as the ack.
func (s *Stream) ackTracked(ctx context.Context, ds []peonify.Delivery) error {
	ids := make([]string, 0, len(ds))
	tokens := make([]int64, 0, len(ds))
	results := make([][]byte, 0, len(ds))
	for _, d := range ds {
		if d.Task == nil || d.Token == 0 {
			continue
		}
		ids = append(ids, d.Task.ID)
		tokens = append(tokens, int64(d.Token))
		results = append(results, d.Result) // nil is NULL; empty is an empty result

	}
	var ready int
	err := s.pool.QueryRow(ctx, s.sql.ackTracked, s.cfg.Queue, ids, tokens, results, s.cfg.KeepDone > 0, s.channel, s.fin).Scan(&ready)
	if err != nil {
		return s.dbError("acking tasks", err)
	}
	if ready > 0 {
		s.signal()
	}
	s.kickWaiters()
	return nil
}

// Results returns the results of the done tasks of the queue among ids,
// in one query (peonify.Tracker). Tasks not done, done without a result,
// or deleted after Config.ResultRetention are missing from the map.
func (s *Stream) Results(ctx context.Context, ids ...string) (map[string][]byte, error) {
	if s.closed.Load() {
		return nil, peonify.ErrClosed
	}
	out := make(map[string][]byte, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, s.sql.results, s.cfg.Queue, ids)
	if err != nil {
		return nil, s.dbError("reading results", err)
	}
	var (
		id  string
		res []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &res}, func() error {
		out[id] = res
		res = nil
		return nil
	})
	if err != nil {
		return nil, s.dbError("reading results", err)
	}
	return out, nil
}

// SetProgress stores p as the progress of the task that d delivered
// (peonify.Tracker). It is fenced on d's claim like Ack: it returns an
// error wrapping peonify.ErrCancelled if the task was cancelled, and one
// wrapping peonify.ErrLeaseLost if the claim is no longer current.
func (s *Stream) SetProgress(ctx context.Context, d peonify.Delivery, p peonify.Progress) error {
	if err := streamkit.CheckDelivery(s.closed.Load(), d, "pgstream", "SetProgress"); err != nil {
		return err
	}
	if d.Token == 0 {
		return fmt.Errorf("pgstream: SetProgress of task %s without a claim token (not a delivery from Poll): %w", d.Task.ID, peonify.ErrLeaseLost)
	}
	if math.IsNaN(p.Fraction) {
		return fmt.Errorf("pgstream: progress of task %s is NaN: report a fraction from 0 to 1", d.Task.ID)
	}
	frac := min(max(p.Fraction, 0), 1)
	msg := storableText(p.Message)
	msg = truncateUTF8(msg, peonify.MaxProgressMessageLen)
	at := p.UpdatedAt
	if at.IsZero() {
		at = time.Now()
	}
	tag, err := s.pool.Exec(ctx, s.sql.progress, s.cfg.Queue, d.Task.ID, int64(d.Token), frac, msg, at)
	if err != nil {
		return s.dbError("storing the progress of task "+d.Task.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return s.claimGone(ctx, d, "store the progress of")
	}
	return nil
}

// claimGone returns the error of a fenced call whose claim matched no
// row: ErrCancelled if the task was cancelled during this claim, else
// ErrLeaseLost.
func (s *Stream) claimGone(ctx context.Context, d peonify.Delivery, doing string) error {
	var cancelled bool
	if err := s.pool.QueryRow(ctx, s.sql.cancelledClaim, s.cfg.Queue, d.Task.ID, int64(d.Token)).Scan(&cancelled); err != nil {
		return s.dbError("reading the state of task "+d.Task.ID, err)
	}
	if cancelled {
		return fmt.Errorf("pgstream: cannot %s task %s: %w", doing, d.Task.ID, peonify.ErrCancelled)
	}
	return fmt.Errorf("pgstream: cannot %s task %s: %w", doing, d.Task.ID, peonify.ErrLeaseLost)
}

// truncateUTF8 cuts s to at most n bytes, never inside a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for i := n; i > 0; i-- {
		if s[i]&0xC0 != 0x80 {
			return s[:i]
		}
	}
	return ""
}

// Cancel cancels the tasks of the queue with these ids that have not
// finished (peonify.Tracker), in one transaction: waiting, pending and
// scheduled ones never run; a running one is cancelled at once (it no
// longer counts towards limits), and its claim's next Extend or
// SetProgress returns an error wrapping peonify.ErrCancelled while its Ack
// and Nack are ignored. Their workflow dependents are cancelled too,
// unless they allow failed parents. It returns how many of ids it
// cancelled.
func (s *Stream) Cancel(ctx context.Context, ids ...string) (int, error) {
	if s.closed.Load() {
		return 0, peonify.ErrClosed
	}
	if len(ids) == 0 {
		return 0, nil
	}
	var n int
	if err := s.pool.QueryRow(ctx, s.sql.cancel, s.cfg.Queue, ids, cancelReason, s.channel, s.fin).Scan(&n); err != nil {
		return 0, s.dbError("cancelling tasks", err)
	}
	if n > 0 {
		s.signal() // permits of running tasks are free; dependents may be ready
		s.kickWaiters()
	}
	return n, nil
}

// CancelWorkflow cancels every task of workflow id that has not finished,
// as Cancel does, and returns how many (peonify.WorkflowStore). It returns
// an error wrapping peonify.ErrNotFound if the queue has no task of that
// workflow.
func (s *Stream) CancelWorkflow(ctx context.Context, id string) (int, error) {
	if s.closed.Load() {
		return 0, peonify.ErrClosed
	}
	var (
		exists bool
		n      int
	)
	if err := s.pool.QueryRow(ctx, s.sql.cancelWorkflow, s.cfg.Queue, id, cancelReason, s.channel, s.fin).Scan(&exists, &n); err != nil {
		return 0, s.dbError("cancelling workflow "+id, err)
	}
	if !exists {
		return 0, fmt.Errorf("pgstream: workflow %q in queue %q: %w", id, s.cfg.Queue, peonify.ErrNotFound)
	}
	if n > 0 {
		s.signal()
		s.kickWaiters()
	}
	return n, nil
}

// GetWorkflow returns workflow id's state, its task counts by state and
// its first peonify.MaxWorkflowTasksListed tasks by ID, without results,
// in one round trip (peonify.WorkflowStore); an error wrapping
// peonify.ErrNotFound if the queue has no task of it (done tasks are
// deleted after Config.ResultRetention).
func (s *Stream) GetWorkflow(ctx context.Context, id string) (peonify.WorkflowInfo, error) {
	if s.closed.Load() {
		return peonify.WorkflowInfo{}, peonify.ErrClosed
	}
	info := peonify.WorkflowInfo{ID: id, Counts: make(map[peonify.State]int)}
	b := &pgx.Batch{}
	b.Queue(s.sql.wfCounts, s.cfg.Queue, id).Query(func(rows pgx.Rows) error {
		var (
			state    string
			n        int
			created  time.Time
			modified time.Time
		)
		_, err := pgx.ForEachRow(rows, []any{&state, &n, &created, &modified}, func() error {
			info.Counts[peonify.State(state)] = n
			if info.CreatedAt.IsZero() || created.Before(info.CreatedAt) {
				info.CreatedAt = created
			}
			if modified.After(info.UpdatedAt) {
				info.UpdatedAt = modified
			}
			return nil
		})
		return err
	})
	b.Queue(s.sql.wfList, s.cfg.Queue, id, peonify.MaxWorkflowTasksListed).Query(func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			ti, _, err := scanTask(rows)
			if err != nil {
				return err
			}
			info.Tasks = append(info.Tasks, ti)
		}
		return rows.Err()
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return peonify.WorkflowInfo{}, s.dbError("reading workflow "+id, err)
	}
	if len(info.Counts) == 0 {
		return peonify.WorkflowInfo{}, fmt.Errorf("pgstream: workflow %q in queue %q: %w", id, s.cfg.Queue, peonify.ErrNotFound)
	}
	info.State = peonify.WorkflowStateOf(info.Counts)
	return info, nil
}

// EnqueueWorkflow prepares w (see peonify.Workflow.Prepare) and stores
// all of its tasks in the queue in one transaction, with batched inserts
// (peonify.WorkflowStore): tasks without parents pending (or scheduled),
// the others waiting. Workflows of more than CopyThreshold tasks are
// loaded with COPY, after a look for IDs and unique keys stored already. If the workflow's ID, one of its task IDs, or a
// task's live UniqueKey is stored already, it stores nothing and returns
// a *peonify.DuplicateError naming them.
func (s *Stream) EnqueueWorkflow(ctx context.Context, w *peonify.Workflow) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	if err := w.Prepare(time.Now()); err != nil {
		return err
	}
	b, err := workflowBatch(w.Tasks)
	if err != nil {
		return err
	}
	var dup error
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			exists bool
			stored []string
		)
		pb := &pgx.Batch{}
		pb.Queue(s.sql.wfLock, s.cfg.Schema+"."+s.cfg.Queue+"."+w.ID)
		pb.Queue(s.sql.wfExists, s.cfg.Queue, w.ID).QueryRow(func(r pgx.Row) error { return r.Scan(&exists) })
		big := b.n() > CopyThreshold
		if big {
			// COPY cannot skip conflicts: look for them first.
			pb.Queue(s.sql.wfStored, s.cfg.Queue, b.ids, b.uniqueKeys).Query(func(rows pgx.Rows) error {
				var err error
				stored, err = pgx.CollectRows(rows, pgx.RowTo[string])
				return err
			})
		}
		if err := tx.SendBatch(ctx, pb).Close(); err != nil {
			return s.dbError("enqueueing workflow "+w.ID, err)
		}
		switch {
		case exists:
			dup = &peonify.DuplicateError{IDs: []string{w.ID}}
			return dup
		case len(stored) > 0:
			dup = &peonify.DuplicateError{IDs: stored}
			return dup
		case big:
			return s.copyWorkflow(ctx, tx, b, w.ID)
		}
		inserted, err := s.insertWorkflow(ctx, tx, b, w.ID)
		if err != nil {
			return err
		}
		if len(inserted) < b.n() {
			dup = b.duplicates(inserted)
			return dup
		}
		return nil
	})
	if dup != nil {
		return dup
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation: stored meanwhile
		return &peonify.DuplicateError{IDs: b.ids}
	}
	if err != nil {
		return err
	}
	s.signal()
	return nil
}

// copyWorkflow stores b's tasks of workflow wf, and their dependencies,
// with COPY, in tx.
func (s *Stream) copyWorkflow(ctx context.Context, tx pgx.Tx, b *batch, wf string) error {
	cols := []string{"queue", "id", "type", "payload", "headers", "priority", "max_attempts", "unique_key", "enqueued_at", "key",
		"workflow", "allow_failed_parents", "parents", "waiting_on", "state", "run_at"}
	err := b.copyInTwo(cols, func(rows []int, c []string, scheduled bool) error {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{s.cfg.Schema, "peonify_tasks"}, c, pgx.CopyFromSlice(len(rows), func(j int) ([]any, error) {
			i := rows[j]
			t := b.tasks[i]
			var h, uk, parents any
			if b.headers[i] != nil {
				h = *b.headers[i]
			}
			if b.uniqueKeys[i] != nil {
				uk = *b.uniqueKeys[i]
			}
			state := "pending"
			if len(t.Parents) > 0 {
				state, parents = "waiting", t.Parents
			}
			v := []any{s.cfg.Queue, b.ids[i], b.types[i], b.payloads[i], h, b.priorities[i], b.maxAttempts[i], uk, b.enqueuedAt[i], b.keys[i],
				wf, b.allow[i], parents, int32(len(t.Parents)), state}
			if scheduled {
				v = append(v, b.runAt[i])
			}
			return v, nil
		}))
		return err
	})
	if err != nil {
		return err
	}
	if len(b.edgeParents) == 0 {
		return nil
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{s.cfg.Schema, "peonify_edges"}, []string{"queue", "parent_id", "child_id"},
		pgx.CopyFromSlice(len(b.edgeParents), func(i int) ([]any, error) {
			return []any{s.cfg.Queue, b.edgeParents[i], b.edgeChildren[i]}, nil
		}))
	return err
}

// workflowBatch checks prepared workflow tasks and puts them in columns.
func workflowBatch(tasks []*peonify.Task) (*batch, error) {
	n := len(tasks)
	b := &batch{seen: make(map[string]struct{}, n)}
	for _, t := range tasks {
		if err := b.add(t); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// insertWorkflow inserts b's tasks of workflow wf, and the dependencies
// of those it inserted, in one statement, and returns the IDs it
// inserted.
func (s *Stream) insertWorkflow(ctx context.Context, tx pgx.Tx, b *batch, wf string) ([]string, error) {
	rows, err := tx.Query(ctx, s.sql.wfInsert, s.cfg.Queue, b.ids, b.types, b.payloads, b.headers, b.priorities,
		b.maxAttempts, b.uniqueKeys, b.enqueuedAt, b.runAt, b.keys, wf, b.allow, b.edgeParents, b.edgeChildren)
	if err != nil {
		return nil, s.dbError("enqueueing workflow "+wf, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, s.dbError("enqueueing workflow "+wf, err)
	}
	return ids, nil
}

// Spawn adds children to the workflow of the running task that parent
// delivered, in one transaction fenced on parent's claim like Ack
// (peonify.WorkflowStore): if the claim is no longer current it stores
// nothing and returns an error wrapping peonify.ErrLeaseLost (or
// peonify.ErrCancelled if the task was cancelled). Children already
// stored (a second run of the parent) are skipped. Every dependent of the
// spawning task then also waits for each new child, which is added to its
// Task.Parents, so that it reads the children's results with
// peonify.ParentResults.
func (s *Stream) Spawn(ctx context.Context, parent peonify.Delivery, children ...*peonify.Task) error {
	if err := streamkit.CheckDelivery(s.closed.Load(), parent, "pgstream", "Spawn"); err != nil {
		return err
	}
	if parent.Token == 0 {
		return fmt.Errorf("pgstream: Spawn from task %s without a claim token (not a delivery from Poll): %w", parent.Task.ID, peonify.ErrLeaseLost)
	}
	wf := parent.Task.Workflow
	if wf == "" {
		return fmt.Errorf("pgstream: task %s is not in a workflow, so it cannot spawn children: enqueue it with EnqueueWorkflow", parent.Task.ID)
	}
	if len(children) == 0 {
		return nil
	}
	for _, c := range children {
		if c == nil || c.ID == "" || c.Workflow != wf {
			return &peonify.InvalidTaskError{ID: idOf(c), Reason: fmt.Sprintf("child is not prepared for workflow %s: spawn it with peonify.Spawn", wf)}
		}
	}
	b, err := workflowBatch(children)
	if err != nil {
		return err
	}
	var inserted []string
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var got string
		err := tx.QueryRow(ctx, s.sql.spawnParent, s.cfg.Queue, parent.Task.ID, int64(parent.Token)).Scan(&got)
		if errors.Is(err, pgx.ErrNoRows) {
			return errClaimGone
		}
		if err != nil {
			return s.dbError("spawning children of task "+parent.Task.ID, err)
		}
		if got != wf {
			return fmt.Errorf("pgstream: task %s is in workflow %q, not %q: cannot spawn into it", parent.Task.ID, got, wf)
		}
		// Children of an earlier run that new children depend on: locked,
		// so that they cannot finish unseen before the new dependencies
		// commit, and settled now if they finished already.
		earlier, err := s.lockEarlierChildren(ctx, tx, b)
		if err != nil {
			return err
		}
		inserted, err = s.insertWorkflow(ctx, tx, b, wf)
		if err != nil || len(inserted) == 0 {
			return err
		}
		if _, err := tx.Exec(ctx, s.sql.spawnDependents, s.cfg.Queue, parent.Task.ID, inserted); err != nil {
			return s.dbError("spawning children of task "+parent.Task.ID, err)
		}
		return s.settleEarlier(ctx, tx, earlier)
	})
	if errors.Is(err, errClaimGone) {
		return s.claimGone(ctx, parent, "spawn children of")
	}
	if err != nil {
		return err
	}
	if len(inserted) > 0 {
		s.signal()
	}
	return nil
}

// earlierChild is a child stored by an earlier run of a spawning task
// that a child of this run depends on.
type earlierChild struct {
	id, state, lastError string
}

// lockEarlierChildren locks, in tx, the stored tasks that b's tasks name
// as parents (children of an earlier run of the spawning task), and
// returns them.
func (s *Stream) lockEarlierChildren(ctx context.Context, tx pgx.Tx, b *batch) ([]earlierChild, error) {
	if len(b.edgeParents) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, s.sql.spawnEarlier, s.cfg.Queue, b.edgeParents)
	if err != nil {
		return nil, s.dbError("spawning children", err)
	}
	var out []earlierChild
	var c earlierChild
	_, err = pgx.ForEachRow(rows, []any{&c.id, &c.state, &c.lastError}, func() error {
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, s.dbError("spawning children", err)
	}
	return out, nil
}

// settleEarlier settles, in tx, the new dependencies on earlier children
// that have finished already: a done one counts as done, a dead or
// cancelled one as failed.
func (s *Stream) settleEarlier(ctx context.Context, tx pgx.Tx, earlier []earlierChild) error {
	var done, failed, whys []string
	for _, c := range earlier {
		switch c.state {
		case "done":
			done = append(done, c.id)
		case "dead", "cancelled":
			failed = append(failed, c.id)
			whys = append(whys, c.state+": "+c.lastError)
		}
	}
	if _, err := s.settle(ctx, tx, done, nil, false); err != nil {
		return s.dbError("spawning children", err)
	}
	if _, err := s.settle(ctx, tx, failed, whys, true); err != nil {
		return s.dbError("spawning children", err)
	}
	return nil
}

// errClaimGone ends a fenced transaction whose claim matched no row.
var errClaimGone = errors.New("pgstream: claim is not current")

func idOf(t *peonify.Task) string {
	if t == nil {
		return ""
	}
	return t.ID
}

// Wait waits until the task with this id has finished and returns it
// (peonify.Tracker). It is woken by a NOTIFY that every finish of a task
// with a result or a workflow, every dead letter, cancel and delete
// sends, through the stream's one LISTEN connection, which all waiters
// share (Wait starts the stream's background work, as Start does); and it
// looks again every 2 seconds in any case (every 250 ms with
// Config.NoListen), which is how it learns that a task without a result
// or workflow was acked and deleted. On each, one query reads the states
// of all the waited tasks of the stream, and only the waiters of those
// that finished read them again. It returns an error wrapping
// peonify.ErrNotFound if no such task is stored, or it is deleted, ctx's
// error when ctx ends first, and peonify.ErrClosed when the stream is
// closed first.
func (s *Stream) Wait(ctx context.Context, id string) (peonify.TaskInfo, error) {
	if s.closed.Load() {
		return peonify.TaskInfo{}, peonify.ErrClosed
	}
	if !s.startBackground() {
		return peonify.TaskInfo{}, peonify.ErrClosed
	}
	ch := s.waitHub.add(id)
	defer s.waitHub.remove(id, ch)
	for {
		if s.closed.Load() {
			return peonify.TaskInfo{}, fmt.Errorf("pgstream: Wait for task %s: %w", id, peonify.ErrClosed)
		}
		info, err := s.Get(ctx, id)
		if err != nil {
			return peonify.TaskInfo{}, err
		}
		if info.State.Finished() {
			return info, nil
		}
		select {
		case <-ctx.Done():
			return peonify.TaskInfo{}, context.Cause(ctx)
		case <-ch:
		}
	}
}

// waitHub holds Wait's waiters by task ID (see watchFinished).
type waitHub struct {
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

func (h *waitHub) add(id string) chan struct{} {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waiters == nil {
		h.waiters = make(map[string]map[chan struct{}]struct{})
	}
	if h.waiters[id] == nil {
		h.waiters[id] = make(map[chan struct{}]struct{})
	}
	h.waiters[id][ch] = struct{}{}
	return ch
}

func (h *waitHub) remove(id string, ch chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.waiters[id], ch)
	if len(h.waiters[id]) == 0 {
		delete(h.waiters, id)
	}
}

// kickWaiters wakes Wait's waiters after this stream finished tasks.
func (s *Stream) kickWaiters() {
	select {
	case s.finKick <- struct{}{}:
	default:
	}
}

// watchFinished wakes Wait's waiters whose tasks finished or vanished,
// on every notification of finished tasks in the queue (s.finKick, which
// the listener and this stream's own acks, nacks and cancels send to) and
// every recheck interval, until ctx ends: one query for all the waited
// tasks, and only their waiters read their tasks again.
func (s *Stream) watchFinished(ctx context.Context) {
	every := waitRecheck
	if s.cfg.NoListen {
		every = waitRecheckNoListen
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.finKick:
		case <-t.C:
		}
		ids := s.waitHub.ids()
		if len(ids) == 0 {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, maintainTimeout)
		rows, err := s.pool.Query(qctx, s.sql.unfinished, s.cfg.Queue, ids)
		var unfinished []string
		if err == nil {
			unfinished, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		cancel()
		if err != nil {
			// Each waiter reads its own task, and sees the error.
			s.waitHub.wake(nil, true)
			continue
		}
		s.waitHub.wake(unfinished, false)
	}
}

// ids returns the IDs of the waited tasks.
func (h *waitHub) ids() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.waiters))
	for id := range h.waiters {
		ids = append(ids, id)
	}
	return ids
}

// wake wakes, without blocking, the waiters of every task not in
// unfinished, or all of them with all.
func (h *waitHub) wake(unfinished []string, all bool) {
	keep := make(map[string]bool, len(unfinished))
	for _, id := range unfinished {
		keep[id] = true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, chans := range h.waiters {
		if !all && keep[id] {
			continue
		}
		for ch := range chans {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// nackDeadWorkflow moves a workflow task to dead, with args as nackDead's,
// and settles its dependents in the same transaction. It returns how many
// rows it moved (0 for a stale claim).
func (s *Stream) nackDeadWorkflow(ctx context.Context, d peonify.Delivery, args []any, reason *string) (int, error) {
	why := "dead"
	if reason != nil {
		why = "dead: " + *reason
	}
	var n, ready int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var notified int
		if err := tx.QueryRow(ctx, s.sql.nackDead, args...).Scan(&n, &notified); err != nil || n == 0 {
			return err
		}
		var err error
		ready, err = s.settle(ctx, tx, []string{d.Task.ID}, []string{why}, true)
		return err
	})
	if err == nil && ready > 0 {
		s.signal()
	}
	return n, err
}

// settle releases or cancels, in tx, the dependents of the workflow tasks
// ids that have just finished (see peonify_release in migration 3):
// failed says they went dead, were cancelled or deleted, and whys says
// how, each. It returns how many dependents became ready: the caller
// wakes its stream once tx has committed.
func (s *Stream) settle(ctx context.Context, tx pgx.Tx, ids, whys []string, failed bool) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	var ready int
	err := tx.QueryRow(ctx, s.sql.release, s.cfg.Queue, ids, whys, failed, s.channel, s.fin).Scan(&ready)
	return ready, err
}
