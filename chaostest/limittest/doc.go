// Package limittest is the multi-process suite of Peonify's flow control
// (peonify.Limit): it checks that concurrency limits, rate limits, per-key
// ordering and fairness hold across processes, on the stores that enforce
// them in their claims: the embedded SQLite store, Postgres and Redis.
//
// Each scenario starts processor processes (the test binary, run again as
// a child) on one fresh queue, all with the same limits. Each records in a
// chaostest.Ledger when every handler run begins and returns
// (chaostest.Ledger.Timed), its claims, acks and nacks, and each of its
// polls (chaostest.Ledger.Mark). The test reads the ledger back and checks:
//
//	concurrency  PerKey Concurrency 3 on key K under load from 20 other keys, and a Type limit of 3, over 4
//	             processes: the most runs of K at one instant is exactly 3, never 4, and so for the type;
//	             other keys run beside K (no head-of-line blocking)
//	rate         Rate 20 per second, Burst 5, 200 tasks over 4 processes: no one-second window holds more
//	             than 25 starts, and the first start to the last takes at least 8.5s (and not much longer)
//	ordered      2,000 tasks over 50 Ordered keys, one in ten failing once, over 4 processes: per key,
//	             runs start in enqueue order (a retry keeps its place) and never overlap
//	fair         key A gets 20,000 tasks, then key B 20, and 4 processes start together under a Fair limit:
//	             all of B's finish before a tenth of A's have started; then, while A's run, key C gets 20:
//	             all of C's finish before another tenth of A's have started
//	kill         a process SIGKILLed while it holds permits of a Concurrency 3 key: the limit is never
//	             exceeded while its tasks' leases run out, counting its tasks as running until then, and
//	             the other processes run 3 at once again soon after the leases end
//	idle         a process whose every task is held back (a key held with KeyConcurrency 0, a rate whose
//	             next token is an hour away) uses next to no CPU and polls its store a few times a second
//	             at most
//
// On SQLite the fairness scenario stores A's tasks with the plain INSERT
// that sqlitestream's README gives producers without Go: under the race
// detector, which slows the SQLite engine some 30 times, 20,000 Enqueues
// would take half a minute. The scenario logs how long C's Enqueue waited
// for the file's write lock, which the four processes' claims and acks
// take in turn.
//
// Every scenario also checks, with chaostest's History.Verify, that every
// task it waited for completed, and that only the tasks a killed process
// held ran twice.
//
// The tests need Unix signals. The SQLite scenarios always run; those on
// Postgres and Redis run against the servers named by
// PEONIFY_TEST_POSTGRES_URL and PEONIFY_TEST_REDIS_URL, and are skipped
// without them (or fail, when PEONIFY_REQUIRE_SERVICES=1 asks for every
// service). Each uses a queue of its own, so they may share servers with
// other tests. The whole suite takes about two minutes; the rate and idle
// scenarios of the three stores run in parallel.
//
//	go test -race ./chaostest/limittest
package limittest
