// Package pgstream is Peonify's Postgres stream: a durable task queue in a
// Postgres table, shared by any number of processors on any number of
// machines.
//
// Tasks of many named queues live in one table, peonify_tasks. A processor
// claims ready tasks with one short autocommit statement
// (UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n) RETURNING),
// which leases them for Config.Lease and gives each claim a fencing token;
// no transaction stays open while a task runs. Completions are batched into
// one statement per Ack and fenced on the token, so a worker whose lease
// expired cannot complete or fail the task's newer claim. Expired leases
// are rescued in the background, and LISTEN/NOTIFY wakes idle processors
// within milliseconds of an enqueue, from Peonify or from any other client.
//
// It needs Postgres 13 or later.
//
// Stream is a peonify.Limiter: concurrency limits, rate limits, per-key
// ordering and fairness are enforced inside the claim, exactly, across every
// processor sharing the table (see Flow control).
//
// # Getting started
//
// Migrate once (at deployment or start-up), then add the stream to a
// processor:
//
//	// e.g. postgres://app@db/app?connect_timeout=10 (see New)
//	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer pool.Close() // the pool is yours: the stream never closes it
//
//	if err := pgstream.Migrate(ctx, pool); err != nil {
//		log.Fatal(err)
//	}
//	stream, err := pgstream.New(pool, pgstream.Config{Queue: "emails"})
//	if err != nil {
//		log.Fatal(err)
//	}
//
//	p, err := peonify.New(peonify.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddTaskList(peonify.TaskList{"email-task": EmailTask{}}); err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddStream(stream); err != nil {
//		log.Fatal(err)
//	}
//
//	// Producers, anywhere:
//	err = stream.Enqueue(ctx, &peonify.Task{Type: "email-task", Payload: []byte(`{"to":"a@example.com"}`)})
//
//	log.Fatal(p.Run(ctx)) // until ctx ends, then drains
//
// # Transactional enqueue
//
// EnqueueTx stores tasks inside your own pgx transaction, so that a task
// exists exactly when your business change commits:
//
//	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//		if _, err := tx.Exec(ctx, `INSERT INTO orders ...`); err != nil {
//			return err
//		}
//		return stream.EnqueueTx(ctx, tx, &peonify.Task{Type: "order-created", Payload: orderJSON})
//	})
//
// # Enqueueing from other languages
//
// Any client that can run SQL can enqueue: a plain INSERT naming the queue,
// the type and the payload is a valid task, and wakes the processors of the
// queue when it commits.
//
//	INSERT INTO public.peonify_tasks (queue, type, payload)
//	VALUES ('emails', 'email-task', convert_to('{"to":"a@example.com"}', 'UTF8'));
//
// The columns a producer may set (every one except type has a default):
//
//	column        type         default             meaning
//	queue         text         'default'           the queue (Config.Queue), 1 to 255 bytes
//	id            text         a new UUIDv7        the task ID and idempotency key, unique per queue, 1 to 255 bytes
//	type          text         (required)          selects the handler, 1 to 255 bytes
//	payload       bytea        empty               the task's bytes, usually JSON; from text use convert_to(text, 'UTF8')
//	headers       jsonb        NULL                a JSON object of string values (trace context, tenant, ...)
//	priority      integer      0                   higher runs first
//	max_attempts  integer      0                   0 means the processor's RetryPolicy decides
//	unique_key    text         NULL                at most one waiting, pending or running task per key and queue
//	run_at        timestamptz  now()               not delivered before this time
//	enqueued_at   timestamptz  now()               when the task was first stored
//
//	key           text         ''                  Task.Key, what flow control limits per key (a tenant), 0 to 255 bytes
//
// The other columns (state, attempts, updated_at, lease_until, token,
// claimed_by, last_error, seq) belong to the stream: leave them to their
// defaults. To skip duplicates the way Enqueue does, add
// ON CONFLICT DO NOTHING: a conflict means the id, or a live unique_key, is
// already in the queue. State values are 'pending' (ready, or scheduled
// when run_at is in the future), 'running', 'dead', 'done', and for
// workflows and cancellation (version 3) 'waiting' and 'cancelled'. The
// columns of version 3 (result, progress_*, workflow, parents,
// allow_failed_parents, waiting_on) belong to the stream too; a producer
// may set workflow alone, as a label.
//
// A producer of a tenant's task sets the key column:
//
//	INSERT INTO public.peonify_tasks (queue, type, key, payload)
//	VALUES ('emails', 'email-task', 'tenant-42', convert_to('{"to":"a@example.com"}', 'UTF8'));
//
// # Flow control
//
// Stream implements peonify.Limiter: give limits to the processor with
// peonify.Limits (see the SetLimits example), and every claim enforces all
// of them. Every kind of peonify.Limit is supported:
//
//   - Concurrency, per Type or for every type, counts the limit's tasks in
//     state running, whichever processor runs them. PerKey counts them per
//     Task.Key, with KeyConcurrency overriding the limit of named keys (0
//     holds a key). Local counts only the running tasks whose claimed_by is
//     this stream's Config.Identity, so give streams of one queue in one
//     process distinct Identities if each should have its own.
//   - Rate is a token bucket per limit (per key, with PerKey) in the
//     peonify_buckets table, stored as the time the bucket was empty and
//     read and written in the claim's transaction with the database's
//     clock, now(): the same bucket for every processor.
//   - Ordered runs each key's tasks in the order the table received them
//     (the seq column, from a sequence; not enqueued_at, and not priority):
//     a task starts only when no task of its key that the limit applies to
//     and that was stored earlier is pending, scheduled or running. A
//     failed task is pending again with its place, so the key waits through
//     its backoff; a dead or deleted task releases the key. An operator
//     unblocks a key held by a long-failing task with Delete, or by moving
//     it to dead (`peonify tasks` lists a key's tasks with ListOptions.Key).
//   - Fairness (every PerKey limit, and Fair): keyed tasks are claimed
//     round-robin by key. A claim takes the next task of each key with
//     room, key by key from where this stream's previous claim stopped,
//     wrapping around, before it takes any key's second task; within a key
//     tasks go by priority, then by arrival. A key at its limit is skipped
//     at the cost of one index probe, so it never holds back another key's
//     tasks (no head-of-line blocking), and one key's 100,000 tasks do not
//     delay another key's 10.
//
// How: without limits, Poll claims with the single statement described
// above, unchanged. With limits, a claim is one transaction of (at most) two round
// trips. It takes a transaction-scoped advisory lock of the queue
// (pg_advisory_xact_lock(1885693530, hashtext('schema.queue'))), which
// every limited claim of the queue takes, so each sees all the claims
// before it; then it reads, in one pipelined batch, what each limit has
// running (from the running tasks, a short index scan) and the ready
// candidates that no limit holds back at that point, each with its limits'
// counts and buckets; it admits the candidates one by one, counting each
// against every limit it takes, so that two tasks of one claim never
// together exceed a limit either; and it claims the admitted tasks and
// writes the buckets it took tokens from, then commits, which releases the
// lock. Two processes claiming at once therefore never exceed a limit
// together. Acks, nacks, enqueues and the rescuer take no lock: they only
// free permits or add tasks. A claim held back entirely returns an empty
// slice at once, having written nothing: no attempt, no lease, no token.
// Limited claims of one queue run one at a time. Their statements are
// planned for their parameters on every run (the transaction sets
// plan_cache_mode to force_custom_plan): the generic plan that Postgres
// otherwise switches a prepared statement to made them two to three times
// slower.
//
// Which keys a claim reads: when tasks may have become ready anywhere (a
// NOTIFY of new tasks, a Resume, a rescued lease, the first claim), after a
// claim that filled up, and at least once a second, a claim looks at every
// key with ready tasks, in the rotation described above. In between, a
// claim looks only at the keys whose permits were given back since the
// previous claim, by an ack or nack of this processor or of another one:
// so a claim costs what it takes, not what the busy keys number (and,
// under PerKey concurrency, Ordered and Fair limits alone, takes one
// statement in one round trip, since every task it reads passes). A
// processor announces the keys its acks and nacks freed with a NOTIFY on
// the channel "<schema>.peonify_free" (a JSON object: "q" the queue, "k"
// the keys, or null for any key), one per batch of acks. A retry's key is
// looked at again when the retry's backoff ends; a scheduled task coming
// due is found by the next claim that looks at every key.
//
// Waking: an Ack or Nack of a task that holds a concurrency permit wakes
// this stream at once, and the other processors (unless Config.NoListen)
// through that NOTIFY, so a waiting task starts within milliseconds. A
// claim that a rate limit held back arms a timer for the database's time
// of the next token.
//
// Crashes and partitions: a processor that dies holding tasks keeps its
// permits until the rescuer (of any processor) returns its tasks to
// pending, at most Config.Lease plus Config.RescueInterval later; a
// processor cut off from the database cannot claim, so it cannot
// over-admit. What can exceed a limit is what exceeds a lease without
// limits: a processor that lost its lease (partitioned, or stalled beyond
// Config.Lease without extending it) may still run the task while the
// limit already counts its permit free and another processor runs the
// next, by at most the tasks it was running. Claims commit asynchronously
// (see Config.SyncCommit): a database crash can forget the claims and
// token takes of its last fraction of a second, and the limits then count
// those tasks, still running on their processors, as not running; set
// SyncCommit to rule that out. Every processor of a queue must be given
// the same limits: a processor given none claims without them.
//
// Keys and limits read these columns: migration version 2 adds key, seq,
// two partial indexes and the peonify_buckets table. LimitStats reads each
// limit's pending and running tasks (one query per limit).
//
// # Workflows, results, progress, cancellation
//
// Stream is a peonify.Tracker and a peonify.WorkflowStore (migration
// version 3):
//
//   - Results: Ack stores Delivery.Result with the task in the same
//     transaction as the ack. A done task that has a result or belongs to
//     a workflow is kept in state done for Config.ResultRetention (24
//     hours by default) and then deleted by the cleaner, in batches of
//     5,000 through a partial index of such tasks; other tasks are
//     deleted on ack as before (or kept for KeepDone). Results reads any
//     number of results in one query; Get and List show them.
//   - Acks: a batch without results or workflow tasks takes the same
//     single statement as before, so plain queues pay nothing. A batch
//     with some is one call (one round trip) of the function
//     peonify_ack, which migration 3 installs: it deletes or keeps each
//     acked task, stores its result, and releases its dependents, all in
//     the statement's transaction, fenced on the claim's token like every
//     ack. A stale or duplicate ack matches no row and releases nothing.
//   - Workflows: EnqueueWorkflow stores every task of a workflow in one
//     transaction, under an advisory lock of the workflow ID: with one
//     INSERT ... SELECT FROM unnest(...) up to CopyThreshold tasks, and
//     above it with one query for IDs and unique keys stored already,
//     then COPY of the tasks and of their dependencies (a 10,000-task
//     workflow takes about 0.2 s). Tasks with parents are 'waiting', with their count
//     of unfinished parents in waiting_on; every dependency is a row of
//     peonify_edges (queue, parent_id, child_id), found by parent when the
//     parent finishes and deleted then, so a release costs what the
//     finished task has dependents, whatever the size of its workflow.
//     A dependent released to zero becomes pending (or scheduled) and the
//     queue's processors are woken with the same NOTIFY as an enqueue,
//     this one at once: a chain's next step is claimed within a
//     millisecond of the ack. Waiting tasks hold no key for Ordered limits; once released,
//     they are claimed through the same limited claim as any task. A
//     waiting task does hold its UniqueKey (the unique index covers
//     waiting, pending and running tasks since version 3), so that its
//     release never meets another live task of its key.
//   - Failures cascade in the same transaction as the failure: a task
//     that goes dead (a Nack, or the rescuer when its MaxAttempts is used
//     up), is cancelled, or is deleted or purged before it finished,
//     cancels its waiting dependents with the reason "parent <id> dead:
//     <reason>" (or cancelled, or deleted), and theirs in turn, each task
//     visited once (function peonify_release); a dependent with
//     AllowFailedParents counts the parent as finished instead. Tasks
//     are locked in ID order, so concurrent releases do not deadlock.
//   - Spawn stores a running task's children in one transaction that
//     locks the task's row on its claim's token (else ErrLeaseLost, or
//     ErrCancelled), skips children already stored, and makes each
//     waiting dependent of the task wait for every new child too, adding
//     them to its parents (so ParentResults sees them). A second run of
//     the task may add children that depend on the first run's: those
//     are locked while the new dependencies are stored, and counted at
//     once if they have finished already.
//   - Cancel moves unfinished tasks to 'cancelled' in one transaction. A
//     running task's token is negated, so its Ack and Nack are stale and
//     its next Extend or SetProgress returns an error wrapping
//     peonify.ErrCancelled; it stops counting towards limits at once.
//     CancelWorkflow cancels every unfinished task of a workflow.
//     Cancelled tasks are kept, like dead ones, for Config.KeepDead.
//   - SetProgress writes the progress columns, fenced like Ack (the
//     processor throttles it to one write per task per second).
//   - Wait is woken by a NOTIFY on the channel "<schema>.peonify_finished"
//     (the payload is the queue), which a tracked ack, a dead nack, a
//     cancel, a delete and the rescuer's dead letters send, through the
//     stream's one LISTEN connection (or its Config.Listener), which all
//     its waiters share; Wait starts the stream's background work as Start
//     does. On each, one query reads the states of every task the stream's
//     waiters wait for, and only the waiters of finished (or vanished)
//     tasks read theirs again. The stream also looks every 2 seconds (250
//     ms with Config.NoListen), which is how a waiter learns that a task
//     acked without a result or workflow was deleted (ErrNotFound), or of
//     a finish whose notification a lost connection missed. Close ends
//     every Wait with peonify.ErrClosed.
//   - GetWorkflow counts a workflow's tasks by state and lists its first
//     peonify.MaxWorkflowTasksListed through the index on (queue,
//     workflow, id), in one round trip.
//
// A workflow lives in one queue: its tasks and their IDs are the
// stream's queue's.
//
// # Operations
//
//   - Stream implements peonify.Inspector (counts, listing, retry of dead
//     tasks, delete, purge) and adds Pause and Resume, which stop and restart
//     delivery from a queue for every processor.
//   - Acked tasks are deleted at once unless Config.KeepDone keeps them,
//     or they have a result or a workflow (Config.ResultRetention); dead
//     and cancelled tasks are kept for Config.KeepDead (7 days) for
//     inspection. A
//     background cleaner deletes them afterwards, so the table does not
//     grow without bound.
//   - A polling stream takes one connection out of the pool for LISTEN.
//     Streams of many queues can share one through a Listener
//     (Config.Listener); behind a connection pooler in transaction mode,
//     which cannot LISTEN, set Config.NoListen. Tasks scheduled for later,
//     and retries after a delay, are picked up at the processor's poll
//     interval. A quiet LISTEN connection is pinged every
//     ListenerConfig.HealthCheck (10s), and at once (within a second) when
//     a call of a stream that uses the listener times out, so one that
//     died without a reset is replaced within seconds.
//   - Every call ends with its context (the processor bounds each with
//     its StoreTimeout), and pgx drops a connection whose query was cut
//     short. Give the pool a connect timeout too (see New).
//   - Every statement also works without prepared statements
//     (pgx.QueryExecModeExec or QueryExecModeSimpleProtocol), as poolers
//     in transaction mode require.
//   - Claims and acks commit asynchronously (see Config.SyncCommit): a
//     database crash can only make a task run again. Enqueue always waits
//     for the disk.
//   - Schema changes are versioned in the peonify_migrations table.
//     MigrateSchema puts the tables in another schema than "public".
package pgstream
