package pgstream

import (
	"strings"

	"github.com/jackc/pgx/v5"
)

// statements holds the stream's SQL with the schema filled in. Every
// statement is a single autocommit round trip; pgx prepares and caches each
// one per connection.
type statements struct {
	claim, claimAfter, ackDelete, ackDone, nackFailed, nackReleased, nackDead, extend string
	insert, rescue, cleanup                                                           string
	counts, list, get, retry, deleteIDs, purge, pause, resume, paused                 string

	// Results, progress, cancellation and workflows (see tracker.go).
	ackTracked, cancelledClaim, progress, results, cancel, cancelWorkflow string
	wfLock, wfExists, wfInsert, wfCounts, wfList, release                 string
	spawnParent, spawnDependents, cleanupPlainDone, cleanupKept           string
}

// asyncCommit, in the WHERE clause of an autocommit statement, lets its
// commit return before the WAL reaches the disk. Claims and acks use it:
// losing one in a database crash only delivers a task again, which
// at-least-once delivery allows. Enqueue never uses it.
const asyncCommit = `
  AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'`

// taskColumns is what every statement that returns tasks returns, in the
// order scanTask reads.
const taskColumns = `t.id, t.type, t.payload, t.headers, t.state, t.priority, t.attempts, t.max_attempts,
	t.unique_key, t.run_at, t.enqueued_at, t.updated_at, t.lease_until, t.token, t.last_error, t.key,
	t.workflow, t.parents, t.allow_failed_parents, t.result, t.progress_fraction, t.progress_message, t.progress_at`

// taskColumnsNoResult is taskColumns without the result (NULL in its
// place), for listings that do not show results.
var taskColumnsNoResult = strings.Replace(taskColumns, "t.result,", "NULL::bytea,", 1)

func newStatements(schema string, syncCommit bool) statements {
	s := pgx.Identifier{schema}.Sanitize()
	r := strings.NewReplacer("{t}", s+".peonify_tasks", "{q}", s+".peonify_queues", "{seq}", s+".peonify_token_seq",
		"{e}", s+".peonify_edges", "{s}", s)
	var st statements
	asyncCommit := asyncCommit
	if syncCommit {
		asyncCommit = ""
	}

	// claim: lock up to $2 ready tasks, skipping those other claimers hold,
	// and lease them in the same statement. One token per statement is
	// enough: (id, token) is unique per claim.
	//
	// claimAfter is the same claim resumed after the last task that this
	// stream claimed ($5 its priority, $6 and $7 its run_at and id): the
	// index scan starts there instead of walking, from the front of the
	// queue, the entries of every task claimed since the last VACUUM.
	claim := func(after string) string {
		return r.Replace(`
UPDATE {t} t
SET state = 'running', attempts = t.attempts + 1, token = (SELECT nextval('{seq}')),
    lease_until = now() + $3::bigint * interval '1 microsecond', updated_at = now(), claimed_by = $4
FROM (
	SELECT c.queue, c.id FROM {t} c
	WHERE c.queue = $1 AND c.state = 'pending' AND c.run_at <= now()` + after + `
	  AND NOT EXISTS (SELECT 1 FROM {q} p WHERE p.queue = $1 AND p.paused_at IS NOT NULL)
	ORDER BY c.priority DESC, c.run_at, c.id
	LIMIT $2
	FOR UPDATE SKIP LOCKED
) c
WHERE t.queue = c.queue AND t.id = c.id` + asyncCommit + `
RETURNING ` + taskColumns)
	}
	st.claim = claim("")
	st.claimAfter = claim(`
	  AND c.priority = $5 AND (c.run_at, c.id) > ($6::timestamptz, $7::text)`)

	// Fencing: a claim gives its rows a new token, unique across claims, and
	// every way out of the claim (ack, nack, rescue) sets it back to 0, which
	// no delivery carries. So (id, token) matches a row exactly while that
	// claim is current, and the statements below need no state condition,
	// which keeps their plans on the primary key whatever the statistics
	// say (a state condition would invite a scan of the running index, dead
	// entries included).
	//
	// Completion: all deliveries of a batch in one statement.
	st.ackDelete = r.Replace(`
DELETE FROM {t} t
USING unnest($2::text[], $3::bigint[]) AS a(id, token)
WHERE t.queue = $1 AND t.id = a.id AND t.token = a.token` + asyncCommit)
	st.ackDone = r.Replace(`
UPDATE {t} t
SET state = 'done', token = 0, lease_until = NULL, updated_at = now()
FROM unnest($2::text[], $3::bigint[]) AS a(id, token)
WHERE t.queue = $1 AND t.id = a.id AND t.token = a.token` + asyncCommit)

	// Nacks wake listeners when the task is ready again at once (a task
	// released at shutdown should move to another processor right away),
	// Parameters: $1 queue, $2 id, $3 token, $4 NOTIFY channel, $5 reason,
	// $6 delay in microseconds.
	nack := func(set string) string {
		return r.Replace(`
WITH u AS (
	UPDATE {t} t SET ` + set + `, token = 0, lease_until = NULL, updated_at = now()
	WHERE t.queue = $1 AND t.id = $2 AND t.token = $3
	RETURNING t.state = 'pending' AND t.run_at <= now() AS ready
), n AS (
	SELECT pg_notify($4, $1) FROM u WHERE u.ready
)
SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM n)`)
	}
	st.nackFailed = nack(`state = 'pending', run_at = now() + $6::bigint * interval '1 microsecond', last_error = $5`)
	st.nackReleased = nack(`state = 'pending', run_at = now() + $6::bigint * interval '1 microsecond',
		attempts = greatest(t.attempts - 1, 0), last_error = coalesce($5, t.last_error)`)
	// A dead task wakes Wait's waiters instead: $4 is the channel of
	// finished tasks.
	st.nackDead = r.Replace(`
WITH u AS (
	UPDATE {t} t SET state = 'dead', last_error = $5, token = 0, lease_until = NULL, updated_at = now()
	WHERE t.queue = $1 AND t.id = $2 AND t.token = $3
	RETURNING 1
), n AS (
	SELECT pg_notify($4, $1) FROM u
)
SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM n)`)

	st.extend = r.Replace(`
UPDATE {t} t SET lease_until = now() + $4::bigint * interval '1 microsecond', updated_at = now()
WHERE t.queue = $1 AND t.id = $2 AND t.token = $3
RETURNING t.lease_until`)

	// Enqueue: duplicates of an id, or of a live unique key, are skipped
	// and told apart by what RETURNING leaves out. The trigger on the table
	// sends the wake-up NOTIFY.
	st.insert = r.Replace(`
INSERT INTO {t} (queue, id, type, payload, headers, priority, max_attempts, unique_key, enqueued_at, run_at, key, workflow)
SELECT $1, i.id, i.type, i.payload, i.headers::jsonb, i.priority, i.max_attempts, i.unique_key, i.enqueued_at,
       coalesce(i.run_at, now()), i.key, i.workflow
FROM unnest($2::text[], $3::text[], $4::bytea[], $5::text[], $6::integer[], $7::integer[], $8::text[],
            $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[])
     AS i(id, type, payload, headers, priority, max_attempts, unique_key, enqueued_at, run_at, key, workflow)
ON CONFLICT DO NOTHING
RETURNING id`)

	// rescue: expired leases go back to pending, or to dead when the task's
	// own MaxAttempts is used up (a task that crashes its process must not
	// crash-loop the fleet).
	st.rescue = r.Replace(`
WITH x AS (
	SELECT c.queue, c.id FROM {t} c
	WHERE c.queue = $1 AND c.state = 'running' AND c.lease_until < now()
	ORDER BY c.lease_until
	LIMIT 1000
	FOR UPDATE SKIP LOCKED
), u AS (
	UPDATE {t} t
	SET state = CASE WHEN t.max_attempts > 0 AND t.attempts >= t.max_attempts THEN 'dead' ELSE 'pending' END,
	    token = 0, lease_until = NULL, updated_at = now(),
	    last_error = 'lease expired after ' || t.attempts || ' attempt(s): the processor running it stopped or stalled'
	FROM x WHERE t.queue = x.queue AND t.id = x.id
	RETURNING t.id, t.state, t.workflow IS NOT NULL AS wf, t.last_error
), n AS (
	SELECT pg_notify($2, $1) WHERE EXISTS (SELECT 1 FROM u WHERE u.state = 'pending')
), f AS (
	SELECT pg_notify($3, $1) WHERE EXISTS (SELECT 1 FROM u WHERE u.state = 'dead')
)
SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead'),
       (SELECT count(*) FROM n) + (SELECT count(*) FROM f),
       coalesce(array_agg(u.id) FILTER (WHERE u.state = 'dead' AND u.wf), '{}'),
       coalesce(array_agg('dead: ' || u.last_error) FILTER (WHERE u.state = 'dead' AND u.wf), '{}')
FROM u`)

	// cleanup: finished tasks past their retention, in bounded batches.
	st.cleanup = r.Replace(`
DELETE FROM {t} t USING (
	SELECT c.queue, c.id FROM {t} c
	WHERE c.queue = $1 AND c.state = $2 AND c.updated_at < now() - $3::bigint * interval '1 microsecond'
	LIMIT $4
	FOR UPDATE SKIP LOCKED
) c
WHERE t.queue = c.queue AND t.id = c.id`)

	// Done tasks kept by KeepDone (no result, no workflow), and those kept
	// for their result or workflow (the kept index).
	st.cleanupPlainDone = r.Replace(`
DELETE FROM {t} t USING (
	SELECT c.queue, c.id FROM {t} c
	WHERE c.queue = $1 AND c.state = 'done' AND c.updated_at < now() - $2::bigint * interval '1 microsecond'
	  AND c.result IS NULL AND c.workflow IS NULL
	LIMIT $3
	FOR UPDATE SKIP LOCKED
) c
WHERE t.queue = c.queue AND t.id = c.id`)
	st.cleanupKept = r.Replace(`
DELETE FROM {t} t USING (
	SELECT c.queue, c.id FROM {t} c
	WHERE c.queue = $1 AND c.state = 'done' AND (c.result IS NOT NULL OR c.workflow IS NOT NULL)
	  AND c.updated_at < now() - $2::bigint * interval '1 microsecond'
	LIMIT $3
	FOR UPDATE SKIP LOCKED
) c
WHERE t.queue = c.queue AND t.id = c.id`)

	// Inspector. "scheduled" is a pending task whose run_at is in the future.
	// counts reads each state through its partial index.
	st.counts = r.Replace(`
SELECT CASE WHEN t.run_at > now() THEN 'scheduled' ELSE 'pending' END, count(*)
FROM {t} t WHERE t.queue = $1 AND t.state = 'pending' GROUP BY 1
UNION ALL
SELECT 'running', count(*) FROM {t} t WHERE t.queue = $1 AND t.state = 'running' HAVING count(*) > 0
UNION ALL
SELECT t.state, count(*) FROM {t} t WHERE t.queue = $1 AND t.state IN ('dead', 'done') GROUP BY 1
UNION ALL
SELECT t.state, count(*) FROM {t} t WHERE t.queue = $1 AND t.state IN ('waiting', 'cancelled') GROUP BY 1`)
	st.list = r.Replace(`
SELECT ` + taskColumns + ` FROM {t} t
WHERE t.queue = $1 AND t.state = $2
  AND ($3::text IS NULL OR t.type = $3) AND t.id > $4
  AND ($6::boolean IS NULL OR (t.run_at > now()) = $6)
  AND ($7::text IS NULL OR t.key = $7)
ORDER BY t.id
LIMIT $5`)
	st.get = r.Replace(`SELECT ` + taskColumns + ` FROM {t} t WHERE t.queue = $1 AND t.id = $2`)
	st.retry = r.Replace(`
WITH u AS (
	UPDATE {t} t SET state = 'pending', attempts = 0, run_at = now(), updated_at = now(), lease_until = NULL
	WHERE t.queue = $1 AND t.state = 'dead' AND ($2::text[] IS NULL OR t.id = ANY($2))
	  AND (t.unique_key IS NULL OR NOT EXISTS (
		SELECT 1 FROM {t} l WHERE l.queue = t.queue AND l.unique_key = t.unique_key AND l.state IN ('pending', 'running')))
	RETURNING 1
), n AS (
	SELECT pg_notify($3, $1) WHERE EXISTS (SELECT 1 FROM u)
)
SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM n)`)
	// Delete and Purge return the unfinished workflow tasks they deleted,
	// whose dependents the same transaction settles, and wake waiters
	// ($3, the channel of finished tasks).
	deleted := `
), f AS (
	SELECT pg_notify($3, $1) WHERE EXISTS (SELECT 1 FROM d)
)
SELECT count(*) + (SELECT count(*) FROM f) * 0,
       coalesce(array_agg(d.id) FILTER (WHERE d.wf AND d.state IN ('waiting', 'pending')), '{}')
FROM d`
	st.deleteIDs = r.Replace(`
WITH d AS (
	DELETE FROM {t} t WHERE t.queue = $1 AND t.id = ANY($2) AND t.state <> 'running'
	RETURNING t.id, t.state, t.workflow IS NOT NULL AS wf` + deleted)
	st.purge = r.Replace(`
WITH d AS (
	DELETE FROM {t} t WHERE t.queue = $1 AND t.state = $2 AND ($4::boolean IS NULL OR (t.run_at > now()) = $4)
	RETURNING t.id, t.state, t.workflow IS NOT NULL AS wf` + deleted)

	// Results, progress, cancellation, workflows: the functions that
	// migration 3 installs do the work that must be atomic with an ack, a
	// cancel or a delete.
	st.ackTracked = r.Replace(`SELECT {s}.peonify_ack($1, $2::text[], $3::bigint[], $4::bytea[], $5, $6, $7)`)
	st.release = r.Replace(`SELECT {s}.peonify_release($1, $2::text[], $3::text[], $4, $5, $6)`)
	st.cancel = r.Replace(`SELECT {s}.peonify_cancel($1, $2::text[], $3, $4, $5)`)
	st.cancelWorkflow = r.Replace(`
SELECT EXISTS (SELECT 1 FROM {t} t WHERE t.queue = $1 AND t.workflow = $2),
       {s}.peonify_cancel($1, ARRAY(SELECT t.id FROM {t} t
                                    WHERE t.queue = $1 AND t.workflow = $2 AND t.state IN ('waiting', 'pending', 'running')),
                          $3, $4, $5)`)
	// cancelledClaim tells a claim that failed to extend or report
	// progress whether its task was cancelled (its token negated) rather
	// than claimed again.
	st.cancelledClaim = r.Replace(`
SELECT EXISTS (SELECT 1 FROM {t} t WHERE t.queue = $1 AND t.id = $2 AND t.token = -$3::bigint AND t.state = 'cancelled')`)
	st.progress = r.Replace(`
UPDATE {t} t SET progress_fraction = $4, progress_message = $5, progress_at = $6
WHERE t.queue = $1 AND t.id = $2 AND t.token = $3` + asyncCommit)
	st.results = r.Replace(`
SELECT t.id, t.result FROM {t} t
WHERE t.queue = $1 AND t.id = ANY($2::text[]) AND t.state = 'done' AND t.result IS NOT NULL`)

	// EnqueueWorkflow: one advisory lock per workflow ID, so that two
	// calls with the same one cannot both find it new.
	st.wfLock = `SELECT pg_advisory_xact_lock(1885693531, hashtext($1))`
	st.wfExists = r.Replace(`SELECT EXISTS (SELECT 1 FROM {t} t WHERE t.queue = $1 AND t.workflow = $2)`)
	// wfInsert stores workflow tasks ($2..$11 as insert's, $12 the
	// workflow, $13 allow_failed_parents) and the dependencies ($14
	// parents, $15 children) of those it inserted: waiting, with their
	// parents counted, when they have some, pending otherwise.
	st.wfInsert = r.Replace(`
WITH e AS (
	SELECT e.parent_id, e.child_id, e.ord FROM unnest($14::text[], $15::text[]) WITH ORDINALITY AS e(parent_id, child_id, ord)
), p AS (
	SELECT e.child_id, array_agg(e.parent_id ORDER BY e.ord) AS parents FROM e GROUP BY e.child_id
), ins AS (
	INSERT INTO {t} (queue, id, type, payload, headers, priority, max_attempts, unique_key, enqueued_at, run_at, key,
	                 workflow, allow_failed_parents, parents, waiting_on, state)
	SELECT $1, i.id, i.type, i.payload, i.headers::jsonb, i.priority, i.max_attempts, i.unique_key, i.enqueued_at,
	       coalesce(i.run_at, now()), i.key, $12, i.allow, p.parents, coalesce(cardinality(p.parents), 0),
	       CASE WHEN p.parents IS NULL THEN 'pending' ELSE 'waiting' END
	FROM unnest($2::text[], $3::text[], $4::bytea[], $5::text[], $6::integer[], $7::integer[], $8::text[],
	            $9::timestamptz[], $10::timestamptz[], $11::text[], $13::boolean[])
	     AS i(id, type, payload, headers, priority, max_attempts, unique_key, enqueued_at, run_at, key, allow)
	LEFT JOIN p ON p.child_id = i.id
	ON CONFLICT DO NOTHING
	RETURNING id
), edges AS (
	INSERT INTO {e} (queue, parent_id, child_id)
	SELECT $1, e.parent_id, e.child_id FROM e WHERE e.child_id IN (SELECT ins.id FROM ins)
	ON CONFLICT DO NOTHING
)
SELECT ins.id FROM ins`)
	st.wfCounts = r.Replace(`
SELECT CASE WHEN t.state = 'pending' AND t.run_at > now() THEN 'scheduled' ELSE t.state END, count(*),
       min(t.enqueued_at), max(t.updated_at)
FROM {t} t WHERE t.queue = $1 AND t.workflow = $2 GROUP BY 1`)
	st.wfList = r.Replace(`
SELECT ` + taskColumnsNoResult + ` FROM {t} t WHERE t.queue = $1 AND t.workflow = $2 ORDER BY t.id LIMIT $3`)

	// Spawn: the spawning claim, locked until the children are stored;
	// then the spawning task's dependents wait for the new children ($3)
	// too.
	st.spawnParent = r.Replace(`
SELECT coalesce(t.workflow, '') FROM {t} t WHERE t.queue = $1 AND t.id = $2 AND t.token = $3 FOR UPDATE`)
	st.spawnDependents = r.Replace(`
WITH d AS (
	SELECT e.child_id FROM {e} e WHERE e.queue = $1 AND e.parent_id = $2
), i AS (
	INSERT INTO {e} (queue, parent_id, child_id)
	SELECT $1, n.id, d.child_id FROM d, unnest($3::text[]) AS n(id)
	ON CONFLICT DO NOTHING
)
UPDATE {t} t SET waiting_on = t.waiting_on + cardinality($3::text[]),
                 parents = coalesce(t.parents, '{}') || $3::text[], updated_at = now()
FROM d WHERE t.queue = $1 AND t.id = d.child_id AND t.state = 'waiting'`)

	st.pause = r.Replace(`
INSERT INTO {q} (queue, paused_at) VALUES ($1, now())
ON CONFLICT (queue) DO UPDATE SET paused_at = coalesce({q}.paused_at, now()), updated_at = now()`)
	st.resume = r.Replace(`
WITH u AS (
	UPDATE {q} SET paused_at = NULL, updated_at = now() WHERE queue = $1 AND paused_at IS NOT NULL RETURNING 1
), n AS (
	SELECT pg_notify($2, $1) WHERE EXISTS (SELECT 1 FROM u)
)
SELECT (SELECT count(*) FROM n)`)
	st.paused = r.Replace(`SELECT EXISTS (SELECT 1 FROM {q} WHERE queue = $1 AND paused_at IS NOT NULL)`)
	return st
}
