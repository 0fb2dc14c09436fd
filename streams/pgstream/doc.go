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
//	unique_key    text         NULL                at most one pending or running task per key and queue
//	run_at        timestamptz  now()               not delivered before this time
//	enqueued_at   timestamptz  now()               when the task was first stored
//
// The other columns (state, attempts, updated_at, lease_until, token,
// claimed_by, last_error) belong to the stream: leave them to their
// defaults. To skip duplicates the way Enqueue does, add
// ON CONFLICT DO NOTHING: a conflict means the id, or a live unique_key, is
// already in the queue. State values are 'pending' (ready, or scheduled
// when run_at is in the future), 'running', 'dead' and 'done'.
//
// # Operations
//
//   - Stream implements peonify.Inspector (counts, listing, retry of dead
//     tasks, delete, purge) and adds Pause and Resume, which stop and restart
//     delivery from a queue for every processor.
//   - Acked tasks are deleted at once unless Config.KeepDone keeps them;
//     dead tasks are kept for Config.KeepDead (7 days) for inspection. A
//     background cleaner deletes them afterwards, so the table does not
//     grow without bound.
//   - A polling stream takes one connection out of the pool for LISTEN.
//     Streams of many queues can share one through a Listener
//     (Config.Listener); behind a connection pooler in transaction mode,
//     which cannot LISTEN, set Config.NoListen. Tasks scheduled for later,
//     and retries after a delay, are picked up at the processor's poll
//     interval. A quiet LISTEN connection is pinged every
//     ListenerConfig.HealthCheck (10s), so one that died without a reset
//     is replaced within seconds.
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
