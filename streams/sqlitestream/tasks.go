package sqlitestream

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
)

// Enqueue stores tasks durably in one transaction: when it returns nil or
// a *peonify.DuplicateError, the stored tasks survive a crash of the
// process (and, with SynchronousFull, of the machine). It fills empty IDs
// and EnqueuedAt. A task whose ID is already in the file, or whose
// UniqueKey belongs to a pending, scheduled or running task, is not stored
// again; the others are, and Enqueue returns a *peonify.DuplicateError
// naming the duplicates. If a task is invalid, nothing is stored.
//
// With Config.KeepDone, an acked task keeps its ID taken until it is
// cleaned up; otherwise an ID can be enqueued again once its task is acked.
func (s *Stream) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	if len(tasks) == 0 {
		return nil
	}
	for _, t := range tasks { // before Prepare changes any of them
		if err := t.Validate(); err != nil {
			return err
		}
	}
	now := s.now()
	rows := make([][]any, len(tasks))
	for i, t := range tasks {
		if err := t.Prepare(now); err != nil {
			return err
		}
		row, err := insertArgs(t, now)
		if err != nil {
			return err
		}
		rows[i] = row
	}
	stored := make([]bool, len(tasks))
	err := s.w.do(ctx, func(tx *wtx) error {
		for i, row := range rows {
			n, err := tx.exec(tx.st.insert, row...)
			if err != nil {
				return fmt.Errorf("enqueue task %s: %w", tasks[i].ID, err)
			}
			stored[i] = n > 0
		}
		return nil
	})
	if err != nil {
		return err
	}
	var (
		ready bool
		next  time.Time
		dups  []string
	)
	for i, t := range tasks {
		if !stored[i] {
			dups = append(dups, t.ID)
			continue
		}
		if t.RunAt.After(now) {
			if next.IsZero() || t.RunAt.Before(next) {
				next = t.RunAt
			}
		} else {
			ready = true
		}
	}
	if ready {
		s.signal()
	}
	if !next.IsZero() {
		s.wakeAt(next)
	}
	if len(dups) > 0 {
		return &peonify.DuplicateError{IDs: dups}
	}
	return nil
}

// insertArgs returns the arguments of the insert statement for t.
func insertArgs(t *peonify.Task, now time.Time) ([]any, error) {
	var headers sql.NullString
	if len(t.Headers) > 0 {
		for k, v := range t.Headers {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, &peonify.InvalidTaskError{ID: t.ID,
					Reason: fmt.Sprintf("header %q is not valid UTF-8: encode binary header values, e.g. in base64", k)}
			}
		}
		b, err := json.Marshal(t.Headers)
		if err != nil {
			return nil, &peonify.InvalidTaskError{ID: t.ID, Reason: "headers cannot be stored: " + err.Error()}
		}
		headers = sql.NullString{String: string(b), Valid: true}
	}
	uniqueKey := sql.NullString{String: t.UniqueKey, Valid: t.UniqueKey != ""}
	state, visible := "pending", t.RunAt
	switch {
	case len(t.Parents) > 0:
		state, visible = "waiting", now // until its parents finish (see workflow.go)
	case t.RunAt.After(now):
		state = "scheduled"
	case t.RunAt.IsZero():
		visible = now
	}
	payload := t.Payload
	if payload == nil {
		payload = []byte{}
	}
	var parents sql.NullString
	if len(t.Parents) > 0 {
		b, err := json.Marshal(t.Parents)
		if err != nil {
			return nil, &peonify.InvalidTaskError{ID: t.ID, Reason: "parents cannot be stored: " + err.Error()}
		}
		parents = sql.NullString{String: string(b), Valid: true}
	}
	return []any{t.ID, t.Type, payload, headers, t.Priority, uniqueKey, t.MaxAttempts,
		toNanos(t.RunAt), toNanos(t.EnqueuedAt), state, visible.UnixNano(), now.UnixNano(), t.Key,
		t.Workflow, parents, t.AllowFailedParents}, nil
}

// Poll claims up to limit ready tasks, highest Priority first and then the
// longest ready, and leases them for Config.Lease. Each claim counts an
// attempt and gets a new random fencing token.
func (s *Stream) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	if limit < 1 {
		// Asks for nothing (see peonify.Stream): no deliveries, no error.
		if s.isClosed() {
			return nil, errClosed
		}
		return nil, nil
	}
	if !s.lastFull.Load() {
		// The last poll emptied the store, as an idle processor's polls
		// do: look with a read, beside the writer, before taking the
		// write lock that other processes may be waiting for.
		ready, next, err := s.readyAt(ctx)
		if err != nil {
			return nil, err
		}
		if !ready {
			if !next.IsZero() {
				s.wakeAt(next)
			}
			return nil, nil
		}
	}
	if ls := s.limits.Load(); ls != nil {
		return s.pollLimited(ctx, ls, limit)
	}
	var (
		ds   []peonify.Delivery
		next time.Time
	)
	err := s.w.do(ctx, func(tx *wtx) error {
		ds, next = ds[:0], time.Time{}
		now := tx.now.UnixNano()
		if _, err := tx.exec(tx.st.promote, now); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if _, err := tx.exec(tx.st.rescue, now); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		rows, err := tx.st.claim.Query(now, tx.now.Add(s.cfg.Lease).UnixNano(), limit, s.instance)
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			info, err := scanTask(rows)
			if err != nil {
				return fmt.Errorf("poll: %w", err)
			}
			ds = append(ds, peonify.Delivery{Task: &info.Task, Token: info.token, Deadline: info.LeaseUntil})
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if len(ds) == limit {
			return nil
		}
		// Nothing else is ready: find when something will be.
		if next, err = tx.earliestDue(); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.lastFull.Store(len(ds) == limit)
	// RETURNING yields rows in no particular order: restore the claim's
	// order, as far as the tasks tell it.
	slices.SortFunc(ds, func(a, b peonify.Delivery) int {
		return cmp.Or(cmp.Compare(b.Task.Priority, a.Task.Priority),
			readySince(a.Task).Compare(readySince(b.Task)), cmp.Compare(a.Task.ID, b.Task.ID))
	})
	if !next.IsZero() {
		s.wakeAt(next)
	}
	return ds, nil
}

// readyAt reports whether a task can be claimed now and, if not, when the
// first one can (zero if none is scheduled or leased). It reads through the
// partial indexes only. A task enqueued by this Stream meanwhile signals
// Wake, so the processor polls again.
func (s *Stream) readyAt(ctx context.Context) (ready bool, next time.Time, err error) {
	var (
		pending       bool
		sched, leased sql.NullInt64
	)
	err = s.w.ready.QueryRowContext(ctx).Scan(&pending, &sched, &leased)
	if err != nil {
		if s.isClosed() {
			return false, time.Time{}, errClosed
		}
		return false, time.Time{}, fmt.Errorf("sqlitestream: poll: %w", err)
	}
	if pending {
		return true, time.Time{}, nil
	}
	now := s.now().UnixNano()
	for _, n := range []sql.NullInt64{sched, leased} {
		if !n.Valid {
			continue
		}
		if n.Int64 <= now {
			return true, time.Time{}, nil
		}
		if next.IsZero() || n.Int64 < next.UnixNano() {
			next = time.Unix(0, n.Int64)
		}
	}
	return false, next, nil
}

// readySince is when a task first became ready.
func readySince(t *peonify.Task) time.Time {
	if t.RunAt.IsZero() {
		return t.EnqueuedAt
	}
	return t.RunAt
}

// Ack deletes the tasks of ds, or marks them done when Config.KeepDone is
// set, in one transaction. It is fenced by each delivery's Token: a
// delivery whose task was claimed again since, or was acked, nacked or
// cancelled already, changes nothing and is not an error.
//
// A delivery with a Result, or of a task in a workflow, is kept as done
// with its result for Config.ResultRetention (see Config), and in the same
// transaction the task's dependents that waited for it alone become ready
// (see EnqueueWorkflow). Other tasks cost what they always did: one
// statement each.
func (s *Stream) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	for _, d := range ds {
		if d.Task == nil {
			return errors.New("sqlitestream: Ack of a delivery without a Task: pass the deliveries Poll returned")
		}
	}
	var (
		acked []bool
		rel   released
	)
	err := s.w.do(ctx, func(tx *wtx) error {
		acked = slices.Grow(acked[:0], len(ds))[:len(ds)]
		clear(acked)
		rel.reset()
		now := tx.now.UnixNano()
		for i, d := range ds {
			if d.Token == 0 { // never a claim: there is nothing to ack
				continue
			}
			var (
				n   int64
				err error
			)
			switch {
			case d.Result != nil || d.Task.Workflow != "":
				keep := max(s.cfg.ResultRetention, s.cfg.KeepDone)
				n, err = tx.exec(tx.st.ackKeep, d.Task.ID, int64(d.Token), now, tx.now.Add(keep).UnixNano(), d.Result)
				if err == nil && n > 0 && d.Task.Workflow != "" {
					err = s.finished(tx, d.Task.ID, finishDone, "", &rel)
				}
			case s.cfg.KeepDone > 0:
				n, err = tx.exec(tx.st.ackDone, d.Task.ID, int64(d.Token), now, tx.now.Add(s.cfg.KeepDone).UnixNano())
			default:
				n, err = tx.exec(tx.st.ackDelete, d.Task.ID, int64(d.Token))
			}
			if err != nil {
				return fmt.Errorf("ack task %s: %w", d.Task.ID, err)
			}
			acked[i] = n > 0
		}
		return nil
	})
	if err != nil {
		return err
	}
	if s.waits.active() {
		for i, d := range ds {
			if acked[i] {
				s.waits.notify(d.Task.ID)
			}
		}
	}
	s.afterRelease(&rel)
	if s.limits.Load().holdsAny(ds...) {
		s.signal() // a permit is free: a task waiting for it can start
	}
	return nil
}

// Nack hands a delivery back. OutcomeFailed makes the task ready again
// after opts.Delay and records opts.Reason as its last error; the attempt
// counts. OutcomeReleased makes it ready after opts.Delay and gives the
// attempt back. OutcomeDead moves it to peonify.StateDead with opts.Reason,
// where it stays until an Inspector retries, deletes or purges it. A
// delivery that is no longer the task's current claim changes nothing and
// Nack returns an error wrapping peonify.ErrLeaseLost.
func (s *Stream) Nack(ctx context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	if d.Task == nil {
		return errors.New("sqlitestream: Nack of a delivery without a Task: pass a delivery Poll returned")
	}
	opts, err := opts.Normalize()
	if err != nil {
		return fmt.Errorf("sqlitestream: Nack of task %s: %w", d.Task.ID, err)
	}
	if d.Token == 0 {
		return fmt.Errorf("sqlitestream: nack of task %s without a Token: %w (pass a delivery Poll returned)",
			d.Task.ID, peonify.ErrLeaseLost)
	}
	var (
		lost bool
		at   time.Time
		rel  released
	)
	err = s.w.do(ctx, func(tx *wtx) error {
		rel.reset()
		at = tx.now.Add(opts.Delay)
		state := "pending"
		if opts.Delay > 0 {
			state = "scheduled"
		}
		var n int64
		var err error
		id, token, now := d.Task.ID, int64(d.Token), tx.now.UnixNano()
		switch opts.Outcome {
		case peonify.OutcomeFailed:
			n, err = tx.exec(tx.st.retry, id, token, state, at.UnixNano(), opts.Reason, now)
		case peonify.OutcomeReleased:
			n, err = tx.exec(tx.st.release, id, token, state, at.UnixNano(), now)
		case peonify.OutcomeDead:
			n, err = tx.exec(tx.st.bury, id, token, now, opts.Reason)
			if err == nil && n > 0 && d.Task.Workflow != "" {
				err = s.finished(tx, id, finishDead, opts.Reason, &rel)
			}
		}
		if err != nil {
			return fmt.Errorf("nack task %s: %w", id, err)
		}
		lost = n == 0
		return nil
	})
	switch {
	case err != nil:
		return err
	case lost:
		return fmt.Errorf("sqlitestream: nack of task %s ignored: %w (it was acked, nacked, cancelled or claimed again)",
			d.Task.ID, peonify.ErrLeaseLost)
	}
	if opts.Outcome == peonify.OutcomeDead {
		s.waits.notify(d.Task.ID)
		s.afterRelease(&rel)
	}
	if s.limits.Load().holdsAny(d) {
		s.signal() // a permit is free (for an ordered key, after a dead task)
	}
	if opts.Outcome != peonify.OutcomeDead {
		s.wakeAt(at)
	}
	return nil
}

// Extend renews the lease of d so that it ends lease from now (Config.Lease
// when lease is not positive). It returns an error wrapping
// peonify.ErrLeaseLost if the task was claimed again, acked or nacked since,
// and one wrapping peonify.ErrCancelled if it was cancelled (see Cancel).
// A lease that ended is renewed if no other poll claimed the task meanwhile.
func (s *Stream) Extend(ctx context.Context, d peonify.Delivery, lease time.Duration) (peonify.Delivery, error) {
	if d.Task == nil {
		return d, errors.New("sqlitestream: Extend of a delivery without a Task: pass a delivery Poll returned")
	}
	if lease <= 0 {
		lease = s.cfg.Lease
	}
	if d.Token == 0 {
		return d, fmt.Errorf("sqlitestream: lease of task %s without a Token: %w (pass a delivery Poll returned)",
			d.Task.ID, peonify.ErrLeaseLost)
	}
	var (
		lost, cancelled bool
		deadline        time.Time
	)
	err := s.w.do(ctx, func(tx *wtx) error {
		deadline = tx.now.Add(lease)
		n, err := tx.exec(tx.st.extend, d.Task.ID, int64(d.Token), deadline.UnixNano(), tx.now.UnixNano())
		if err != nil {
			return fmt.Errorf("extend the lease of task %s: %w", d.Task.ID, err)
		}
		lost = n == 0
		if lost {
			cancelled, err = claimCancelled(tx, d)
			if err != nil {
				return fmt.Errorf("extend the lease of task %s: %w", d.Task.ID, err)
			}
		}
		return nil
	})
	switch {
	case err != nil:
		return d, err
	case cancelled:
		return d, fmt.Errorf("sqlitestream: lease of task %s: %w", d.Task.ID, peonify.ErrCancelled)
	case lost:
		return d, fmt.Errorf("sqlitestream: lease of task %s: %w (it was acked, nacked or claimed again)",
			d.Task.ID, peonify.ErrLeaseLost)
	}
	d.Deadline = deadline
	return d, nil
}

// taskRow is a scanned task with the columns that TaskInfo leaves out.
type taskRow struct {
	peonify.TaskInfo
	token     uint64
	rawState  string
	visibleAt time.Time
}

// scanTask reads the columns listed in taskColumns.
func scanTask(rows interface{ Scan(...any) error }) (taskRow, error) {
	var (
		r          taskRow
		headers    sql.NullString
		uniqueKey  sql.NullString
		runAt      int64
		enqueuedAt int64
		token      int64
		visibleAt  int64
		updatedAt  int64
		parents    sql.NullString
		result     any
		progressAt int64
	)
	t := &r.Task
	err := rows.Scan(&t.ID, &t.Type, &t.Payload, &headers, &t.Priority, &uniqueKey, &t.MaxAttempts,
		&runAt, &enqueuedAt, &r.Attempts, &r.LastError, &token, &r.rawState, &visibleAt, &updatedAt, &t.Key,
		&t.Workflow, &parents, &t.AllowFailedParents, &result, &r.Progress.Fraction, &r.Progress.Message, &progressAt)
	if err != nil {
		return r, err
	}
	// The driver reads an empty blob as a nil []byte, and NULL as nil.
	if b, ok := result.([]byte); ok {
		if b == nil {
			b = []byte{}
		}
		r.Result = b
	}
	if headers.Valid {
		if err := json.Unmarshal([]byte(headers.String), &t.Headers); err != nil {
			return r, fmt.Errorf("task %s has unreadable headers: %w", t.ID, err)
		}
	}
	if parents.Valid {
		if err := json.Unmarshal([]byte(parents.String), &t.Parents); err != nil {
			return r, fmt.Errorf("task %s has an unreadable list of parents: %w", t.ID, err)
		}
	}
	r.Progress.UpdatedAt = fromNanos(progressAt)
	t.UniqueKey = uniqueKey.String
	t.RunAt = fromNanos(runAt)
	t.EnqueuedAt = fromNanos(enqueuedAt)
	t.Attempt = r.Attempts
	t.LastError = r.LastError
	r.token = uint64(token)
	r.visibleAt = time.Unix(0, visibleAt)
	r.UpdatedAt = time.Unix(0, updatedAt)
	r.State = peonify.State(r.rawState)
	if r.State == peonify.StateRunning {
		r.LeaseUntil = r.visibleAt
	}
	return r, nil
}
