// Package chaostest is Peonify's fault-injection suite, and the small
// toolkit it is built on, for chaos tests of your own processors.
//
// # The suite
//
// The package's tests start processor processes (the test binary, run
// again as a child) on each durable stream — the embedded SQLite store,
// Postgres, Redis, NATS JetStream and RabbitMQ — inject one fault per
// scenario, heal it, wait until the queue is quiet, then check every task:
//
//	kill       a processor is SIGKILLed mid-task three times in one run, and another is SIGTERMed under load
//	stop       a processor is SIGSTOPped past its leases and resumed after another claimed its tasks again:
//	           its late acks must not remove or change the newer claims
//	restart    the server is stopped and started again under two processors and a producer
//	panic      handlers panic; every panic is a failed, retried attempt and no worker is lost
//	ignorectx  handlers ignore their context at shutdown; the process still exits within its drain deadline
//	poison     a task that always fails and one that crashes its process end dead after their attempts,
//	           without a crash loop
//	payloads   malformed payloads and an unknown task type end dead with a reason; big payloads are
//	           refused at Enqueue or delivered
//	backlog    a million queued tasks drain while the processor's live heap and goroutines stay flat
//	workflow   200 diamond workflows (A→B, A→C, B→D, C→D) run while a processor is SIGKILLed three times:
//	           every workflow succeeds, no task starts before its parents' success, D ends with B's and
//	           C's results (on the stores that run workflows: SQLite, Postgres, Redis)
//
// and network faults, through an in-process fault-injecting TCP proxy
// (internal/streamtest.Proxy) between some processes and the server, so
// skipped on the embedded store, which has no network:
//
//	partition  one of three processors is cut off from the server (no byte either way, nothing closed) past its
//	           leases, then healed: the others take its tasks over, it works again without a restart
//	latency    50ms (±20ms) each way for the whole run: everything completes, no lease is lost
//	           (PEONIFY_CHAOS_LONG=1 also logs throughput at 0 and 50ms for QueueSize Workers and 10× Workers)
//	halfopen   a processor's connections go silent (no reset, no FIN): it notices within its StoreTimeout,
//	           reconnects, and on SIGTERM with silent connections Run returns within the drain deadline
//	reset      a producer and a processor at 256 KiB/s, one connection reset mid-reply every 150ms: an Enqueue
//	           that failed is tried again, one that returned nil is never lost
//	fulldisk   the embedded store's file system (a tmpfs the cell mounts; skipped without CAP_SYS_ADMIN) fills
//	           up: Enqueue fails saying so, PRAGMA integrity_check passes, processing resumes once space is freed
//	intake     a webhook intake whose answers are cut mid-reply: the sender resends, the resend is answered as a
//	           duplicate, the task runs; requests cut while their body is sent (short of Content-Length, a
//	           chunked body without its last chunk) store nothing, and sent again whole are new tasks
//	intakews   a WebSocket intake whose acks are cut mid-reply, whose messages are cut while sent (inside a
//	           frame, between fragments), and the Go client resending through cut answers: every task runs,
//	           and each reaches the store once, whole (the resend window recognises every resend, RabbitMQ
//	           included)
//
// and failover, on clusters each cell starts on ports of its own
// (internal/testcluster), never on the shared servers:
//
//	failover      redis-cluster: the master of the queue's slot is SIGKILLed mid-run and its replica promoted;
//	              with the fast defaults only tasks enqueued within a second before the kill may be lost
//	              (counted in the lost column, noted as documented), with WaitReplicas=1 (redis-cluster-wait)
//	              nothing, and no task whose Ack returned nil before the kill runs again
//	nodefail      nats-cluster (3 nodes, 3 replicas): a node that leads nothing is killed and restarted
//	leaderfail    nats-cluster: the stream leader's node is killed and restarted; 0 lost
//	consumerfail  nats-cluster: the work consumer leader's node is killed and restarted; 0 lost
//	promote       postgres-replica: the primary stops (immediate shutdown) and the synchronous standby is
//	              promoted, processors and producers on a multi-host URL, SyncCommit set: 0 lost
//	promote-async postgres-replica with asynchronous replication and the defaults: only tasks enqueued within
//	              a second before the stop may be lost
//
// TestChaosKeepalive (PEONIFY_CHAOS=1, as root) runs a processor in a
// network namespace of its own, joined by a veth pair, and then drops
// every packet both ways with a queueing discipline (netem's loss 100%,
// or blackhole on a kernel without netem), so that nothing answers even
// its TCP keepalives, unlike the in-process proxy. It reports, for each
// server stream side by side, how long the processor took to notice and
// what noticed (the first warning it logs), and checks that it works
// again once the packets flow and that nothing is lost. It removes its
// namespaces and links when it ends, also on failure, and skips without
// root, ip or tc.
//
// Each scenario asserts that every task whose Enqueue returned nil
// completed at least once, that no other task appeared, that tasks ran
// more than once only if they were in flight at a fault (and no more often
// than such faults), that nothing stays leased once the fault is healed,
// that each process exits within its drain deadline on SIGTERM, and that
// each process's goroutines return to their baseline when Run returns.
// Each is bounded to a minute and prints a row of a table:
//
//	scenario  stream    tasks  lost  duplicates  seconds  result  note
//	kill      postgres  600    0     4 (≤ 23)    6.2      ok      3 SIGKILLs holding 23 tasks
//
// "go test ./chaostest" runs a smoke subset on the embedded store, which
// needs no server. PEONIFY_CHAOS=1 runs the whole matrix against the
// servers named by the PEONIFY_TEST_*_URL variables. It restarts the local
// Postgres and RabbitMQ servers, so run it on its own, not beside other
// tests; it leaves them running. Redis and NATS are restarted as private
// servers that the scenario starts itself. PEONIFY_CHAOS_TABLE=file also
// appends the table to file (TestChaosKeepalive appends its rows too).
//
// # The toolkit
//
// A Ledger is a file that processor processes append to: each completed
// handler run (through Ledger.Middleware, before the handler returns to the
// processor, so a run whose ack never happened is on record), and each
// claim, ack and nack (through Ledger.Wrap); a producer that may be
// killed too records what its Enqueue stored (Ledger.Enqueued). ReadLedger
// reads it back into a History, which says what each process held when it
// was killed (History.Held) and checks the end result (History.Verify). A
// Table prints the results. Peonify's own crash tests of each stream use
// the same Ledger and Verify: they are the one definition of "nothing
// lost, duplicates bounded".
//
// A processor process records its work:
//
//	ledger, err := chaostest.OpenLedger(os.Getenv("LEDGER"), chaostest.LedgerConfig{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	p, err := peonify.New(peonify.Config{Middleware: []peonify.Middleware{ledger.Middleware()}})
//	if err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddTaskList(tasks); err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddStream(ledger.Wrap(stream)); err != nil {
//		log.Fatal(err)
//	}
//	log.Fatal(p.Run(ctx))
//
// The test kills it, notes what it held, lets another process finish the
// work, and checks:
//
//	_ = worker.Process.Kill()
//	_ = worker.Wait()
//	h, err := chaostest.ReadLedger(ledgerPath)
//	if err != nil {
//		t.Fatal(err)
//	}
//	inFlight := h.Held(worker.Process.Pid)
//	// ... start another worker, wait until the queue is empty ...
//	if err := h.Refresh(); err != nil {
//		t.Fatal(err)
//	}
//	if err := h.Verify(enqueuedIDs, inFlight).Err(); err != nil {
//		t.Fatal(err)
//	}
//
// Ledger.Timed records when each handler run begins (with the task's key)
// and returns, read back with History.Runs, for tests of when tasks ran:
// how many overlapped, in what order they started. Ledger.Mark records
// events of a test's own (a poll, a phase), read back with History.Marks.
// The flow-control suite (chaostest/limittest) checks its limits with
// them.
//
// To disturb a stream inside one process instead (failed calls, latency, a
// stall), wrap it with peonifytest.NewFaultStream.
//
// # Time
//
// Tests of a processor's timing need no clock of Peonify's own: the
// processor and memstream take all their time from the time package, so
// inside a testing/synctest bubble they run on its virtual clock, and an
// hour of task timeout, lease renewals, retry backoff or shutdown grace
// passes in milliseconds, exactly (see TestVirtualTime). Streams on a server
// cannot run in a bubble: their leases run on the server's clock.
package chaostest
