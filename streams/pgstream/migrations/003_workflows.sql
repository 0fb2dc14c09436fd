-- Peonify's Postgres stream, version 3: results, progress, cancellation and
-- workflows (see the package documentation, "Workflows, results, progress,
-- cancellation"). {schema} is replaced with the quoted schema name.

-- New columns: constant defaults or NULL, so the table is not rewritten.
ALTER TABLE {schema}.peonify_tasks
  ADD COLUMN result               bytea,
  ADD COLUMN progress_fraction    double precision,
  ADD COLUMN progress_message     text,
  ADD COLUMN progress_at          timestamptz,
  ADD COLUMN workflow             text,
  ADD COLUMN parents              text[],
  ADD COLUMN allow_failed_parents boolean NOT NULL DEFAULT false,
  ADD COLUMN waiting_on           integer NOT NULL DEFAULT 0;

-- Two more states: waiting (a workflow task whose parents have not all
-- finished) and cancelled. NOT VALID: every row stored before has one of
-- the old states, and the check of new rows needs no scan of the table.
ALTER TABLE {schema}.peonify_tasks DROP CONSTRAINT peonify_tasks_state_check;
ALTER TABLE {schema}.peonify_tasks ADD CONSTRAINT peonify_tasks_state_check
  CHECK (state IN ('waiting', 'pending', 'running', 'dead', 'done', 'cancelled')) NOT VALID;
ALTER TABLE {schema}.peonify_tasks
  ADD CONSTRAINT peonify_tasks_workflow_check CHECK (octet_length(workflow) BETWEEN 1 AND 255) NOT VALID;

-- A workflow's tasks, by ID (GetWorkflow, CancelWorkflow, duplicate checks).
CREATE INDEX peonify_tasks_workflow_idx ON {schema}.peonify_tasks (queue, workflow, id)
  WHERE workflow IS NOT NULL;

-- Waiting and cancelled tasks of a queue (Counts, List, the cleaner).
CREATE INDEX peonify_tasks_held_idx ON {schema}.peonify_tasks (queue, state, updated_at)
  WHERE state IN ('waiting', 'cancelled');

-- Done tasks kept for their result or their workflow, by age: the
-- cleaner deletes them after the result retention.
CREATE INDEX peonify_tasks_kept_idx ON {schema}.peonify_tasks (queue, updated_at)
  WHERE state = 'done' AND (result IS NOT NULL OR workflow IS NOT NULL);

-- The dependencies that are still to be settled: one row per parent and
-- dependent, found by parent when the parent finishes, and deleted then.
CREATE TABLE {schema}.peonify_edges (
  queue     text NOT NULL,
  parent_id text NOT NULL,
  child_id  text NOT NULL,
  PRIMARY KEY (queue, parent_id, child_id)
);

-- peonify_release settles the dependents of tasks of queue q that have
-- just finished: ps their IDs, whys (when failed) how each ended, as
-- "dead: <reason>", "cancelled: <reason>" or "deleted". Done parents
-- (failed false) count down their waiting dependents, which become pending
-- at zero. Failed parents do the same to dependents that allow failed
-- parents, and cancel the others with the reason "parent <id> <why>", and
-- so on down the graph, each task visited once. It locks the dependents in
-- ID order, so that concurrent releases do not deadlock, wakes the queue's
-- processors (NOTIFY on chan) when some became ready, and the waiters
-- (NOTIFY on fin) when some were cancelled. It returns how many became
-- ready.
CREATE FUNCTION {schema}.peonify_release(q text, ps text[], whys text[], failed boolean, chan text, fin text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  n_ready integer := 0;
  kids text[];
  kwhy text[];
  cps text[];
  cwhy text[];
BEGIN
  WHILE cardinality(ps) > 0 LOOP
    WITH e AS (
      DELETE FROM {schema}.peonify_edges e WHERE e.queue = q AND e.parent_id = ANY(ps)
      RETURNING e.parent_id, e.child_id
    )
    SELECT array_agg(e.child_id ORDER BY e.child_id),
           array_agg(coalesce('parent ' || e.parent_id || ' ' || w.why, '') ORDER BY e.child_id)
    INTO kids, kwhy
    FROM e LEFT JOIN unnest(ps, whys) AS w(id, why) ON w.id = e.parent_id;
    EXIT WHEN kids IS NULL;

    PERFORM 1 FROM {schema}.peonify_tasks t
    WHERE t.queue = q AND t.id = ANY(kids) AND t.state = 'waiting'
    ORDER BY t.id FOR UPDATE;

    -- Count down: every dependent of a done parent, and the dependents of
    -- a failed one that allow failed parents.
    WITH c AS (
      SELECT k.id, count(*) AS n FROM unnest(kids) AS k(id) GROUP BY k.id
    ), u AS (
      UPDATE {schema}.peonify_tasks t
      SET waiting_on = t.waiting_on - c.n,
          state = CASE WHEN t.waiting_on - c.n <= 0 THEN 'pending' ELSE 'waiting' END,
          updated_at = now()
      FROM c
      WHERE t.queue = q AND t.id = c.id AND t.state = 'waiting' AND (NOT failed OR t.allow_failed_parents)
      RETURNING t.state = 'pending' AND t.run_at <= now() AS ready
    )
    SELECT n_ready + count(*) FILTER (WHERE u.ready) INTO n_ready FROM u;
    EXIT WHEN NOT failed;

    -- Cancel the others, and go on with their dependents.
    WITH c AS (
      SELECT DISTINCT ON (k.id) k.id, k.why FROM unnest(kids, kwhy) AS k(id, why) ORDER BY k.id, k.why
    ), u AS (
      UPDATE {schema}.peonify_tasks t
      SET state = 'cancelled', last_error = left(c.why, 8000), token = -t.token, lease_until = NULL, updated_at = now()
      FROM c
      WHERE t.queue = q AND t.id = c.id AND t.state = 'waiting' AND NOT t.allow_failed_parents
      RETURNING t.id, t.last_error
    )
    SELECT array_agg(u.id), array_agg('cancelled: ' || u.last_error) INTO cps, cwhy FROM u;
    EXIT WHEN cps IS NULL;
    PERFORM pg_notify(fin, q);
    ps := cps;
    whys := cwhy;
  END LOOP;
  IF n_ready > 0 THEN
    PERFORM pg_notify(chan, q);
  END IF;
  RETURN n_ready;
END
$$;

-- peonify_ack completes the current claims among (ids, tokens) of queue q
-- in one transaction: a task without a result and outside any workflow is
-- deleted (kept done when keep_plain), the others are kept done with their
-- result, and the dependents of the workflow tasks among them are
-- released (see peonify_release). A claim that is no longer current
-- changes nothing. It tells the waiters (NOTIFY on fin) and returns how
-- many dependents became ready.
CREATE FUNCTION {schema}.peonify_ack(q text, ids text[], tokens bigint[], results bytea[], keep_plain boolean, chan text, fin text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  wf text[];
  n integer;
  d integer := 0;
BEGIN
  IF NOT keep_plain THEN
    DELETE FROM {schema}.peonify_tasks t
    USING unnest(ids, tokens, results) AS a(id, token, result)
    WHERE t.queue = q AND t.id = a.id AND t.token = a.token AND a.result IS NULL AND t.workflow IS NULL;
    GET DIAGNOSTICS d = ROW_COUNT;
  END IF;
  WITH u AS (
    UPDATE {schema}.peonify_tasks t
    SET state = 'done', token = 0, lease_until = NULL, updated_at = now(), result = a.result
    FROM unnest(ids, tokens, results) AS a(id, token, result)
    WHERE t.queue = q AND t.id = a.id AND t.token = a.token
    RETURNING t.id, t.workflow IS NOT NULL AS wf
  )
  SELECT coalesce(array_agg(u.id) FILTER (WHERE u.wf), '{}'), count(*) INTO wf, n FROM u;
  IF n + d > 0 THEN
    PERFORM pg_notify(fin, q);
  END IF;
  IF cardinality(wf) = 0 THEN
    RETURN 0;
  END IF;
  RETURN {schema}.peonify_release(q, wf, NULL, false, chan, fin);
END
$$;

-- peonify_cancel cancels the tasks among ids of queue q that have not
-- finished, with reason why: a running one's token is negated, so that
-- its claim can no longer ack, nack or extend it, and Extend tells it was
-- cancelled. Their dependents are cancelled or released (see
-- peonify_release). It returns how many of ids it cancelled.
CREATE FUNCTION {schema}.peonify_cancel(q text, ids text[], why text, chan text, fin text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  n integer;
  wf text[];
BEGIN
  PERFORM 1 FROM {schema}.peonify_tasks t
  WHERE t.queue = q AND t.id = ANY(ids) AND t.state IN ('waiting', 'pending', 'running')
  ORDER BY t.id FOR UPDATE;
  WITH u AS (
    UPDATE {schema}.peonify_tasks t
    SET state = 'cancelled', last_error = why, token = -t.token, lease_until = NULL, updated_at = now()
    WHERE t.queue = q AND t.id = ANY(ids) AND t.state IN ('waiting', 'pending', 'running')
    RETURNING t.id, t.workflow IS NOT NULL AS wf
  )
  SELECT count(*), coalesce(array_agg(u.id) FILTER (WHERE u.wf), '{}') INTO n, wf FROM u;
  IF n > 0 THEN
    PERFORM pg_notify(fin, q);
  END IF;
  IF cardinality(wf) > 0 THEN
    PERFORM {schema}.peonify_release(q, wf, array_fill('cancelled: ' || why, ARRAY[cardinality(wf)]), true, chan, fin);
  END IF;
  RETURN n;
END
$$;
