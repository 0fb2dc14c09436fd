// Command bench compares Peonify with River, side by side on the same
// database server, with handlers that do nothing, so that the figures are
// the cost of the task processors themselves.
//
// Run it from this directory:
//
//	go run . -backend sqlite -tasks 50000
//	PEONIFY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//		go run . -backend postgres -tasks 50000
//
// Each library runs on a fresh database: a new SQLite file (WAL, a sync at
// every commit) or a new Postgres schema, dropped afterwards. The runs are:
//
//   - drain: N tasks are inserted first with each library's fastest batch
//     insert, then worked; the time runs from the start of work until the
//     library reports all N completions stored.
//   - insert-while-working (postgres): the processor runs while producers
//     insert N tasks in batches of 100.
//   - idle-pickup: one task every 20 ms into an idle processor; latency is
//     from the insert's return to the handler's start.
//   - raw SQL ceiling (postgres): a minimal queue table drained by a few
//     loops of SKIP LOCKED claims and batched deletes, with no library.
//
// Every run checks that exactly N distinct tasks ran once and that the
// database holds nothing else, and fails loudly otherwise. The last line
// of the report is
//
//	RESULT backend=<b> peonify=<jobs/s> peer=river:<jobs/s> ratio=<peonify/peer>
//
// See README.md for the flags, what each column means and the latest
// figures.
package main
