package sqlitestream

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// writer runs every write of a Stream on one connection. SQLite has a single
// writer per file anyway; funnelling the writes through one goroutine lets
// it put all operations that arrive while a transaction commits into the
// next transaction (group commit), so many enqueues, claims and acks share
// one sync to disk. An operation that arrives while the writer is idle runs
// at once: batching adds no latency.
type writer struct {
	db       *sql.DB
	conn     *sql.Conn
	st       stmts
	ready    *sql.Stmt // on the pool: whether anything can be claimed (see Stream.readyAt)
	ops      chan *op  // unbuffered: callers wait in line while a transaction runs
	quit     chan struct{}
	exited   chan struct{}
	closeErr error // set before exited is closed

	// watchDone, when not nil, is closed when the Stream's watch goroutine
	// has returned its connection; the database closes after that.
	watchDone chan struct{}
	maxBatch  int
	now       func() time.Time
	log       *slog.Logger

	cleanEvery time.Duration // 0 when nothing needs cleaning up
	clean      func(tx *wtx) (more bool, err error)

	// For tests: how many transactions ran, the most operations one of
	// them carried, and how many statements the last one ran.
	commits   atomic.Int64
	largest   atomic.Int64
	lastStmts atomic.Int64
}

// op is one operation for the writer. run executes its statements inside
// the batch's transaction; an error from run is a database failure, which
// rolls the batch back. Outcomes that are not failures (a lost lease, a
// duplicate) are recorded by run in variables it captured. run may be called
// again after a rollback, so it must reset what it records.
type op struct {
	run  func(tx *wtx) error
	err  error
	done chan struct{}
}

// wtx is the transaction that a batch of operations runs in.
type wtx struct {
	st   *stmts
	conn *sql.Conn
	now  time.Time

	// stmts counts the statements run through exec, execSQL, query and
	// queryRow, for tests of what an operation costs.
	stmts int
}

// earliestDue returns when the first scheduled task falls due or the first
// lease ends, whichever is sooner, or the zero time if there is neither.
func (tx *wtx) earliestDue() (time.Time, error) {
	var sched, lease sql.NullInt64
	if err := tx.st.nextDue.QueryRow().Scan(&sched, &lease); err != nil {
		return time.Time{}, err
	}
	var next time.Time
	for _, n := range []sql.NullInt64{sched, lease} {
		if n.Valid && (next.IsZero() || n.Int64 < next.UnixNano()) {
			next = time.Unix(0, n.Int64)
		}
	}
	return next, nil
}

// exec runs a prepared statement and returns how many rows it changed.
func (tx *wtx) exec(stmt *sql.Stmt, args ...any) (int64, error) {
	tx.stmts++
	res, err := stmt.Exec(args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// query runs a prepared statement that returns rows.
func (tx *wtx) query(stmt *sql.Stmt, args ...any) (*sql.Rows, error) {
	tx.stmts++
	return stmt.Query(args...)
}

// queryRow runs a prepared statement that returns a row.
func (tx *wtx) queryRow(stmt *sql.Stmt, args ...any) *sql.Row {
	tx.stmts++
	return stmt.QueryRow(args...)
}

// querySQL and queryRowSQL run a statement that is not prepared and
// returns rows.
func (tx *wtx) querySQL(query string, args ...any) (*sql.Rows, error) {
	tx.stmts++
	return tx.conn.QueryContext(context.Background(), query, args...)
}

func (tx *wtx) queryRowSQL(query string, args ...any) *sql.Row {
	tx.stmts++
	return tx.conn.QueryRowContext(context.Background(), query, args...)
}

// execSQL runs a statement that is not prepared (a rare one, such as an
// Inspector's repair) and returns how many rows it changed.
func (tx *wtx) execSQL(query string, args ...any) (int64, error) {
	tx.stmts++
	res, err := tx.conn.ExecContext(context.Background(), query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func newWriter(db *sql.DB, cfg Config, now func() time.Time) (*writer, error) {
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := enableWAL(ctx, conn, cfg.BusyTimeout); err != nil {
		conn.Close()
		return nil, err
	}
	if err := migrate(ctx, conn, cfg.KeepDone); err != nil {
		conn.Close()
		return nil, err
	}
	w := &writer{
		db:       db,
		conn:     conn,
		ops:      make(chan *op),
		quit:     make(chan struct{}),
		exited:   make(chan struct{}),
		maxBatch: cfg.MaxBatch,
		now:      now,
		log:      cfg.Logger,
	}
	if err := w.st.prepare(ctx, conn); err != nil {
		w.st.close()
		conn.Close()
		return nil, err
	}
	// Prepared on the pool, not on the writer's connection: Poll runs it
	// beside the writer.
	w.ready, err = db.PrepareContext(ctx, readyQuery)
	if err != nil {
		w.st.close()
		conn.Close()
		return nil, fmt.Errorf("prepare the ready statement: %w", err)
	}
	// Done tasks with a result are kept for Config.ResultRetention, so
	// there is always something that may need cleaning up.
	w.cleanEvery = cleanupInterval(cfg)
	w.clean = func(tx *wtx) (bool, error) { return cleanup(tx, cfg) }
	return w, nil
}

// enableWAL puts the database in WAL mode, which the file remembers. SQLite
// answers SQLITE_BUSY at once, without waiting, while another connection
// converts a new file, so enableWAL retries until busyTimeout has passed.
func enableWAL(ctx context.Context, conn *sql.Conn, busyTimeout time.Duration) error {
	deadline := time.Now().Add(busyTimeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		var mode string
		err := conn.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode)
		switch {
		case err == nil && mode == "wal":
			return nil
		case err == nil:
			return fmt.Errorf("the database could not be put in WAL mode (it is in %q mode): "+
				"it must be on a local file system that supports shared memory", mode)
		case !isBusy(err) || time.Now().After(deadline):
			return fmt.Errorf("put the database in WAL mode: %w", err)
		}
		time.Sleep(wait)
	}
}

// isBusy reports whether err is SQLite's SQLITE_BUSY: another connection
// holds a lock.
func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// cleanupInterval is how often finished tasks are deleted: often enough that
// they outlive their retention by at most a quarter of it, at most once a
// second and at least once a minute.
func cleanupInterval(cfg Config) time.Duration {
	d := time.Minute
	for _, keep := range []time.Duration{cfg.KeepDone, cfg.KeepDead, cfg.ResultRetention} {
		if keep > 0 {
			d = min(d, keep/4)
		}
	}
	return max(d, time.Second)
}

// do hands run to the writer and waits for its transaction to commit. If ctx
// ends before the writer takes the operation, do returns ctx's error and
// run never executes; once taken, the operation completes.
func (w *writer) do(ctx context.Context, run func(tx *wtx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-w.quit:
		return errClosed
	default:
	}
	o := &op{run: run, done: make(chan struct{})}
	select {
	case w.ops <- o:
	case <-w.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	<-o.done
	return o.err
}

// loop is the writer goroutine. It ends when quit is closed, after the batch
// in progress, and then closes the database.
func (w *writer) loop() {
	defer w.shutdown()
	var tick <-chan time.Time
	if w.cleanEvery > 0 {
		t := time.NewTicker(w.cleanEvery)
		defer t.Stop()
		tick = t.C
	}
	batch := make([]*op, 0, w.maxBatch)
	for {
		select {
		case o := <-w.ops:
			batch = append(batch, o)
		case <-tick:
			w.cleanup()
			continue
		case <-w.quit:
			return
		}
	fill:
		for len(batch) < w.maxBatch {
			select {
			case o := <-w.ops:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		w.commit(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// cleanup deletes finished tasks past their retention, a bounded number per
// transaction so that it never holds the write lock for long.
func (w *writer) cleanup() {
	for {
		var more bool
		o := &op{done: make(chan struct{}), run: func(tx *wtx) (err error) {
			more, err = w.clean(tx)
			return err
		}}
		w.commit([]*op{o})
		if o.err != nil {
			w.log.Error("sqlitestream: deleting finished tasks past their retention failed; will retry", "err", o.err)
			return
		}
		if !more {
			return
		}
		select {
		case <-w.quit:
			return
		default:
		}
	}
}

// commit runs a batch in one transaction and completes its operations. If
// an operation fails, the batch is rolled back and every operation is run
// again in a transaction of its own, so that one failure fails only its
// own caller.
func (w *writer) commit(batch []*op) {
	w.commits.Add(1)
	if n := int64(len(batch)); n > w.largest.Load() {
		w.largest.Store(n) // only the writer goroutine stores
	}
	tx := &wtx{st: &w.st, conn: w.conn, now: w.now()}
	err := w.exec("BEGIN IMMEDIATE")
	if err != nil {
		w.finish(batch, fmt.Errorf("sqlitestream: begin a write transaction: %w", err))
		return
	}
	for _, o := range batch {
		if err = o.run(tx); err != nil {
			break
		}
	}
	if err == nil {
		w.lastStmts.Store(int64(tx.stmts))
		if err = w.exec("COMMIT"); err == nil {
			w.finish(batch, nil)
			return
		}
		err = fmt.Errorf("sqlitestream: commit: %w", err)
	} else {
		err = fmt.Errorf("sqlitestream: %w", err)
	}
	_ = w.exec("ROLLBACK") // fails harmlessly when SQLite already rolled back
	if len(batch) == 1 {
		w.finish(batch, err)
		return
	}
	for _, o := range batch {
		w.commit([]*op{o})
	}
}

func (w *writer) finish(batch []*op, err error) {
	for _, o := range batch {
		o.err = err
		close(o.done)
	}
}

func (w *writer) exec(query string) error {
	_, err := w.conn.ExecContext(context.Background(), query)
	return err
}

// shutdown closes the statements, the connection and the database.
func (w *writer) shutdown() {
	w.st.close()
	_ = w.ready.Close()
	err := w.conn.Close()
	if w.watchDone != nil {
		<-w.watchDone
	}
	if dbErr := w.db.Close(); err == nil {
		err = dbErr
	}
	if err != nil {
		w.closeErr = fmt.Errorf("sqlitestream: close: %w", err)
	}
	close(w.exited)
}

// stmts are the writer's prepared statements.
type stmts struct {
	insert    *sql.Stmt
	promote   *sql.Stmt
	rescue    *sql.Stmt
	claim     *sql.Stmt
	nextDue   *sql.Stmt
	ackDelete *sql.Stmt
	ackDone   *sql.Stmt
	ackKeep   *sql.Stmt
	retry     *sql.Stmt
	release   *sql.Stmt
	bury      *sql.Stmt
	extend    *sql.Stmt
	cleanDone *sql.Stmt
	cleanDead *sql.Stmt
	cleanCanc *sql.Stmt

	// Results, progress, cancellation and workflows (see track.go and
	// workflow.go).
	progress    *sql.Stmt
	isCancelled *sql.Stmt
	cancel      *sql.Stmt
	insertDeps  *sql.Stmt
	insertWaits *sql.Stmt
	depsOf      *sql.Stmt
	dropDeps    *sql.Stmt
	countOne    *sql.Stmt
	waitingOn   *sql.Stmt
	countDown   *sql.Stmt
	dropWaits   *sql.Stmt
	unwait      *sql.Stmt
	unwaitAll   *sql.Stmt
	wakeUp      *sql.Stmt
	cancelChild *sql.Stmt
	wfExists    *sql.Stmt
	claimWf     *sql.Stmt
	stateOf     *sql.Stmt
	addWaits    *sql.Stmt

	// The limit-aware claim's (see limit.go).
	runningUse    *sql.Stmt
	pendingWindow *sql.Stmt
	pendingRow    *sql.Stmt
	groupsAfter   *sql.Stmt
	groupsFrom    *sql.Stmt
	groupTasks    *sql.Stmt
	keyHead       *sql.Stmt
	bucketGet     *sql.Stmt
	bucketPut     *sql.Stmt
	claimPicked   *sql.Stmt

	all []*sql.Stmt
}

// readyQuery tells whether a task is pending, and when the first scheduled
// task falls due and the first lease ends.
const readyQuery = `SELECT EXISTS (SELECT 1 FROM peonify_tasks WHERE state = 'pending'),
	(SELECT min(visible_at) FROM peonify_tasks WHERE state = 'scheduled'),
	(SELECT min(visible_at) FROM peonify_tasks WHERE state = 'running')`

// The columns of a task, in the order scanTask reads them.
const taskColumns = `id, type, payload, headers, priority, unique_key, max_attempts, run_at, enqueued_at,
	attempts, last_error, token, state, visible_at, updated_at, key,
	workflow, parents, allow_failed, result, progress, progress_message, progress_at`

// taskColumnsNoResult is taskColumns without the result, which reads as
// NULL.
const taskColumnsNoResult = `id, type, payload, headers, priority, unique_key, max_attempts, run_at, enqueued_at,
	attempts, last_error, token, state, visible_at, updated_at, key,
	workflow, parents, allow_failed, NULL, progress, progress_message, progress_at`

// groupsQuery returns the query of the heads of the groups after (op ">")
// or from (op ">=") the group ?1, ?2; see stmts.groupsAfter. A row value
// comparison, (key, type) > (...), would serve the first probe but not
// the recursive ones, which SQLite narrows by key alone: a key's many
// tasks would be read. Each probe is written as two, of the same key
// then of the next keys, so that each is one index search. The limit is
// cast: SQLite prepares the statement again whenever a bare parameter in
// a recursive query's LIMIT changes, which costs more than the query.
func groupsQuery(op string) string {
	next := func(t, key, typ, op string) string {
		head := ` ORDER BY ` + t + `.key, ` + t + `.type, ` + t + `.priority DESC, ` + t + `.visible_at LIMIT 1)`
		return `coalesce(
			(SELECT ` + t + `.rowid FROM peonify_tasks ` + t + ` WHERE ` + t + `.state = 'pending' AND ` + t + `.key = ` + key +
			` AND ` + t + `.type ` + op + ` ` + typ + head + `,
			(SELECT ` + t + `.rowid FROM peonify_tasks ` + t + ` WHERE ` + t + `.state = 'pending' AND ` + t + `.key > ` + key + head + `)`
	}
	return `WITH RECURSIVE g(r) AS (
		SELECT ` + next("f", "?1", "?2", op) + `
		UNION ALL
		SELECT ` + next("n", "p.key", "p.type", ">") + `
		FROM g JOIN peonify_tasks p ON p.rowid = g.r
		LIMIT CAST(?3 AS INTEGER)
	)
	SELECT t.rowid, t.id, t.type, t.key, t.priority, t.visible_at FROM g JOIN peonify_tasks t ON t.rowid = g.r`
}

// stmtDef is a statement to prepare, and where to keep it.
type stmtDef struct {
	name  string
	dst   **sql.Stmt
	query string
}

// defs lists the statements that prepare prepares.
func (s *stmts) defs() []stmtDef {
	return []stmtDef{
		{"insert", &s.insert, `INSERT INTO peonify_tasks (id, type, payload, headers, priority, unique_key, max_attempts,
				run_at, enqueued_at, state, visible_at, updated_at, key, workflow, parents, allow_failed)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
			ON CONFLICT DO NOTHING`},
		// A claim first makes due scheduled tasks and expired leases
		// pending, then leases the first pending tasks in priority order.
		// An expired lease keeps its token until the task is claimed again,
		// so a slow worker that finishes before that can still ack it.
		{"promote", &s.promote, `UPDATE peonify_tasks SET state = 'pending', updated_at = ?1
			WHERE state = 'scheduled' AND visible_at <= ?1`},
		{"rescue", &s.rescue, `UPDATE peonify_tasks SET state = 'pending', updated_at = ?1
			WHERE state = 'running' AND visible_at <= ?1`},
		{"claim", &s.claim, `UPDATE peonify_tasks
			SET state = 'running', visible_at = ?2, token = random() | 1, attempts = attempts + 1, updated_at = ?1,
				claimed_by = ?4
			WHERE rowid IN (SELECT rowid FROM peonify_tasks WHERE state = 'pending'
				ORDER BY priority DESC, visible_at LIMIT ?3)
			RETURNING ` + taskColumns},
		{"nextDue", &s.nextDue, `SELECT (SELECT min(visible_at) FROM peonify_tasks WHERE state = 'scheduled'),
			(SELECT min(visible_at) FROM peonify_tasks WHERE state = 'running')`},
		// Fenced by token: a claim that is no longer current matches no row.
		{"ackDelete", &s.ackDelete, `DELETE FROM peonify_tasks WHERE id = ?1 AND token = ?2`},
		// A done task's visible_at is when the cleanup deletes it.
		{"ackDone", &s.ackDone, `UPDATE peonify_tasks SET state = 'done', token = 0, visible_at = ?4, updated_at = ?3
			WHERE id = ?1 AND token = ?2`},
		{"ackKeep", &s.ackKeep, `UPDATE peonify_tasks SET state = 'done', token = 0, visible_at = ?4, updated_at = ?3,
				result = ?5
			WHERE id = ?1 AND token = ?2`},
		{"retry", &s.retry, `UPDATE peonify_tasks
			SET state = ?3, token = 0, visible_at = ?4, last_error = ?5, updated_at = ?6
			WHERE id = ?1 AND token = ?2`},
		{"release", &s.release, `UPDATE peonify_tasks
			SET state = ?3, token = 0, visible_at = ?4, attempts = max(attempts - 1, 0), updated_at = ?5
			WHERE id = ?1 AND token = ?2`},
		{"bury", &s.bury, `UPDATE peonify_tasks SET state = 'dead', token = 0, visible_at = ?3, last_error = ?4, updated_at = ?3
			WHERE id = ?1 AND token = ?2`},
		{"extend", &s.extend, `UPDATE peonify_tasks SET state = 'running', visible_at = ?3, updated_at = ?4
			WHERE id = ?1 AND token = ?2`},
		// The state is written out, not bound, so that the partial
		// index of that state can serve the query.
		{"cleanDone", &s.cleanDone, `DELETE FROM peonify_tasks WHERE rowid IN
			(SELECT rowid FROM peonify_tasks WHERE state = 'done' AND visible_at <= ?1 LIMIT ?2)`},
		{"cleanDead", &s.cleanDead, `DELETE FROM peonify_tasks WHERE rowid IN
			(SELECT rowid FROM peonify_tasks WHERE state = 'dead' AND visible_at <= ?1 LIMIT ?2)`},
		{"cleanCanc", &s.cleanCanc, `DELETE FROM peonify_tasks WHERE rowid IN
			(SELECT rowid FROM peonify_tasks WHERE state = 'cancelled' AND visible_at <= ?1 LIMIT ?2)`},

		// Fenced like Ack.
		{"progress", &s.progress, `UPDATE peonify_tasks SET progress = ?3, progress_message = ?4, progress_at = ?5,
				updated_at = ?6
			WHERE id = ?1 AND token = ?2`},
		// Whether the claim with token ?2 (negated by cancel) was cancelled.
		{"isCancelled", &s.isCancelled, `SELECT count(*) FROM peonify_tasks WHERE id = ?1 AND token = -?2 AND state = 'cancelled'`},
		{"cancel", &s.cancel, `UPDATE peonify_tasks
			SET state = 'cancelled', token = -token, last_error = ?2, visible_at = ?3, updated_at = ?3
			WHERE id = ?1 AND state IN ('waiting', 'pending', 'scheduled', 'running')
			RETURNING workflow`},
		// The dependencies, as a JSON array of [parent, child] pairs, and
		// the waiting tasks, as one of [id, parents, allow failed parents].
		{"insertDeps", &s.insertDeps, `INSERT INTO peonify_deps (parent, child)
			SELECT value ->> 0, value ->> 1 FROM json_each(?1) WHERE true
			ON CONFLICT DO NOTHING`},
		{"insertWaits", &s.insertWaits, `INSERT INTO peonify_waiting (id, waiting_on, allow_failed)
			SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?1) WHERE true
			ON CONFLICT (id) DO UPDATE SET waiting_on = waiting_on + excluded.waiting_on`},
		// The dependents of task ?1, which finished; dropDeps forgets
		// them. (A DELETE with RETURNING would cost a temporary table.)
		{"depsOf", &s.depsOf, `SELECT child FROM peonify_deps WHERE parent = ?1`},
		{"dropDeps", &s.dropDeps, `DELETE FROM peonify_deps WHERE parent = ?1`},
		// countOne and waitingOn are countDown for one task, without the
		// temporary table of a RETURNING.
		{"countOne", &s.countOne, `UPDATE peonify_waiting SET waiting_on = waiting_on - 1
			WHERE id = ?1 AND (?2 OR allow_failed = 1)`},
		{"waitingOn", &s.waitingOn, `SELECT waiting_on FROM peonify_waiting WHERE id = ?1`},
		// A parent of the waiting tasks ?1 (a JSON array) finished: with
		// ?2 true it succeeded, and counts for all of them; otherwise only
		// for those that allow failed parents.
		{"countDown", &s.countDown, `UPDATE peonify_waiting SET waiting_on = waiting_on - 1
			WHERE id IN (SELECT value FROM json_each(?1)) AND (?2 OR allow_failed = 1)
			RETURNING id, waiting_on`},
		// The waiting tasks among ?1 that do not allow failed parents: a
		// parent failed, so they are cancelled.
		{"dropWaits", &s.dropWaits, `DELETE FROM peonify_waiting
			WHERE id IN (SELECT value FROM json_each(?1)) AND allow_failed = 0
			RETURNING id`},
		{"unwait", &s.unwait, `DELETE FROM peonify_waiting WHERE id = ?1`},
		{"unwaitAll", &s.unwaitAll, `DELETE FROM peonify_waiting WHERE id IN (SELECT value FROM json_each(?1))`},
		// Waiting tasks whose parents have all finished become ready, or
		// scheduled for their RunAt.
		{"wakeUp", &s.wakeUp, `UPDATE peonify_tasks
			SET state = CASE WHEN run_at > ?2 THEN 'scheduled' ELSE 'pending' END,
				visible_at = max(run_at, ?2), updated_at = ?2
			WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'waiting'
			RETURNING state, visible_at`},
		{"cancelChild", &s.cancelChild, `UPDATE peonify_tasks
			SET state = 'cancelled', last_error = ?2, visible_at = ?3, updated_at = ?3
			WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'waiting'
			RETURNING id`},
		// The terms of the workflow index's WHERE are written out so that
		// the index serves the query.
		{"wfExists", &s.wfExists, `SELECT EXISTS (SELECT 1 FROM peonify_tasks WHERE workflow = ?1 AND workflow <> '')`},
		// The workflow of the task whose current claim has token ?2.
		{"claimWf", &s.claimWf, `SELECT workflow FROM peonify_tasks WHERE id = ?1 AND token = ?2`},
		{"stateOf", &s.stateOf, `SELECT state FROM peonify_tasks WHERE id = ?1`},
		// The waiting tasks that depend on ?1 wait for ?2 more parents.
		{"addWaits", &s.addWaits, `UPDATE peonify_waiting SET waiting_on = waiting_on + ?2
			WHERE id IN (SELECT child FROM peonify_deps WHERE parent = ?1)
			RETURNING id`},

		// The limit-aware claim runs after promote and rescue, so every
		// running task holds a lease that has not ended.
		{"runningUse", &s.runningUse, `SELECT type, key, claimed_by FROM peonify_tasks WHERE state = 'running'`},
		// The first pending tasks in the usual order (see claim.pick).
		{"pendingWindow", &s.pendingWindow, `SELECT rowid, id, type, key, priority, visible_at FROM peonify_tasks
			WHERE state = 'pending' ORDER BY priority DESC, visible_at LIMIT ?1`},
		{"pendingRow", &s.pendingRow, `SELECT rowid, id, type, key, priority, visible_at FROM peonify_tasks
			WHERE rowid = ?1 AND state = 'pending'`},
		// The heads (first task in the usual order) of up to ?3 groups,
		// the pending tasks of one key and type, after the group (?1, ?2)
		// (groupsFrom: from it on), one index probe per group: each step
		// of the recursion finds the next group's head from the last one.
		{"groupsAfter", &s.groupsAfter, groupsQuery(">")},
		{"groupsFrom", &s.groupsFrom, groupsQuery(">=")},
		{"groupTasks", &s.groupTasks, `SELECT rowid, id, type, key, priority, visible_at FROM peonify_tasks
			WHERE state = 'pending' AND key = ?1 AND type = ?2 ORDER BY priority DESC, visible_at LIMIT ?3`},
		// The terms of the key index's WHERE are written out so that the
		// index serves the query; it keeps each key's rows in rowid
		// order, the order the file received them.
		{"keyHead", &s.keyHead, `SELECT rowid, state FROM peonify_tasks
			WHERE key = ?1 AND key <> '' AND state IN ('pending', 'scheduled', 'running') AND (?2 = '' OR type = ?2)
			ORDER BY rowid LIMIT 1`},
		{"bucketGet", &s.bucketGet, `SELECT tokens, at FROM peonify_limit_buckets WHERE name = ?1 AND key = ?2`},
		{"bucketPut", &s.bucketPut, `INSERT INTO peonify_limit_buckets (name, key, tokens, at) VALUES (?1, ?2, ?3, ?4)
			ON CONFLICT (name, key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at`},
		{"claimPicked", &s.claimPicked, `UPDATE peonify_tasks
			SET state = 'running', visible_at = ?2, token = random() | 1, attempts = attempts + 1, updated_at = ?1,
				claimed_by = ?4
			WHERE rowid IN (SELECT value FROM json_each(?3)) AND state = 'pending'
			RETURNING ` + taskColumns},
	}
}

func (s *stmts) prepare(ctx context.Context, conn *sql.Conn) error {
	for _, p := range s.defs() {
		stmt, err := conn.PrepareContext(ctx, p.query)
		if err != nil {
			return fmt.Errorf("prepare the %s statement: %w", p.name, err)
		}
		*p.dst = stmt
		s.all = append(s.all, stmt)
	}
	return nil
}

func (s *stmts) close() {
	for _, stmt := range s.all {
		_ = stmt.Close()
	}
	s.all = nil
}

// cleanup deletes up to cleanupLimit finished tasks past their retention and
// reports whether more may remain.
func cleanup(tx *wtx, cfg Config) (more bool, err error) {
	const cleanupLimit = 1000
	// A done task's visible_at is when it is to be deleted; a dead or
	// cancelled one's, when it finished.
	for _, c := range []struct {
		stmt   *sql.Stmt
		before time.Time
		on     bool
	}{
		{tx.st.cleanDone, tx.now, true},
		{tx.st.cleanDead, tx.now.Add(-cfg.KeepDead), cfg.KeepDead > 0},
		{tx.st.cleanCanc, tx.now.Add(-cfg.KeepDead), cfg.KeepDead > 0},
	} {
		if !c.on {
			continue
		}
		n, err := tx.exec(c.stmt, c.before.UnixNano(), cleanupLimit)
		if err != nil {
			return false, err
		}
		if n == cleanupLimit {
			more = true
		}
	}
	return more, nil
}
