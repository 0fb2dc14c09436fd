//go:build unix

package chaostest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// cellBudget bounds one scenario on one stream, setup excluded.
const cellBudget = 60 * time.Second

// childGrace is the children's Config.ShutdownGrace.
const childGrace = 2 * time.Second

// drainDeadline is how long a processor may take to exit after SIGTERM:
// its grace period, the wait for cancelled handlers (the smaller of the
// grace period and 5s), then time to flush acks, close its stream and its
// client.
func drainDeadline(grace time.Duration) time.Duration {
	return grace + min(grace, 5*time.Second) + 5*time.Second
}

// cell is one scenario run against one backend: its queue, its ledger, its
// child processes, and what it expects of them.
type cell struct {
	t        *testing.T
	b        *backend
	scenario string
	dir      string
	spec     streamSpec
	st       *opened // the test's own handle on the queue: Enqueue and Inspector
	srv      *restarter
	bin      string // the program run as a child; this one when empty
	ledger   string
	start    time.Time
	deadline time.Time

	mu       sync.Mutex // guards the fields below, which a producer goroutine may change
	hist     *History
	enqueued []string   // tasks whose Enqueue returned nil and that must complete
	dead     []string   // tasks that must end dead
	faults   [][]string // tasks in flight at each fault
	mayLose  []string   // tasks the faults may lose by what the stream documents (see Verdict.AllowLoss)
	verdict  *Verdict   // set by finish
	notes    []string
	children []*child
	seq      int
}

// newCell prepares a fresh queue for scenario on b, on a server the
// scenario may restart if restart is set. The cell's row is added to tbl
// when the test ends.
func newCell(t *testing.T, b *backend, scenario string, restart bool, tbl *Table) *cell {
	return newCellIn(t, b, scenario, restart, 0, tbl)
}

// newCellIn is newCell with, if tmpfs is above 0, the cell's queue on a
// tmpfs of that many bytes that the cell mounts (see mountTmpfs).
func newCellIn(t *testing.T, b *backend, scenario string, restart bool, tmpfs int64, tbl *Table) *cell {
	dir := t.TempDir()
	c := &cell{t: t, b: b, scenario: scenario, dir: dir, ledger: filepath.Join(dir, "ledger")}
	t.Cleanup(c.addRow(tbl))
	if tmpfs > 0 {
		dir = c.mountTmpfs(tmpfs)
	}
	addr := ""
	if restart {
		if b.restarter == nil {
			c.skip("the embedded store has no server to restart")
		}
		c.srv = b.restarter(t, dir)
		addr = c.srv.addr
	}
	c.spec = b.prepare(t, dir, addr)
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	st, err := openStream(context.Background(), c.spec, "test-"+randHex(3), logger)
	if err != nil {
		t.Fatal(err)
	}
	c.st = st
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := st.s.Close(ctx); err != nil {
			t.Errorf("closing the test's stream: %v", err)
		}
		st.done()
	})
	h, err := ReadLedger(c.ledger)
	if err != nil {
		t.Fatal(err)
	}
	c.hist = h
	c.start = time.Now()
	c.deadline = c.start.Add(cellBudget)
	return c
}

// skip ends the cell as not applicable, with a row saying why.
func (c *cell) skip(why string) {
	c.note("skipped: %s", why)
	c.t.Skip(why)
}

// note adds a remark to the cell's row.
func (c *cell) note(format string, args ...any) {
	c.mu.Lock()
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

// addRow returns the cleanup that reports the cell in tbl.
func (c *cell) addRow(tbl *Table) func() {
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		r := Row{Scenario: c.scenario, Stream: c.b.name, Failed: c.t.Failed(), Skipped: c.t.Skipped(),
			Note: strings.Join(c.notes, "; ")}
		if r.Skipped && r.Note == "" {
			r.Note = "skipped: see the test's log (a service is not configured?)"
		}
		if !c.start.IsZero() && c.hist != nil {
			v := c.verdict
			if v == nil {
				vv := c.hist.Verify(c.enqueued, c.faults...)
				vv.AllowLoss(c.mayLose)
				v = &vv
			}
			r.Tasks, r.Lost, r.Duplicates, r.Bound = v.Tasks, len(v.Lost)+len(v.MayLose), v.Duplicates, v.Bound
			if len(v.MayLose) > 0 {
				r.Note = strings.TrimPrefix(r.Note+fmt.Sprintf("; %d of the lost within the documented loss", len(v.MayLose)), "; ")
			}
			r.Took = time.Since(c.start)
		}
		tbl.Add(r)
	}
}

// remaining returns the time left in the cell's budget, at least a second
// so that a late step still reports what it waited for.
func (c *cell) remaining() time.Duration { return max(time.Until(c.deadline), time.Second) }

// waitProducer waits for the cell's producer goroutines, counted by wg,
// and fails the cell if they do not finish within its budget.
func (c *cell) waitProducer(wg *sync.WaitGroup) {
	c.t.Helper()
	produced := make(chan struct{})
	go func() { wg.Wait(); close(produced) }()
	select {
	case <-produced:
	case <-time.After(c.remaining()):
		c.t.Fatal("the producer did not finish within the cell's budget")
	}
}

// addFault records the tasks of sets, sorted and each once, as in flight
// at a fault: what the processors held before and after it, and what they
// touched meanwhile.
func (c *cell) addFault(sets ...[]string) {
	ids := slices.Compact(slices.Sorted(slices.Values(slices.Concat(sets...))))
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = append(c.faults, ids)
}

// refresh reads what the children recorded since the last look.
func (c *cell) refresh() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.hist.Refresh(); err != nil {
		c.t.Fatal(err)
	}
}

// child is one processor process.
type child struct {
	*streamtest.Child
	o        orders
	pid      int
	signaled bool // the test ended it on purpose
	// slack is time beyond its drain deadline that its exit may take, for
	// a known bound of its store's client (see knownSlack).
	slack time.Duration
}

// startChild starts a processor process; change adjusts its default
// orders.
func (c *cell) startChild(change func(*orders)) *child {
	c.t.Helper()
	c.mu.Lock()
	c.seq++
	n := c.seq
	c.mu.Unlock()
	o := orders{
		Spec: c.spec, Ledger: c.ledger, Name: fmt.Sprintf("%s-%s-%d-%s", c.scenario, c.b.name, n, randHex(2)),
		Workers: 4, QueueSize: 4, Grace: childGrace, MaxAttempts: 5,
	}
	if change != nil {
		change(&o)
	}
	ch := &child{Child: streamtest.StartMain(c.t, c.bin, childEnv, o), o: o}
	ch.pid = ch.Pid()
	c.mu.Lock()
	c.children = append(c.children, ch)
	c.mu.Unlock()
	return ch
}

// kill ends ch with SIGKILL and records the tasks it held as in flight at
// a fault, and returns them. Where the broker does not confirm acks, the
// tasks ch acked or nacked in the second before the kill are in flight at
// it too: an ack frame written to the socket just before the kill may die
// with the connection (CI once saw RabbitMQ deliver again four tasks
// acked a few milliseconds before their process was killed).
func (c *cell) kill(ch *child) []string {
	c.t.Helper()
	ch.signaled = true
	killed := time.Now()
	ch.Kill(c.t)
	held := c.fault(ch.pid)
	if !c.b.acksConfirmed {
		c.inFlight(c.settledBy(ch.pid, killed.Add(-time.Second)))
	}
	return held
}

// settledBy returns the IDs of the tasks process pid acked or nacked, with
// nil returned, from from on.
func (c *cell) settledBy(pid int, from time.Time) []string {
	var ids []string
	for _, r := range c.records(kindAck, pid, from) {
		for _, id := range r.fields {
			ids = append(ids, unescape(id))
		}
	}
	for _, r := range c.records(kindNack, pid, from) {
		if len(r.fields) >= 2 {
			ids = append(ids, unescape(r.fields[1]))
		}
	}
	return ids
}

// fault records the tasks process pid holds now as in flight at a fault,
// and returns them.
func (c *cell) fault(pids ...int) []string {
	held := c.heldBy(pids...)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = append(c.faults, held)
	return held
}

// freeze stops ch with SIGSTOP, waits until it is stopped, and returns
// the tasks it holds, recorded as in flight at a fault.
func (c *cell) freeze(ch *child) []string {
	c.t.Helper()
	if err := ch.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return processState(ch.pid) == 'T' }) {
		c.t.Fatalf("child %s did not stop within 5s of SIGSTOP", ch.o.Name)
	}
	return c.fault(ch.pid)
}

// processState returns the state letter of process pid ('R', 'S', 'T',
// ...), or 'T' where the system does not tell, after a moment for the
// signal to land.
func processState(pid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		time.Sleep(100 * time.Millisecond)
		return 'T'
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return '?'
	}
	return b[i+2]
}

// thaw resumes a stopped child with SIGCONT.
func (c *cell) thaw(ch *child) {
	c.t.Helper()
	if err := ch.Signal(syscall.SIGCONT); err != nil {
		c.t.Fatal(err)
	}
}

// terminate sends ch SIGTERM and checks that it exits within its drain
// deadline with want as its exit code, reporting on its goroutines. It
// returns how long the drain took.
func (c *cell) terminate(ch *child, want int) time.Duration {
	c.t.Helper()
	ch.signaled = true
	sent := time.Now()
	if err := ch.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatal(err)
	}
	limit := drainDeadline(ch.o.Grace) + ch.slack
	select {
	case <-ch.Done():
	case <-time.After(limit + 10*time.Second):
		_ = ch.Signal(syscall.SIGKILL)
		<-ch.Done()
		c.t.Errorf("child %s did not exit within %s of SIGTERM; killed it", ch.o.Name, limit+10*time.Second)
	}
	took := ch.ExitedAt().Sub(sent)
	if took > limit {
		c.t.Errorf("child %s exited %s after SIGTERM, beyond its drain deadline of %s; its output:\n%s", ch.o.Name, took.Round(time.Millisecond), limit, ch.Output())
	}
	if code := exitCode(ch.Err()); code != want {
		c.t.Errorf("child %s exited with %v (code %d) after SIGTERM, want code %d; its output:\n%s", ch.o.Name, ch.Err(), code, want, ch.Output())
	}
	r, ok := c.report(ch)
	switch {
	case !ok:
		c.t.Errorf("child %s wrote no exit report", ch.o.Name)
	case r.Leak != "":
		c.t.Errorf("child %s left goroutines after Run returned (baseline %d, after %d): %s", ch.o.Name, r.Baseline, r.Goroutines, r.Leak)
	}
	return took
}

// report returns the exit report of ch.
func (c *cell) report(ch *child) (exitReport, bool) {
	c.refresh()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.hist.notes {
		if n.kind == kindExit && n.pid == ch.pid && len(n.fields) == 1 {
			var r exitReport
			if err := json.Unmarshal([]byte(unescape(n.fields[0])), &r); err != nil {
				c.t.Errorf("child %s: bad exit report: %v", ch.o.Name, err)
				return r, false
			}
			return r, true
		}
	}
	return exitReport{}, false
}

// notesOf returns the test-only records of kind, of process pid or, if
// pid is 0, of every process.
func (c *cell) notesOf(kind byte, pid int) []note {
	c.refresh()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []note
	for _, n := range c.hist.notes {
		if n.kind == kind && (pid == 0 || n.pid == pid) {
			out = append(out, n)
		}
	}
	return out
}

// tasks returns n new tasks named prefix-0000 on, each doing w.
func (c *cell) tasks(prefix string, n int, w work) []*peonify.Task {
	payload, err := json.Marshal(w)
	if err != nil {
		c.t.Fatal(err)
	}
	tasks := make([]*peonify.Task, n)
	for i := range tasks {
		tasks[i] = &peonify.Task{ID: fmt.Sprintf("%s-%04d", prefix, i), Type: "chaos", Payload: payload}
	}
	return tasks
}

// payload returns w as JSON.
func payload(w work) []byte {
	b, _ := json.Marshal(w)
	return b
}

// enqueue stores tasks that must complete, failing the test if Enqueue
// fails.
func (c *cell) enqueue(tasks ...*peonify.Task) {
	c.t.Helper()
	if err := c.tryEnqueue(false, tasks...); err != nil {
		c.t.Fatalf("Enqueue: %v", err)
	}
}

// enqueueDead stores tasks that must end dead.
func (c *cell) enqueueDead(tasks ...*peonify.Task) {
	c.t.Helper()
	if err := c.tryEnqueue(true, tasks...); err != nil {
		c.t.Fatalf("Enqueue: %v", err)
	}
}

// tryEnqueue stores tasks and, if Enqueue returned nil or reported them
// as stored already, counts them as tasks that must complete (or end dead).
func (c *cell) tryEnqueue(dead bool, tasks ...*peonify.Task) error {
	return c.tryEnqueueWith(c.st.enq, dead, tasks...)
}

// tryEnqueueWith is tryEnqueue through enq, a producer of the cell's queue
// other than the test's own.
func (c *cell) tryEnqueueWith(enq peonify.Enqueuer, dead bool, tasks ...*peonify.Task) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := enq.Enqueue(ctx, tasks...)
	if err != nil && !errors.Is(err, peonify.ErrDuplicate) {
		return err
	}
	// A duplicate is a task an earlier Enqueue stored before its reply
	// was lost; Enqueue stored the others.
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tk := range tasks {
		if dead {
			c.dead = append(c.dead, tk.ID)
		} else {
			c.enqueued = append(c.enqueued, tk.ID)
		}
	}
	return nil
}

// completed returns how many of ids completed at least once.
func (c *cell) completed(ids []string) int {
	c.refresh()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, id := range ids {
		if c.hist.Completions(id) > 0 {
			n++
		}
	}
	return n
}

// ids returns the IDs of tasks.
func ids(tasks []*peonify.Task) []string {
	out := make([]string, len(tasks))
	for i, t := range tasks {
		out[i] = t.ID
	}
	return out
}

// waitCompleted waits until at least n of ids completed. It gives up
// early if one of them is dead.
func (c *cell) waitCompleted(ids []string, n int) {
	c.t.Helper()
	var got int
	next := time.Now()
	if !waitFor(c.remaining(), func() bool {
		if got = c.completed(ids); got >= n {
			return true
		}
		if time.Now().After(next) {
			next = time.Now().Add(time.Second)
			c.failIfDead(ids)
		}
		return false
	}) {
		c.t.Fatalf("only %d of %d tasks completed within the cell's %s", got, n, cellBudget)
	}
}

// failIfDead ends the test if one of ids, which must complete, is dead.
func (c *cell) failIfDead(ids []string) {
	c.t.Helper()
	c.mu.Lock()
	expected := len(c.dead)
	c.mu.Unlock()
	if counts, err := c.counts(); err != nil || counts[peonify.StateDead] <= expected {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	infos, err := c.st.insp.List(ctx, peonify.ListOptions{State: peonify.StateDead, Limit: 1000})
	if err != nil {
		return
	}
	for _, info := range infos {
		if slices.Contains(ids, info.Task.ID) {
			c.t.Fatalf("task %s, which must complete, is dead: %s", info.Task.ID, info.LastError)
		}
	}
}

// waitAll waits until every task enqueued to complete has completed.
func (c *cell) waitAll() {
	c.t.Helper()
	c.mu.Lock()
	all := slices.Clone(c.enqueued)
	c.mu.Unlock()
	c.waitCompleted(all, len(all))
}

// waitHolding waits until ch holds at least n tasks, and reports whether
// it did within a few seconds.
func (c *cell) waitHolding(ch *child, n int) bool {
	return waitFor(min(10*time.Second, c.remaining()), func() bool {
		c.refresh()
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.hist.held[ch.pid]) >= n
	})
}

// counts returns the queue's tasks by state, as the test's Inspector sees
// them.
func (c *cell) counts() (map[peonify.State]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.st.insp.Counts(ctx)
}

// waitQuiet waits until nothing is pending, scheduled or running (where
// the Inspector can see other processes' running tasks) and every task
// that must end dead is dead: the queue is quiet and nothing stays leased.
func (c *cell) waitQuiet() {
	c.t.Helper()
	var last map[peonify.State]int
	var lastErr error
	quiet := func() bool {
		last, lastErr = c.counts()
		if lastErr != nil {
			return false
		}
		running := last[peonify.StateRunning]
		if !c.b.seesRunning {
			running = 0
		}
		// A task in flight at a crash may have been dead-lettered twice:
		// finish tells those from other dead tasks.
		return last[peonify.StatePending] == 0 && last[peonify.StateScheduled] == 0 && running == 0 &&
			last[peonify.StateDead] >= len(c.dead)
	}
	if !waitFor(c.remaining(), quiet) {
		c.t.Fatalf("the queue did not become quiet (nothing pending, scheduled or running; at least %d dead): tasks by state %v, error %v",
			len(c.dead), last, lastErr)
	}
}

// finish ends the cell: it terminates the children still running and
// checks what the scenario always asserts: every enqueued task completed,
// nothing else did, duplicates only for tasks in flight at the faults, the
// queue empty of live tasks, dead tasks dead.
func (c *cell) finish() {
	c.t.Helper()
	c.mu.Lock()
	children := slices.Clone(c.children)
	c.mu.Unlock()
	for _, ch := range children {
		if !ch.Exited() {
			c.terminate(ch, exitOK)
		}
	}
	counts, err := c.counts()
	if err != nil {
		c.t.Errorf("counting the queue's tasks after the children exited: %v", err)
	} else if n := counts[peonify.StatePending] + counts[peonify.StateScheduled] + counts[peonify.StateRunning]; n > 0 {
		c.t.Errorf("after every child exited, %d tasks are still live (by state: %v): something was not acked, or came back", n, counts)
	}
	c.checkDead()
	c.refresh()
	c.mu.Lock()
	v := c.hist.Verify(c.enqueued, c.faults...)
	v.AllowLoss(c.mayLose)
	c.verdict = &v
	c.mu.Unlock()
	if err := v.Err(); err != nil {
		c.t.Error(err)
		c.trace(append(some5(v.Lost), append(some5(v.Unknown), some5(v.Excess)...)...))
	}
}

func some5(ids []string) []string { return ids[:min(len(ids), 5)] }

// trace logs every ledger record about the tasks ids, with its time since
// the cell started, and which faults found them in flight.
func (c *cell) trace(ids []string) {
	if len(ids) == 0 {
		return
	}
	b, err := os.ReadFile(c.ledger)
	if err != nil {
		c.t.Log(err)
		return
	}
	want := make(map[string]bool)
	for _, id := range ids {
		want[escape(id)] = true
	}
	var out strings.Builder
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Split(line, " ")
		if len(f) < 4 {
			continue
		}
		hit := false
		for _, x := range f[3:] {
			hit = hit || want[x]
		}
		if !hit {
			continue
		}
		us, _ := strconv.ParseInt(f[2], 10, 64)
		at := time.UnixMicro(us).Sub(c.start).Round(time.Millisecond)
		if len(line) > 200 {
			line = line[:200] + "…"
		}
		fmt.Fprintf(&out, "  +%-9s %s\n", at, line)
	}
	c.mu.Lock()
	for i, set := range c.faults {
		for _, id := range ids {
			if slices.Contains(set, id) {
				fmt.Fprintf(&out, "  %s was in flight at fault %d\n", id, i)
			}
		}
	}
	c.mu.Unlock()
	c.t.Logf("ledger records of %v (C claim, D done, A ack, a failed ack, N nack; pid, time):\n%s", ids, out.String())
}

// checkDead checks that the dead tasks are exactly those that must be
// dead, each with a reason. A task may be dead twice (its stream holds two
// copies) only if it was in flight at a fault.
func (c *cell) checkDead() {
	c.t.Helper()
	c.mu.Lock()
	want := make(map[string]bool, len(c.dead))
	for _, id := range c.dead {
		want[id] = true
	}
	inFlight := make(map[string]int)
	for _, set := range c.faults {
		for _, id := range set {
			inFlight[id]++
		}
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := make(map[string]int)
	for after := ""; ; {
		infos, err := c.st.insp.List(ctx, peonify.ListOptions{State: peonify.StateDead, Limit: 1000, After: after})
		if err != nil {
			c.t.Errorf("listing dead tasks: %v", err)
			return
		}
		for _, info := range infos {
			id := info.Task.ID
			seen[id]++
			switch {
			case !want[id]:
				c.t.Errorf("task %s is dead (%s), but it should have completed", id, info.LastError)
			case info.LastError == "":
				c.t.Errorf("dead task %s has no reason", id)
			}
			after = id
		}
		if len(infos) < 1000 {
			break
		}
	}
	twice := 0
	for id := range want {
		switch n := seen[id]; {
		case n == 0:
			c.t.Errorf("task %s is not dead: %s", id, c.describe(id))
		case n > 1+inFlight[id]:
			c.t.Errorf("task %s is dead %d times, but was in flight at %d faults", id, n, inFlight[id])
		case n > 1:
			twice += n - 1
		}
	}
	if twice > 0 {
		c.note("%d tasks in flight at a crash were dead-lettered twice", twice)
	}
}
