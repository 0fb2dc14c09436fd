-- Peonify's Postgres stream, version 1: the task table, the queue table and
-- the wake-up trigger. {schema} is replaced with the quoted schema name.

-- peonify_uuidv7 returns a time-ordered UUID (RFC 9562 version 7), the
-- default task id for rows inserted without one.
CREATE FUNCTION {schema}.peonify_uuidv7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

CREATE TABLE {schema}.peonify_tasks (
  queue        text        NOT NULL DEFAULT 'default',
  id           text        NOT NULL DEFAULT {schema}.peonify_uuidv7()::text,
  type         text        NOT NULL,
  payload      bytea       NOT NULL DEFAULT '\x',
  headers      jsonb,
  state        text        NOT NULL DEFAULT 'pending',
  priority     integer     NOT NULL DEFAULT 0,
  attempts     integer     NOT NULL DEFAULT 0,
  max_attempts integer     NOT NULL DEFAULT 0,
  unique_key   text,
  run_at       timestamptz NOT NULL DEFAULT now(),
  enqueued_at  timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  lease_until  timestamptz,
  token        bigint      NOT NULL DEFAULT 0,
  claimed_by   text,
  last_error   text,
  PRIMARY KEY (id, queue),
  CONSTRAINT peonify_tasks_state_check CHECK (state IN ('pending', 'running', 'dead', 'done')),
  CONSTRAINT peonify_tasks_queue_check CHECK (octet_length(queue) BETWEEN 1 AND 255),
  CONSTRAINT peonify_tasks_id_check CHECK (octet_length(id) BETWEEN 1 AND 255),
  CONSTRAINT peonify_tasks_type_check CHECK (octet_length(type) BETWEEN 1 AND 255),
  CONSTRAINT peonify_tasks_unique_key_check CHECK (octet_length(unique_key) BETWEEN 1 AND 255),
  CONSTRAINT peonify_tasks_headers_check CHECK (headers IS NULL OR jsonb_typeof(headers) = 'object'),
  CONSTRAINT peonify_tasks_attempts_check CHECK (attempts >= 0 AND max_attempts >= 0),
  CONSTRAINT peonify_tasks_lease_check CHECK (state <> 'running' OR lease_until IS NOT NULL)
);

-- The claim index: ready tasks of a queue in delivery order.
CREATE INDEX peonify_tasks_pending_idx ON {schema}.peonify_tasks (queue, priority DESC, run_at, id)
  WHERE state = 'pending';

-- The rescuer's index: leases of a queue by expiry.
CREATE INDEX peonify_tasks_running_idx ON {schema}.peonify_tasks (queue, lease_until)
  WHERE state = 'running';

-- The cleaner's index: finished tasks of a queue by age.
CREATE INDEX peonify_tasks_finished_idx ON {schema}.peonify_tasks (queue, state, updated_at)
  WHERE state IN ('dead', 'done');

-- At most one live task per unique key and queue.
CREATE UNIQUE INDEX peonify_tasks_unique_key_idx ON {schema}.peonify_tasks (queue, unique_key)
  WHERE unique_key IS NOT NULL AND state IN ('pending', 'running');

-- Token of each claim, for fencing late acks of lost leases.
CREATE SEQUENCE {schema}.peonify_token_seq AS bigint CACHE 16;

-- Paused queues deliver nothing.
CREATE TABLE {schema}.peonify_queues (
  queue      text        PRIMARY KEY,
  paused_at  timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every INSERT statement, from Peonify or from any other client, wakes the
-- processors listening on the queues it made ready. The payload is the
-- queue name, so it stays far below NOTIFY's 8000-byte limit.
CREATE FUNCTION {schema}.peonify_notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(TG_TABLE_SCHEMA || '.peonify_tasks', r.queue)
  FROM (SELECT DISTINCT queue FROM peonify_new WHERE state = 'pending' AND run_at <= now()) r;
  RETURN NULL;
END
$$;

CREATE TRIGGER peonify_tasks_notify AFTER INSERT ON {schema}.peonify_tasks
  REFERENCING NEW TABLE AS peonify_new
  FOR EACH STATEMENT EXECUTE FUNCTION {schema}.peonify_notify_insert();
