-- Peonify's Postgres stream, version 2: flow control (see the package
-- documentation, "Flow control"). {schema} is replaced with the quoted
-- schema name.

-- Task.Key: what a task belongs to (a tenant, a customer). Limits with
-- PerKey apply to each key on its own. A constant default adds the column
-- without rewriting the table, and the check needs no scan of it: every
-- row stored before has the empty key.
ALTER TABLE {schema}.peonify_tasks ADD COLUMN key text NOT NULL DEFAULT '';
ALTER TABLE {schema}.peonify_tasks
  ADD CONSTRAINT peonify_tasks_key_check CHECK (octet_length(key) <= 255) NOT VALID;

-- seq is the order the store received tasks in: Ordered limits run each
-- key's tasks in this order. Rows stored before this version keep NULL (they
-- have no key, so no Ordered limit applies to them); setting the default
-- after adding the column avoids rewriting the table.
CREATE SEQUENCE {schema}.peonify_task_seq AS bigint;
ALTER TABLE {schema}.peonify_tasks ADD COLUMN seq bigint;
ALTER TABLE {schema}.peonify_tasks ALTER COLUMN seq SET DEFAULT nextval('{schema}.peonify_task_seq');

-- The limited claim's index: ready tasks of a queue by key, each key's in
-- claim order. Keys with work are found by skipping through it, and tasks
-- without a key (key '') are its first range.
CREATE INDEX peonify_tasks_key_idx ON {schema}.peonify_tasks (queue, key, priority DESC, seq)
  WHERE state = 'pending';

-- Ordered limits: the first waiting task of each key by arrival. Only keyed
-- tasks are in it.
CREATE INDEX peonify_tasks_key_seq_idx ON {schema}.peonify_tasks (queue, key, seq)
  WHERE state = 'pending' AND key <> '';

-- Rate limits: one token bucket per limit (and key, for PerKey limits),
-- as the time at which it was (or will be) empty: a missing row, or one
-- whose empty_at is far enough in the past, is a full bucket.
CREATE TABLE {schema}.peonify_buckets (
  queue    text        NOT NULL,
  name     text        NOT NULL,
  key      text        NOT NULL DEFAULT '',
  empty_at timestamptz NOT NULL,
  PRIMARY KEY (queue, name, key)
);
CREATE INDEX peonify_buckets_empty_idx ON {schema}.peonify_buckets (queue, empty_at);
