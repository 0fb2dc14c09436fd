package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The raw SQL ceiling: a minimal queue table worked by a few loops that
// each claim rawBatch tasks with FOR UPDATE SKIP LOCKED and complete them in
// one statement, with no library and no handler. It shows how fast this
// server can drain a queue at all, so the libraries can be read against it.
const rawBatch = 100

// The names of the raw ceiling's two runs in the report.
const (
	rawAsyncLabel = "raw-sql (async commit)"
	rawSyncLabel  = "raw-sql (sync commit)"
)

const rawSchemaSQL = `
CREATE TABLE raw_jobs (
	id          bigint PRIMARY KEY,
	kind        text NOT NULL,
	payload     bytea NOT NULL,
	state       text NOT NULL DEFAULT 'pending',
	attempts    integer NOT NULL DEFAULT 0,
	run_at      timestamptz NOT NULL DEFAULT now(),
	lease_until timestamptz
);
CREATE INDEX raw_jobs_ready ON raw_jobs (run_at, id) WHERE state = 'pending';`

const rawInsertSQL = `
INSERT INTO raw_jobs (id, kind, payload)
SELECT g, 'bench', convert_to('{"seq":' || g || '}', 'UTF8') FROM generate_series(0, $1::bigint - 1) g`

const rawClaimSQL = `
UPDATE raw_jobs j
SET state = 'running', attempts = j.attempts + 1, lease_until = now() + interval '30 seconds'
FROM (
	SELECT id FROM raw_jobs
	WHERE state = 'pending' AND run_at <= now()
	ORDER BY run_at, id
	LIMIT $1
	FOR UPDATE SKIP LOCKED
) c
WHERE j.id = c.id
RETURNING j.id, j.payload`

const rawCompleteSQL = `DELETE FROM raw_jobs WHERE id = ANY($1) AND state = 'running'`

// rawCeiling drains n tasks from a fresh raw_jobs table with loops
// concurrent loops. With asyncCommit the claims and completions commit
// without waiting for the disk, as pgstream's do by default.
func rawCeiling(ctx context.Context, e *env, n, loops int, asyncCommit bool) (result, error) {
	label := rawSyncLabel
	if asyncCommit {
		label = rawAsyncLabel
	}
	res := result{mode: "drain", system: label,
		config: fmt.Sprintf("%d loops, claim %d + one DELETE", loops, rawBatch), n: n}

	sc, err := e.newSchema(ctx)
	if err != nil {
		return res, err
	}
	defer sc.drop()
	if _, err := sc.pool.Exec(ctx, rawSchemaSQL); err != nil {
		return res, fmt.Errorf("create raw_jobs: %w", err)
	}
	if _, err := sc.pool.Exec(ctx, rawInsertSQL, n); err != nil {
		return res, fmt.Errorf("fill raw_jobs: %w", err)
	}
	if _, err := sc.pool.Exec(ctx, "ANALYZE raw_jobs"); err != nil {
		return res, err
	}

	cfg := sc.pool.Config()
	if asyncCommit {
		cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return res, err
	}
	defer pool.Close()

	seen := make([]bool, n)
	var mu sync.Mutex // guards seen, done and dups
	done, dups := 0, 0

	// The claims run on a second pool of the same schema, found by the
	// same application_name.
	db0, cpu0, t0 := sc.backendCPU(ctx), cpuTime(), time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, loops)
	for range loops {
		wg.Go(func() {
			ids := make([]int64, 0, rawBatch)
			for {
				ids = ids[:0]
				rows, err := pool.Query(ctx, rawClaimSQL, rawBatch)
				if err != nil {
					errs <- err
					return
				}
				for rows.Next() {
					var id int64
					var p []byte
					if err := rows.Scan(&id, &p); err != nil {
						rows.Close()
						errs <- err
						return
					}
					ids = append(ids, id)
				}
				if err := rows.Err(); err != nil {
					errs <- err
					return
				}
				if len(ids) == 0 {
					return // drained: every loop stops at its first empty claim
				}
				tag, err := pool.Exec(ctx, rawCompleteSQL, ids)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, id := range ids {
					if id < 0 || id >= int64(n) || seen[id] {
						dups++
						continue
					}
					seen[id] = true
				}
				done += int(tag.RowsAffected())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	res.dbCPU, res.hasDBCPU = serverCPUBetween(db0, sc.backendCPU(ctx))
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}
	if done != n || dups != 0 {
		return res, fmt.Errorf("raw ceiling completed %d of %d tasks with %d duplicate claims", done, n, dups)
	}
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM raw_jobs").Scan(&left); err != nil {
		return res, err
	}
	if left != 0 {
		return res, fmt.Errorf("raw ceiling left %d rows in raw_jobs", left)
	}
	res.elapsed, res.cpu = elapsed, cpu
	return res, nil
}
