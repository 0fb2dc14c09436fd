package sqlitestream

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migrations creates and upgrades the schema. migrations[i] takes a file
// from PRAGMA user_version i to i+1; append new steps, never edit old ones.
//
// One row is one task. state is its life-cycle state, and visible_at the
// time that matters in that state: when a scheduled task falls due, when a
// running task's lease ends, when a dead or done task finished. Each state
// has its own partial index, so a claim reads only pending rows in priority
// order, and the due scheduled tasks and expired leases are found by one
// range each. token is the fencing token of the latest claim, 0 when the
// task is not claimed.
var migrations = []string{
	`CREATE TABLE peonify_tasks (
		id           TEXT    NOT NULL PRIMARY KEY,
		type         TEXT    NOT NULL,
		payload      BLOB,
		headers      TEXT,
		priority     INTEGER NOT NULL DEFAULT 0,
		unique_key   TEXT,
		max_attempts INTEGER NOT NULL DEFAULT 0,
		run_at       INTEGER NOT NULL DEFAULT 0,
		enqueued_at  INTEGER NOT NULL,
		state        TEXT    NOT NULL CHECK (state IN ('pending', 'scheduled', 'running', 'dead', 'done')),
		visible_at   INTEGER NOT NULL,
		attempts     INTEGER NOT NULL DEFAULT 0,
		token        INTEGER NOT NULL DEFAULT 0,
		last_error   TEXT    NOT NULL DEFAULT '',
		updated_at   INTEGER NOT NULL
	) STRICT;
	CREATE INDEX peonify_tasks_pending   ON peonify_tasks (priority DESC, visible_at) WHERE state = 'pending';
	CREATE INDEX peonify_tasks_scheduled ON peonify_tasks (visible_at) WHERE state = 'scheduled';
	CREATE INDEX peonify_tasks_running   ON peonify_tasks (visible_at) WHERE state = 'running';
	CREATE INDEX peonify_tasks_dead      ON peonify_tasks (visible_at) WHERE state = 'dead';
	CREATE INDEX peonify_tasks_done      ON peonify_tasks (visible_at) WHERE state = 'done';
	CREATE UNIQUE INDEX peonify_tasks_unique ON peonify_tasks (unique_key)
		WHERE unique_key IS NOT NULL AND state IN ('pending', 'scheduled', 'running');`,

	// Flow control (see limit.go). key is Task.Key; claimed_by the
	// instance (a random number per open Stream) that made the latest
	// claim, which Local limits count. The key index holds the live tasks
	// with a key only, so that stores without keys pay nothing for it; it
	// finds the head of a key (its live task received first: the lowest
	// rowid) for Ordered limits. peonify_limit_buckets holds the token
	// buckets of rate limits, one row per limit and key ('' for a limit
	// that is not per key).
	`ALTER TABLE peonify_tasks ADD COLUMN key TEXT NOT NULL DEFAULT '';
	ALTER TABLE peonify_tasks ADD COLUMN claimed_by INTEGER NOT NULL DEFAULT 0;
	CREATE INDEX peonify_tasks_key ON peonify_tasks (key)
		WHERE key <> '' AND state IN ('pending', 'scheduled', 'running');
	CREATE TABLE peonify_limit_buckets (
		name   TEXT    NOT NULL,
		key    TEXT    NOT NULL,
		tokens REAL    NOT NULL,
		at     INTEGER NOT NULL,
		PRIMARY KEY (name, key)
	) STRICT, WITHOUT ROWID;`,

	// Results, progress, cancellation and workflows. SQLite cannot
	// change the CHECK of a column, so the table is rebuilt with the
	// states 'waiting' and 'cancelled', keeping each row's rowid (the
	// order an Ordered limit follows); its indexes are made again.
	//
	// workflow is Task.Workflow, parents Task.Parents as a JSON array
	// (NULL for none), allow_failed Task.AllowFailedParents; result the
	// result of a done task (NULL for none), progress, progress_message
	// and progress_at its last progress. A cancelled task whose claim was
	// running keeps that claim's token negated, so that the claim's
	// fenced statements match no row any more, while its Extend and
	// SetProgress can still tell it was cancelled. A done task's
	// visible_at is when the cleanup deletes it (it was when it finished;
	// see migrate).
	//
	// peonify_deps holds the dependencies whose parent has not finished
	// yet, found by parent: finishing a task reads and deletes its rows.
	// peonify_waiting holds, for each waiting task, how many of its
	// parents have not finished: a narrow row, so that a fan-in task with
	// thousands of parents is not rewritten, parents list and all, by
	// each parent's ack.
	`CREATE TABLE peonify_tasks_v3 (
		id               TEXT    NOT NULL PRIMARY KEY,
		type             TEXT    NOT NULL,
		payload          BLOB,
		headers          TEXT,
		priority         INTEGER NOT NULL DEFAULT 0,
		unique_key       TEXT,
		max_attempts     INTEGER NOT NULL DEFAULT 0,
		run_at           INTEGER NOT NULL DEFAULT 0,
		enqueued_at      INTEGER NOT NULL,
		state            TEXT    NOT NULL CHECK (state IN
			('waiting', 'pending', 'scheduled', 'running', 'dead', 'cancelled', 'done')),
		visible_at       INTEGER NOT NULL,
		attempts         INTEGER NOT NULL DEFAULT 0,
		token            INTEGER NOT NULL DEFAULT 0,
		last_error       TEXT    NOT NULL DEFAULT '',
		updated_at       INTEGER NOT NULL,
		key              TEXT    NOT NULL DEFAULT '',
		claimed_by       INTEGER NOT NULL DEFAULT 0,
		workflow         TEXT    NOT NULL DEFAULT '',
		parents          TEXT,
		allow_failed     INTEGER NOT NULL DEFAULT 0,
		result           BLOB,
		progress         REAL    NOT NULL DEFAULT 0,
		progress_message TEXT    NOT NULL DEFAULT '',
		progress_at      INTEGER NOT NULL DEFAULT 0
	) STRICT;
	INSERT INTO peonify_tasks_v3 (rowid, id, type, payload, headers, priority, unique_key, max_attempts, run_at,
			enqueued_at, state, visible_at, attempts, token, last_error, updated_at, key, claimed_by)
		SELECT rowid, id, type, payload, headers, priority, unique_key, max_attempts, run_at,
			enqueued_at, state, visible_at, attempts, token, last_error, updated_at, key, claimed_by
		FROM peonify_tasks ORDER BY rowid;
	DROP TABLE peonify_tasks;
	ALTER TABLE peonify_tasks_v3 RENAME TO peonify_tasks;
	CREATE INDEX peonify_tasks_pending   ON peonify_tasks (priority DESC, visible_at) WHERE state = 'pending';
	CREATE INDEX peonify_tasks_scheduled ON peonify_tasks (visible_at) WHERE state = 'scheduled';
	CREATE INDEX peonify_tasks_running   ON peonify_tasks (visible_at) WHERE state = 'running';
	CREATE INDEX peonify_tasks_dead      ON peonify_tasks (visible_at) WHERE state = 'dead';
	CREATE INDEX peonify_tasks_done      ON peonify_tasks (visible_at) WHERE state = 'done';
	CREATE INDEX peonify_tasks_waiting   ON peonify_tasks (visible_at) WHERE state = 'waiting';
	CREATE INDEX peonify_tasks_cancelled ON peonify_tasks (visible_at) WHERE state = 'cancelled';
	CREATE UNIQUE INDEX peonify_tasks_unique ON peonify_tasks (unique_key)
		WHERE unique_key IS NOT NULL AND state IN ('waiting', 'pending', 'scheduled', 'running');
	CREATE INDEX peonify_tasks_key ON peonify_tasks (key)
		WHERE key <> '' AND state IN ('pending', 'scheduled', 'running');
	CREATE INDEX peonify_tasks_workflow ON peonify_tasks (workflow, id) WHERE workflow <> '';
	CREATE TABLE peonify_deps (
		parent TEXT NOT NULL,
		child  TEXT NOT NULL,
		PRIMARY KEY (parent, child)
	) STRICT, WITHOUT ROWID;
	CREATE TABLE peonify_waiting (
		id           TEXT    NOT NULL PRIMARY KEY,
		waiting_on   INTEGER NOT NULL,
		allow_failed INTEGER NOT NULL DEFAULT 0
	) STRICT, WITHOUT ROWID;`,
}

// rebuildVersion is the schema version whose migration rebuilds
// peonify_tasks (see migrations): the groups index, when the file has it,
// is made again after it, and done tasks get their deletion time.
const rebuildVersion = 3

// groupsIndex creates the groups index, which keeps the pending tasks of
// each key and type together, in the usual order (priority, then the
// longest ready), so that a limited claim finds the first tasks of a
// group with one probe and steps from one group to the next with another,
// however many tasks wait in each (see claim.pick). It is not one of the
// migrations: the first limited claim on a file creates it, so that a
// file whose processors never set limits does not pay for it on every
// enqueue and claim.
const groupsIndex = `CREATE INDEX IF NOT EXISTS peonify_tasks_groups
	ON peonify_tasks (key, type, priority DESC, visible_at) WHERE state = 'pending'`

// migrate brings the schema of the database on conn up to date in one
// write transaction, so that processes opening the file at once do not race.
//
// keepDone is Config.KeepDone of the Stream that opens the file: the done
// tasks of a file older than the rebuild, whose visible_at is when they
// finished, are kept for that long after it, as they would have been.
func migrate(ctx context.Context, conn *sql.Conn, keepDone time.Duration) (err error) {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("lock the database to check its schema: %w", err)
	}
	defer func() {
		if err != nil {
			_, _ = conn.ExecContext(ctx, "ROLLBACK")
		}
	}()
	var version int
	if err := conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read the schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("the file has schema version %d, newer than the %d this sqlitestream knows: "+
			"open it with a newer release of peonify", version, len(migrations))
	}
	if version == 0 {
		// A file with tables of its own must not be one of ours already.
		var n int
		if err := conn.QueryRowContext(ctx,
			"SELECT count(*) FROM sqlite_schema WHERE name = 'peonify_tasks'").Scan(&n); err != nil {
			return fmt.Errorf("read the schema: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("the file has a peonify_tasks table but no schema version: " +
				"it was not made by sqlitestream; rename that table or use another file")
		}
	}
	for v := version; v < len(migrations); v++ {
		groups := false
		if v+1 == rebuildVersion {
			if err := conn.QueryRowContext(ctx,
				"SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'peonify_tasks_groups'").Scan(&groups); err != nil {
				return fmt.Errorf("read the schema: %w", err)
			}
		}
		if _, err := conn.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrate the schema to version %d: %w", v+1, err)
		}
		if v+1 != rebuildVersion {
			continue
		}
		if groups {
			if _, err := conn.ExecContext(ctx, groupsIndex); err != nil {
				return fmt.Errorf("migrate the schema to version %d: make the groups index again: %w", v+1, err)
			}
		}
		if _, err := conn.ExecContext(ctx, "UPDATE peonify_tasks SET visible_at = visible_at + ?1 WHERE state = 'done'",
			keepDone.Nanoseconds()); err != nil {
			return fmt.Errorf("migrate the schema to version %d: set when done tasks are deleted: %w", v+1, err)
		}
	}
	if version < len(migrations) {
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
			return fmt.Errorf("record the schema version: %w", err)
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit the schema: %w", err)
	}
	return nil
}
