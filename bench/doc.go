// Command bench compares Peonify with River, side by side on the same
// database server, with handlers that do nothing, so that the figures are
// the cost of the task processors themselves. On the message brokers it
// compares Peonify with asynq (Redis) and with the raw ceiling: a
// consume-and-ack loop written directly on the broker's client (Redis
// Streams, NATS JetStream, RabbitMQ).
//
// Run it from this directory:
//
//	go run . -backend sqlite -tasks 50000
//	PEONIFY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//		go run . -backend postgres -tasks 50000
//	go run . -backend redis -tasks 50000 # -redis-url, default $PEONIFY_TEST_REDIS_URL or the local server
//	go run . -backend nats -tasks 50000  # -nats-url
//	go run . -backend amqp -tasks 50000  # -amqp-url
//
// Each library runs on a fresh database: a new SQLite file (WAL, a sync at
// every commit) or a new Postgres schema, dropped afterwards; on a broker,
// keys, streams or queues of its own, deleted afterwards. The runs are:
//
//   - drain: N tasks are inserted first with each library's fastest batch
//     insert, then worked; the time runs from the start of work until the
//     library reports all N completions stored.
//   - insert-while-working (not sqlite): the processor runs while producers
//     insert N tasks in batches of 100.
//   - idle-pickup: one task every 20 ms into an idle processor; latency is
//     from the insert's return to the handler's start.
//   - raw SQL ceiling (postgres): a minimal queue table drained by a few
//     loops of SKIP LOCKED claims and batched deletes, with no library.
//   - raw ceiling (redis, nats, amqp): XREADGROUP and pipelined XACK, a
//     FetchNoWait and Ack loop, or Qos, Consume and Ack, on the client alone.
//   - limits (-modes limits, not by default): N tasks over -keys keys
//     (1,000) drained with a PerKey Concurrency 1 limit, against the same
//     drain unlimited: the cost of flow control. Streams that cannot
//     enforce limits (nats, amqp) report it unsupported.
//   - workflow (-modes workflow, not by default): chains of tasks and a
//     fan-out of -children tasks, against as many plain tasks.
//   - api (-modes api, not by default): -api-tasks tasks (20,000) enqueued
//     by -api-clients (16) concurrent clients through the HTTP API
//     (package httpapi on a loopback listener, keep-alive), one per POST
//     /v1/tasks and -api-batch (100) per POST /v1/tasks/batch, against the
//     stream's Enqueue with one task per call and -api-batch per call.
//
// Every run checks that exactly N distinct tasks ran once and that the
// database holds nothing else, and fails loudly otherwise. The last line
// of the report is
//
//	RESULT backend=<b> peonify=<jobs/s> peer=<river|asynq|raw>:<jobs/s> ratio=<peonify/peer>
//
// and -modes limits ends with
//
//	RESULT backend=<b> mode=limits peonify=<jobs/s> peer=unlimited:<jobs/s> ratio=<limited/unlimited>
//
// and -modes api ends with
//
//	RESULT backend=<b> mode=api-batch peonify=<tasks/s> peer=go-enqueue-batch:<tasks/s> ratio=<api-batch/go-enqueue-batch>
//	RESULT backend=<b> mode=api peonify=<tasks/s> peer=go-enqueue:<tasks/s> ratio=<api/go-enqueue>
//
// See README.md for the flags, what each column means and the latest
// figures.
package main
