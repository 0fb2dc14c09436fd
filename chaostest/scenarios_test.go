//go:build unix

package chaostest

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// scenario is one fault, run against each backend.
type scenario struct {
	name    string
	restart bool   // restarts a server: the cell runs on one it may restart
	smoke   bool   // part of the default run, on the embedded store
	only    string // the one backend it applies to, if any
	tmpfs   int64  // the size of the tmpfs the cell's queue is on; none when 0
	cluster bool   // runs on the cluster backends only, which run nothing else
	run     func(c *cell)
}

var scenarios = []scenario{
	{name: "kill", smoke: true, run: scenarioKill},
	{name: "stop", smoke: true, run: scenarioStop},
	{name: "restart", restart: true, run: scenarioRestart},
	{name: "panic", run: scenarioPanic},
	{name: "ignorectx", smoke: true, run: scenarioIgnoreCtx},
	{name: "poison", smoke: true, run: scenarioPoison},
	{name: "payloads", run: scenarioPayloads},
	{name: "backlog", only: "sqlite", run: scenarioBacklog},
	{name: "workflow", smoke: true, run: scenarioWorkflow}, // skipped where the stream runs no workflows
	// Network faults (netfault_test.go), skipped on the embedded store,
	// which has no network, and a full disk under it.
	{name: "partition", run: scenarioPartition},
	{name: "latency", run: scenarioLatency},
	{name: "halfopen", run: scenarioHalfOpen},
	{name: "reset", run: scenarioReset},
	{name: "fulldisk", only: "sqlite", tmpfs: fullDiskSize, run: scenarioFullDisk},
	{name: "intake", run: scenarioIntake}, // intake_test.go
	{name: "intakews", run: scenarioIntakeWS},
}

// knownIssues are the failures, by scenario/backend, that a stream's
// owner has been told about: the cell notes them instead of failing. The
// check runs as for any cell, so a fix shows as the note disappearing;
// remove the entry then.
var knownIssues = map[string]string{
	// Seen in 1 of 5 CI runs: three acks, each confirmed by the server
	// (natsstream waits for JetStream's reply), sent while nats-server
	// was shutting down on SIGTERM, and the messages delivered again
	// after its restart. The server applied the acks in memory and
	// stopped before writing the consumer's state. Not yet reported
	// upstream: there is no network here.
	"restart/nats": "nats-server can confirm an ack during its SIGTERM shutdown and deliver the message again after the restart",
}

// TestChaos runs processor processes on each durable stream, injects one
// fault per scenario, heals it, waits for the queue to be quiet and checks
// every task (see cell.finish). By default it runs a smoke subset on the
// embedded store; PEONIFY_CHAOS=1 runs the whole matrix, server restarts
// and the million-task backlog included, and should run alone: it restarts
// the shared Postgres and RabbitMQ servers. It logs a table of scenario ×
// stream, also appended to the file named by PEONIFY_CHAOS_TABLE if set.
func TestChaos(t *testing.T) {
	full := chaosEnabled()
	var tbl Table
	t.Run("cells", func(t *testing.T) {
		for _, sc := range scenarios {
			for _, b := range backends {
				if sc.only != "" && sc.only != b.name || sc.cluster != b.cluster {
					continue
				}
				if !full && (!sc.smoke || b.name != "sqlite") {
					continue
				}
				t.Run(sc.name+"/"+b.name, func(t *testing.T) {
					if !full {
						t.Parallel() // the embedded store's cells share nothing
					}
					sc.run(newCellIn(t, b, sc.name, sc.restart, sc.tmpfs, &tbl))
				})
			}
		}
	})
	mode := "smoke subset; PEONIFY_CHAOS=1 runs the full matrix"
	if full {
		mode = "full matrix"
	}
	t.Logf("chaos table (%s):\n%s", mode, tbl.String())
	appendTable(t, &tbl)
}

// appendTable appends tbl to the file named by PEONIFY_CHAOS_TABLE, if
// set, where every test of the matrix adds its rows.
func appendTable(t *testing.T, tbl *Table) {
	path := os.Getenv("PEONIFY_CHAOS_TABLE")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err == nil {
		_, err = f.WriteString(tbl.String())
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		t.Error(err)
	}
}

// waitUp waits until each child is about to poll.
func (c *cell) waitUp(children ...*child) {
	c.t.Helper()
	for _, ch := range children {
		if !waitFor(min(30*time.Second, c.remaining()), func() bool { return len(c.notesOf(kindUp, ch.pid)) > 0 || ch.Exited() }) {
			c.t.Fatalf("child %s did not start within 30s", ch.o.Name)
		}
		if ch.Exited() {
			c.t.Fatalf("child %s exited at start with %v:\n%s", ch.o.Name, ch.Err(), ch.Output())
		}
	}
}

// enqueueUntilStored enqueues tasks until an Enqueue returns nil, 100ms
// apart, calling failed with each error, and reports false if ctx ended
// first. Each failed call may have stored some of the tasks, and a broker
// that cannot refuse a duplicate ID stores them again, so they count as in
// flight at a fault for each failed call.
func (c *cell) enqueueUntilStored(ctx context.Context, tasks []*peonify.Task, failed func(error)) bool {
	for {
		err := c.tryEnqueue(false, tasks...)
		if err == nil {
			return true
		}
		c.inFlight(ids(tasks))
		failed(err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitProgress waits, within the cell's budget, until a quarter of total
// tasks are enqueued and a sixth are done: the moment the server scenarios
// strike, with work both queued and running.
func (c *cell) waitProgress(total int) {
	waitFor(c.remaining(), func() bool {
		c.mu.Lock()
		stored := slices.Clone(c.enqueued)
		c.mu.Unlock()
		return len(stored) >= total/4 && c.completed(stored) >= total/6
	})
}

// heldBy returns the tasks the processes hold now.
func (c *cell) heldBy(pids ...int) []string {
	c.refresh()
	c.mu.Lock()
	defer c.mu.Unlock()
	var held []string
	for _, pid := range pids {
		held = append(held, c.hist.Held(pid)...)
	}
	slices.Sort(held)
	return slices.Compact(held)
}

// reports returns the exit reports of every child that wrote one.
func (c *cell) reports() []exitReport {
	c.mu.Lock()
	children := slices.Clone(c.children)
	c.mu.Unlock()
	var out []exitReport
	for _, ch := range children {
		if r, ok := c.report(ch); ok {
			out = append(out, r)
		}
	}
	return out
}

// scenarioKill SIGKILLs a processor three times while it holds tasks,
// starting another in its place each time, and SIGTERMs the other
// processor once under load. Only the killed processes' tasks may run
// twice.
func scenarioKill(c *cell) {
	const waves, perWave = 4, 150
	victim, other := c.startChild(nil), c.startChild(nil)
	c.waitUp(victim, other)
	var held int
	for w := range waves {
		tasks := c.tasks(fmt.Sprintf("kill%d", w), perWave, work{Ms: 20})
		c.enqueue(tasks...)
		if w < waves-1 {
			if !c.waitHolding(victim, 2) {
				c.note("wave %d: the victim held fewer than 2 tasks when killed", w)
			}
			held += len(c.kill(victim))
			victim = c.startChild(nil)
			c.waitUp(victim)
			continue
		}
		c.waitHolding(other, 2)
		c.note("SIGTERM under load drained in %s", c.terminate(other, exitOK).Round(time.Millisecond))
		other = c.startChild(nil)
	}
	c.waitAll()
	c.waitQuiet()
	c.note("%d SIGKILLs holding %d tasks", waves-1, held)
	c.finish()
}

// scenarioStop stops a processor with SIGSTOP while it runs tasks, until
// their leases end and another processor has claimed them again, then
// resumes it. Its late acks must not touch the newer claims, which the
// other processor holds at a gate until the stale acks have been sent.
func scenarioStop(c *cell) {
	gate := filepath.Join(c.dir, "gate")
	a := c.startChild(nil)
	b := c.startChild(func(o *orders) { o.Gate, o.Workers, o.QueueSize = gate, 8, 8 })
	c.waitUp(a, b)
	c.enqueue(c.tasks("stop", 300, work{Ms: 50, Busy: true})...)
	if !c.waitHolding(a, 4) {
		c.t.Fatal("the process to stop never held 4 tasks")
	}
	heldA := c.freeze(a)
	if c.b.name == "sqlite" {
		// A process stopped inside a write transaction holds the file's
		// write lock, and every other process waits until it resumes:
		// SQLite's locking, not a fault of the stream. Stop it elsewhere.
		for try := 0; c.sqliteWriteLocked(); try++ {
			if try == 20 {
				c.t.Fatal("the stopped process holds the SQLite write lock however often it is stopped")
			}
			c.thaw(a)
			time.Sleep(time.Duration(try+1) * 7 * time.Millisecond)
			heldA = c.freeze(a)
			c.note("stopped again: it held the SQLite write lock")
		}
	}
	stopped := time.Now()

	// B claims A's tasks again once their leases end (for AMQP, once the
	// broker has dropped A's connection for missed heartbeats).
	var reclaimed []string
	waitFor(min(c.remaining(), 4*c.spec.Lease+10*time.Second), func() bool {
		held := c.heldBy(b.pid)
		reclaimed = reclaimed[:0]
		for _, id := range heldA {
			if _, ok := slices.BinarySearch(held, id); ok {
				reclaimed = append(reclaimed, id)
			}
		}
		return len(reclaimed) == len(heldA)
	})
	if len(reclaimed) == 0 {
		c.t.Fatalf("no task of the %d the stopped process held was claimed again within %s", len(heldA), time.Since(stopped))
	}
	c.thaw(a)
	c.note("stopped for %s holding %d tasks, %d claimed again", time.Since(stopped).Round(100*time.Millisecond), len(heldA), len(reclaimed))
	c.terminate(a, exitOK) // when it has exited, its stale acks and nacks have been sent

	c.refresh()
	c.mu.Lock()
	stale := 0
	for _, id := range reclaimed {
		if k := c.hist.settled[a.pid][id]; k == kindAck || k == kindAckErr {
			stale++
		}
	}
	c.mu.Unlock()
	c.note("%d stale acks fenced", stale)
	if c.b.seesRunning {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		for _, id := range reclaimed {
			info, err := c.st.insp.Get(ctx, id)
			switch {
			case err != nil:
				c.t.Errorf("task %s, claimed again while its first process was stopped: after that process resumed, Get: %v (a stale ack removed the newer claim?)", id, err)
			case info.State != peonify.StateRunning:
				c.t.Errorf("task %s, claimed again while its first process was stopped: after that process resumed, it is %s, want running (a stale ack or nack touched the newer claim)", id, info.State)
			}
		}
		cancel()
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.waitAll()
	c.waitQuiet()
	c.finish()
	c.refresh()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range reclaimed {
		if k := c.hist.settled[b.pid][id]; k != kindAck {
			c.t.Errorf("task %s: the ack of its newer claim did not go through (record %q)", id, k)
		}
	}
}

// sqliteWriteLocked reports whether a process holds the write lock of the
// cell's SQLite file for longer than the running processes ever do.
func (c *cell) sqliteWriteLocked() bool {
	db, err := sql.Open("sqlite", c.spec.Addr+"?_pragma=busy_timeout(500)")
	if err != nil {
		c.t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := db.Conn(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return true
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		c.t.Fatal(err)
	}
	return false
}

// scenarioRestart stops the server under two running processors and a
// producer, keeps it down for a moment, and starts it again. Tasks whose
// Enqueue failed during the outage are enqueued again.
func scenarioRestart(c *cell) {
	a, b := c.startChild(nil), c.startChild(nil)
	c.waitUp(a, b)
	const total, batch = 1200, 20
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var failures int
	wg.Go(func() {
		for i := 0; i < total && ctx.Err() == nil; i += batch {
			tasks := c.tasks(fmt.Sprintf("restart%04d", i), batch, work{Ms: 10})
			if !c.enqueueUntilStored(ctx, tasks, func(error) { failures++ }) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	c.t.Cleanup(func() { cancel(); wg.Wait() })

	// Restart once a quarter is enqueued and a sixth done.
	c.waitProgress(total)
	before := c.heldBy(a.pid, b.pid)
	down := time.Now()
	stopped := c.srv.restart(c.t, 1500*time.Millisecond)
	c.note("server down for %s", time.Since(down).Round(100*time.Millisecond))
	after := c.heldBy(a.pid, b.pid)
	// In flight at the restart: what the processors held when it began or
	// when it ended, and every task they claimed, ran, acked or nacked
	// while the server was stopping, since a stopping server may lose
	// acknowledgements it has received but not yet applied.
	held := slices.Compact(slices.Sorted(slices.Values(append(before, after...))))
	touched, firstOK := c.recordsBetween(down, stopped)
	c.addFault(held, touched)

	c.waitProducer(&wg)
	c.waitAll()
	c.waitQuiet()
	c.note("%d enqueues failed and were retried", failures)
	c.finish()
	var again []string
	c.mu.Lock()
	for _, id := range firstOK {
		if _, ok := slices.BinarySearch(held, id); !ok && c.hist.Completions(id) > 1 {
			again = append(again, id)
		}
	}
	c.mu.Unlock()
	if len(again) > 0 {
		c.note("%d tasks acked just before the server stopped ran again", len(again))
		switch issue, known := knownIssues[c.scenario+"/"+c.b.name]; {
		case !c.b.acksConfirmed:
			c.note("allowed: the broker does not confirm acks")
		case known:
			c.note("known issue: %s", issue)
		default:
			c.t.Errorf("%d tasks whose Ack returned nil before the server stopped were delivered again after it restarted: %s",
				len(again), some(again))
		}
		if testing.Verbose() || c.t.Failed() {
			c.trace(some5(again))
		}
	}
}

// recordsBetween returns, sorted, the tasks that have a claim, run, ack or
// nack record between from and to, and those of them whose first ack in
// that time returned nil rather than failing.
func (c *cell) recordsBetween(from, to time.Time) (touched, ackedFirst []string) {
	b, err := os.ReadFile(c.ledger)
	if err != nil {
		c.t.Fatal(err)
	}
	first := make(map[string]byte)
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Split(line, " ")
		if len(f) < 4 || len(f[0]) != 1 {
			continue
		}
		us, err := strconv.ParseInt(f[2], 10, 64)
		if at := time.UnixMicro(us); err != nil || at.Before(from) || at.After(to) {
			continue
		}
		var ids []string
		switch k := f[0][0]; k {
		case kindClaim:
			for i := 3; i < len(f); i += 2 {
				ids = append(ids, f[i])
			}
		case kindDone:
			ids = f[3:4]
		case kindNack:
			ids = f[4:min(5, len(f))]
		case kindAck, kindAckErr:
			ids = f[3:]
			for _, id := range ids {
				if _, ok := first[id]; !ok {
					first[id] = k
				}
			}
		}
		for _, id := range ids {
			touched = append(touched, unescape(id))
		}
	}
	for id, k := range first {
		if k == kindAck {
			ackedFirst = append(ackedFirst, unescape(id))
		}
	}
	slices.Sort(touched)
	slices.Sort(ackedFirst)
	return slices.Compact(touched), ackedFirst
}

// scenarioPanic runs tasks whose handlers panic on their first attempts.
// Each panic is a failed attempt, retried; no process crashes and no
// worker is lost. One processor is SIGTERMed under load.
func scenarioPanic(c *cell) {
	a, b := c.startChild(nil), c.startChild(nil)
	c.waitUp(a, b)
	tasks := make([]*peonify.Task, 300)
	panics := 0
	for i := range tasks {
		w := work{Ms: 5}
		switch {
		case i%10 == 0:
			w.Panic = 2
		case i%3 == 0:
			w.Panic = 1
		}
		panics += w.Panic
		tasks[i] = &peonify.Task{ID: fmt.Sprintf("panic-%04d", i), Type: "chaos", Payload: payload(w)}
	}
	c.enqueue(tasks...)
	c.waitCompleted(ids(tasks), len(tasks)/2)
	c.note("SIGTERM under load drained in %s", c.terminate(b, exitOK).Round(time.Millisecond))
	c.startChild(nil)
	c.waitAll()
	c.waitQuiet()
	c.finish()
	var failed uint64
	for _, r := range c.reports() {
		failed += r.Stats.Failed
	}
	// A claim whose lease ran out before its handler started (a loaded
	// machine, the SIGTERMed process) uses up an attempt without running
	// it, so a task may skip a planned panic. What must hold is that every
	// panic that happened was counted as a failed run, and that most
	// planned panics happened.
	happened := len(c.notesOf(kindPanic, 0))
	if failed != uint64(happened) {
		c.t.Errorf("the processors counted %d failed runs, but handlers panicked %d times", failed, happened)
	}
	if happened < panics*9/10 || happened > panics {
		c.t.Errorf("handlers panicked %d times, want about the %d planned", happened, panics)
	}
	c.note("%d of %d planned panics happened and were recovered", happened, panics)
}

// scenarioIgnoreCtx SIGTERMs a processor whose every worker runs a handler
// that ignores its context. The process must still exit within its drain
// deadline, reporting the abandoned handlers, and their tasks must run to
// completion elsewhere.
func scenarioIgnoreCtx(c *cell) {
	a := c.startChild(func(o *orders) { o.Stuck = true })
	c.waitUp(a)
	c.enqueue(c.tasks("stuck", a.o.Workers, work{Stuck: true})...)
	if !waitFor(c.remaining(), func() bool { return len(c.notesOf(kindStuck, a.pid)) == a.o.Workers }) {
		c.t.Fatalf("the %d stuck tasks did not all start", a.o.Workers)
	}
	c.enqueue(c.tasks("ctx", 100, work{Ms: 10})...)
	c.startChild(nil)
	took := c.terminate(a, exitRunErr)
	c.note("drained in %s with %d handlers ignoring ctx (deadline %s)", took.Round(time.Millisecond), a.o.Workers, drainDeadline(a.o.Grace))
	if r, ok := c.report(a); ok {
		if r.Stuck != a.o.Workers || !strings.Contains(r.RunErr, "ignored context cancellation") {
			c.t.Errorf("the stuck process reported %d stuck handlers and Run error %q; want %d and an error naming them", r.Stuck, r.RunErr, a.o.Workers)
		}
	}
	c.waitAll()
	c.waitQuiet()
	c.finish()
}

// scenarioPoison runs, among ordinary tasks, first a task that always
// fails, then one that crashes its process beside another that always
// fails. All must end dead after their attempts, the crashing one without
// a crash loop: once its attempts are used up the processor dead-letters
// it without running it.
func scenarioPoison(c *cell) {
	const maxAttempts = 3
	fail := &peonify.Task{ID: "poison-fail", Type: "chaos", MaxAttempts: maxAttempts, Payload: payload(work{Fail: true})}
	crash := &peonify.Task{ID: "poison-crash", Type: "chaos", MaxAttempts: maxAttempts, Payload: payload(work{Crash: true})}
	runs := func(id string) int {
		n := 0
		for _, r := range c.notesOf(kindRun, 0) {
			if len(r.fields) > 0 && unescape(r.fields[0]) == id {
				n++
			}
		}
		return n
	}
	ch := c.startChild(nil)
	c.waitUp(ch)

	// The failing task runs exactly its attempts, then is dead.
	c.enqueue(c.tasks("poison1", 100, work{Ms: 5})...)
	c.enqueueDead(fail)
	c.waitDead(fail.ID)
	if n := runs(fail.ID); n != maxAttempts {
		c.t.Errorf("the failing task ran %d times, want its %d attempts", n, maxAttempts)
	}

	// The crashing task crashes a process per attempt, restarted as a
	// service manager would, and then is dead. Another failing task, whose
	// retries are under way when the processes crash, ends dead too.
	fail2 := &peonify.Task{ID: "poison-fail-2", Type: "chaos", MaxAttempts: maxAttempts, Payload: payload(work{Fail: true, Ms: 50})}
	normal := c.tasks("poison2", 100, work{Ms: 5})
	c.enqueue(normal...)
	c.enqueueDead(crash, fail2)
	crashes := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !c.isDead(crash.ID) || !c.isDead(fail2.ID) {
		if time.Now().After(c.deadline) {
			c.t.Fatalf("after %d crashes, within the cell's budget, the crashing task is %s; the other failing task is %s",
				crashes, c.describe(crash.ID), c.describe(fail2.ID))
		}
		select {
		case <-ch.Done():
			if code := exitCode(ch.Err()); code != exitCrash {
				c.t.Fatalf("child %s exited with %v, want the crash of the poison task; its output:\n%s", ch.o.Name, ch.Err(), ch.Output())
			}
			crashes++
			if crashes > maxAttempts {
				c.t.Fatalf("crash loop: the poison task crashed %d processes, more than its %d attempts", crashes, maxAttempts)
			}
			c.fault(ch.pid)
			ch = c.startChild(nil)
		case <-tick.C:
		}
	}
	if n := runs(crash.ID); n != crashes || crashes == 0 {
		c.t.Errorf("the crashing task ran %d times and crashed %d processes; want the same number, 1 to %d", n, crashes, maxAttempts)
	}
	c.note("the failing task ran %d times, the crashing one crashed %d processes; both dead", runs(fail.ID), crashes)
	c.waitAll()
	c.waitQuiet()
	c.finish()
}

// isDead reports whether the task with this ID is dead.
func (c *cell) isDead(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := c.st.insp.Get(ctx, id)
	return err == nil && info.State == peonify.StateDead
}

// describe says what the test's Inspector knows of a task.
func (c *cell) describe(id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	counts, cerr := c.st.insp.Counts(ctx)
	info, err := c.st.insp.Get(ctx, id)
	if err != nil {
		return fmt.Sprintf("Get: %v; tasks by state %v (%v)", err, counts, cerr)
	}
	return fmt.Sprintf("state %s, attempts %d, last error %q; tasks by state %v (%v)", info.State, info.Attempts, info.LastError, counts, cerr)
}

// waitDead waits until the task with this ID is dead.
func (c *cell) waitDead(id string) {
	c.t.Helper()
	if !waitFor(c.remaining(), func() bool { return c.isDead(id) }) {
		c.t.Fatalf("task %s is not dead within the cell's budget: %s", id, c.describe(id))
	}
}

// scenarioPayloads enqueues malformed payloads and a task of an unknown
// type, which must end dead with a reason and crash nothing; odd messages
// written with the broker's own client, as producers in other languages
// do; and payloads of growing size, which a stream either refuses at
// Enqueue or delivers intact.
func scenarioPayloads(c *cell) {
	if c.b.name == "sqlite" {
		// SQLite keeps a task's payload in its row, and a claim, an
		// Extend and an ack rewrite the row: claiming the 17 MiB task
		// takes about 0.9s here, 1.8s under the race detector, most of
		// the cells' 2s lease, and a live processor once lost it
		// (sqlitestream's README, "Big payloads").
		c.spec.Lease = 8 * time.Second
	}
	a, b := c.startChild(nil), c.startChild(nil)
	c.waitUp(a, b)
	c.enqueue(c.tasks("payload", 100, work{Ms: 2})...)
	malformed := []struct{ name, payload string }{
		{"truncated", `{"ms":`},
		{"text", `not json at all`},
		{"binary", "\xff\xfe\x00\x01\x02"},
		{"wrong-type", `{"ms":"slow"}`},
		{"two-values", `{"ms":1} {"ms":2}`},
		{"array", `[1,2,3]`},
	}
	for _, m := range malformed {
		c.enqueueDead(&peonify.Task{ID: "malformed-" + m.name, Type: "chaos", Payload: []byte(m.payload)})
	}
	c.enqueueDead(&peonify.Task{ID: "unknown-type", Type: "chaos-unknown", Payload: []byte(`{}`)})
	summed := func(tk *peonify.Task) *peonify.Task {
		tk.Headers = map[string]string{sumHeader: checksum(tk.Payload)}
		return tk
	}
	c.enqueue(
		&peonify.Task{ID: "empty", Type: "chaos"},
		summed(&peonify.Task{ID: "null", Type: "chaos", Payload: []byte(`null`)}),
		summed(&peonify.Task{ID: "odd-text", Type: "chaos", Payload: payload(work{Pad: "NUL \x00, quote \", emoji 🙂, invalid \xff"})}),
		// Invalid UTF-8 in a string and white space around the value:
		// valid for Go's decoder, and it must arrive byte for byte.
		summed(&peonify.Task{ID: "odd-bytes", Type: "chaos", Payload: []byte("\r\n {\"pad\":\"\xff\xfe\\u0000\"}\t \n")}),
	)
	if c.b.raw != nil {
		complete, dead := c.b.raw(c.t, c.spec)
		c.mu.Lock()
		c.enqueued = append(c.enqueued, complete...)
		c.dead = append(c.dead, dead...)
		c.mu.Unlock()
		c.note("%d raw producer messages", len(complete)+len(dead))
	}
	for _, size := range []int{256 << 10, 1536 << 10, 17 << 20} {
		pad := bytes.Repeat([]byte{'x'}, size)
		tk := summed(&peonify.Task{ID: fmt.Sprintf("big-%dk", size>>10), Type: "chaos", Payload: payload(work{Pad: string(pad)})})
		if err := c.tryEnqueue(false, tk); err != nil {
			msg := err.Error()
			if len(msg) > 120 {
				msg = msg[:120] + "…"
			}
			c.note("%d KiB refused at Enqueue (%s)", size>>10, msg)
		}
	}
	c.waitAll()
	c.waitQuiet()
	c.finish()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, m := range malformed {
		if info, err := c.st.insp.Get(ctx, "malformed-"+m.name); err == nil && !strings.Contains(info.LastError, "decode") && !strings.Contains(info.LastError, "after its JSON") {
			c.t.Errorf("malformed payload %s is dead with reason %q, which does not say the payload does not decode", m.name, info.LastError)
		}
	}
	if info, err := c.st.insp.Get(ctx, "unknown-type"); err == nil && !strings.Contains(info.LastError, "no handler") {
		c.t.Errorf("the task of an unknown type is dead with reason %q, which does not say it has no handler", info.LastError)
	}
}
