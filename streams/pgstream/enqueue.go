package pgstream

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/peonify/peonify"
)

// CopyThreshold is the batch size above which Enqueue and EnqueueTx load
// tasks with COPY instead of a single multi-row INSERT. COPY cannot skip
// duplicates: a batch in which it meets one is inserted again, in the same
// transaction, by the INSERT that skips and reports them.
const CopyThreshold = 100

// querier is what enqueueing needs: a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Enqueue stores tasks in the queue durably, in one transaction: when it
// returns nil every task is committed. It fills empty IDs and EnqueuedAt
// (see peonify.Task.Prepare). Tasks whose ID is already stored in the
// queue, or whose UniqueKey belongs to a live (waiting, pending, scheduled or
// running) task, are skipped; the others are stored and the error is a
// *peonify.DuplicateError naming the skipped ones. An invalid task stores
// nothing.
//
// Processors listening on the queue are woken when the transaction
// commits. Batches over CopyThreshold tasks are loaded with COPY.
func (s *Stream) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	b, err := newBatch(tasks)
	if err != nil || b.n() == 0 {
		return err
	}
	var inserted []string
	if b.n() > CopyThreshold {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			inserted, err = s.copyInsert(ctx, tx, b)
			return err
		})
	} else {
		inserted, err = s.insert(ctx, s.pool, b)
	}
	if err != nil {
		return err
	}
	if len(inserted) > 0 {
		s.signal()
	}
	return b.duplicates(inserted)
}

// EnqueueTx stores tasks in the queue inside the caller's transaction tx,
// so that they exist exactly when the caller's own changes commit, and
// not at all if it rolls back. It otherwise behaves like Enqueue. tx must
// belong to the stream's database; it stays open and owned by the caller.
// A database error aborts tx, as any failed statement does.
func (s *Stream) EnqueueTx(ctx context.Context, tx pgx.Tx, tasks ...*peonify.Task) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	if tx == nil {
		return errors.New("pgstream: EnqueueTx needs the caller's pgx.Tx, got nil")
	}
	b, err := newBatch(tasks)
	if err != nil || b.n() == 0 {
		return err
	}
	var inserted []string
	if b.n() > CopyThreshold {
		inserted, err = s.copyInsert(ctx, tx, b)
	} else {
		inserted, err = s.insert(ctx, tx, b)
	}
	if err != nil {
		return err
	}
	return b.duplicates(inserted)
}

// batch is a validated Enqueue call in column order.
type batch struct {
	tasks       []*peonify.Task // to insert, in call order
	dups        []string        // IDs repeated within the call
	ids, types  []string
	payloads    [][]byte
	headers     []*string
	priorities  []int32
	maxAttempts []int32
	uniqueKeys  []*string
	enqueuedAt  []time.Time
	runAt       []pgtype.Timestamptz
	keys        []string
	workflows   []*string
	seen        map[string]struct{}

	// Workflows only (see EnqueueWorkflow and Spawn).
	allow                     []bool
	edgeParents, edgeChildren []string
}

func (b *batch) n() int { return len(b.tasks) }

// newBatch prepares and validates tasks. An invalid task fails the whole
// batch before anything is stored.
func newBatch(tasks []*peonify.Task) (*batch, error) {
	now := time.Now()
	n := len(tasks)
	b := &batch{
		tasks: make([]*peonify.Task, 0, n), ids: make([]string, 0, n), types: make([]string, 0, n),
		payloads: make([][]byte, 0, n), headers: make([]*string, 0, n), priorities: make([]int32, 0, n),
		maxAttempts: make([]int32, 0, n), uniqueKeys: make([]*string, 0, n), enqueuedAt: make([]time.Time, 0, n),
		runAt: make([]pgtype.Timestamptz, 0, n), keys: make([]string, 0, n), allow: make([]bool, 0, n),
	}
	b.seen = make(map[string]struct{}, n)
	for _, t := range tasks {
		if err := t.Prepare(now); err != nil {
			return nil, err
		}
		if err := b.add(t); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// add checks t, prepared already, and appends it to b (or to b.dups if
// its ID is in b already).
func (b *batch) add(t *peonify.Task) error {
	if err := validText(t); err != nil {
		return err
	}
	if t.Priority < math.MinInt32 || t.Priority > math.MaxInt32 || t.MaxAttempts > math.MaxInt32 {
		return &peonify.InvalidTaskError{ID: t.ID, Reason: "Priority or MaxAttempts does not fit in 32 bits"}
	}
	if _, ok := b.seen[t.ID]; ok {
		b.dups = append(b.dups, t.ID)
		return nil
	}
	b.seen[t.ID] = struct{}{}
	var h *string
	if len(t.Headers) > 0 {
		j, err := json.Marshal(t.Headers)
		if err != nil {
			return &peonify.InvalidTaskError{ID: t.ID, Reason: "Headers do not encode as JSON: " + err.Error()}
		}
		js := string(j)
		h = &js
	}
	var uk *string
	if t.UniqueKey != "" {
		k := t.UniqueKey
		uk = &k
	}
	payload := t.Payload
	if payload == nil {
		payload = []byte{}
	}
	b.tasks = append(b.tasks, t)
	b.ids = append(b.ids, t.ID)
	b.types = append(b.types, t.Type)
	b.payloads = append(b.payloads, payload)
	b.headers = append(b.headers, h)
	b.priorities = append(b.priorities, int32(t.Priority))
	b.maxAttempts = append(b.maxAttempts, int32(t.MaxAttempts))
	b.uniqueKeys = append(b.uniqueKeys, uk)
	b.enqueuedAt = append(b.enqueuedAt, t.EnqueuedAt)
	b.runAt = append(b.runAt, pgtype.Timestamptz{Time: t.RunAt, Valid: !t.RunAt.IsZero()})
	b.keys = append(b.keys, t.Key)
	var wf *string
	if t.Workflow != "" {
		w := t.Workflow
		wf = &w
	}
	b.workflows = append(b.workflows, wf)
	b.allow = append(b.allow, t.AllowFailedParents)
	for _, p := range t.Parents {
		b.edgeParents = append(b.edgeParents, p)
		b.edgeChildren = append(b.edgeChildren, t.ID)
	}
	return nil
}

// validText rejects strings that Postgres text columns cannot hold, with
// a reason instead of a database error.
func validText(t *peonify.Task) error {
	for _, f := range []struct{ name, v string }{{"ID", t.ID}, {"Type", t.Type}, {"UniqueKey", t.UniqueKey}, {"Key", t.Key}, {"Workflow", t.Workflow}} {
		if !utf8.ValidString(f.v) || strings.IndexByte(f.v, 0) >= 0 {
			return &peonify.InvalidTaskError{ID: t.ID, Reason: "task " + f.name + " must be valid UTF-8 without NUL bytes"}
		}
	}
	for _, p := range t.Parents {
		if !utf8.ValidString(p) || strings.IndexByte(p, 0) >= 0 {
			return &peonify.InvalidTaskError{ID: t.ID, Reason: "task Parents must be valid UTF-8 without NUL bytes"}
		}
	}
	for k, v := range t.Headers {
		if !utf8.ValidString(k) || !utf8.ValidString(v) || strings.IndexByte(k, 0) >= 0 || strings.IndexByte(v, 0) >= 0 {
			return &peonify.InvalidTaskError{ID: t.ID, Reason: "task Headers must be valid UTF-8 without NUL bytes"}
		}
	}
	return nil
}

// duplicates returns the error for the tasks of b that are not in
// inserted, or nil.
func (b *batch) duplicates(inserted []string) error {
	if len(inserted) == b.n() && len(b.dups) == 0 {
		return nil
	}
	in := make(map[string]struct{}, len(inserted))
	for _, id := range inserted {
		in[id] = struct{}{}
	}
	var ids []string
	for _, id := range b.ids {
		if _, ok := in[id]; !ok {
			ids = append(ids, id)
		}
	}
	ids = append(ids, b.dups...)
	if len(ids) == 0 {
		return nil
	}
	return &peonify.DuplicateError{IDs: ids}
}

// insert stores b with one INSERT ... SELECT FROM unnest(...) and returns
// the IDs it inserted.
func (s *Stream) insert(ctx context.Context, q querier, b *batch) ([]string, error) {
	rows, err := q.Query(ctx, s.sql.insert, s.cfg.Queue, b.ids, b.types, b.payloads, b.headers, b.priorities,
		b.maxAttempts, b.uniqueKeys, b.enqueuedAt, b.runAt, b.keys, b.workflows)
	if err != nil {
		return nil, s.dbError("enqueueing tasks", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, s.dbError("enqueueing tasks", err)
	}
	return ids, nil
}

// copyInsert stores b in tx with COPY, the fastest way into Postgres, in a
// savepoint. COPY cannot skip duplicates: if one makes it fail, the
// savepoint is rolled back and the batch goes through insert, which skips
// and reports them. It returns the IDs it inserted.
func (s *Stream) copyInsert(ctx context.Context, tx pgx.Tx, b *batch) ([]string, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, s.dbError("starting a bulk enqueue", err)
	}
	err = s.copyRows(ctx, sp, b)
	if err == nil {
		if err := sp.Commit(ctx); err != nil {
			return nil, s.dbError("finishing a bulk enqueue", err)
		}
		return b.ids, nil
	}
	if rbErr := sp.Rollback(ctx); rbErr != nil {
		return nil, s.dbError("undoing a bulk enqueue", errors.Join(err, rbErr))
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" { // unique_violation
		return nil, s.dbError("copying tasks", err)
	}
	return s.insert(ctx, tx, b)
}

// copyRows copies b into the task table: the tasks without RunAt without
// that column, so that they get the database's now() as the other paths
// give them, and the scheduled ones with it.
func (s *Stream) copyRows(ctx context.Context, tx pgx.Tx, b *batch) error {
	table := pgx.Identifier{s.cfg.Schema, "peonify_tasks"}
	cols := []string{"queue", "id", "type", "payload", "headers", "priority", "max_attempts", "unique_key", "enqueued_at", "key", "workflow", "run_at"}
	return b.copyInTwo(cols, func(rows []int, c []string, scheduled bool) error {
		_, err := tx.CopyFrom(ctx, table, c, pgx.CopyFromSlice(len(rows), func(j int) ([]any, error) {
			i := rows[j]
			var h, uk, wf any
			if b.headers[i] != nil {
				h = *b.headers[i]
			}
			if b.workflows[i] != nil {
				wf = *b.workflows[i]
			}
			if b.uniqueKeys[i] != nil {
				uk = *b.uniqueKeys[i]
			}
			v := []any{s.cfg.Queue, b.ids[i], b.types[i], b.payloads[i], h, b.priorities[i], b.maxAttempts[i], uk, b.enqueuedAt[i], b.keys[i], wf}
			if scheduled {
				v = append(v, b.runAt[i])
			}
			return v, nil
		}))
		return err
	})
}

// copyInTwo calls fn for b's tasks in two sets, each with its rows'
// indexes in b and the columns to copy: the tasks without RunAt with cols
// but its last (run_at), so that they get the database's now() as the other
// paths give them, and then the scheduled ones with every column. It skips
// a set with no tasks, and stops at the first error.
func (b *batch) copyInTwo(cols []string, fn func(rows []int, cols []string, scheduled bool) error) error {
	for _, scheduled := range []bool{false, true} {
		var rows []int
		for i, r := range b.runAt {
			if r.Valid == scheduled {
				rows = append(rows, i)
			}
		}
		if len(rows) == 0 {
			continue
		}
		c := cols
		if !scheduled {
			c = cols[:len(cols)-1]
		}
		if err := fn(rows, c, scheduled); err != nil {
			return err
		}
	}
	return nil
}
