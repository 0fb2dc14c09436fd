//go:build unix

package chaostest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/peonify/peonify/internal/streamtest"
)

// The network-fault scenarios put an in-process fault-injecting proxy
// (streamtest.Proxy) between some of a cell's processors and the server.

// proxy starts a proxy to the cell's server and returns it with the spec
// of the cell's queue through it. It skips the cell on the embedded
// store, which has no network.
func (c *cell) proxy() (*streamtest.Proxy, streamSpec) {
	c.t.Helper()
	if c.b.name == "sqlite" {
		c.skip("the embedded store has no network between a processor and its store")
	}
	u, err := url.Parse(c.spec.Addr)
	if err != nil {
		c.t.Fatal(err)
	}
	px := streamtest.NewProxy(c.t, u.Host)
	spec := c.spec
	u.Host = px.Addr()
	spec.Addr = u.String()
	return px, spec
}

// record is one line of the ledger.
type record struct {
	kind   byte
	pid    int
	at     time.Time
	fields []string
}

// records returns the ledger's records of kind by process pid (every
// process when 0) from from on.
func (c *cell) records(kind byte, pid int, from time.Time) []record {
	b, err := os.ReadFile(c.ledger)
	if err != nil {
		c.t.Fatal(err)
	}
	var out []record
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Split(line, " ")
		if len(f) < 3 || len(f[0]) != 1 || f[0][0] != kind {
			continue
		}
		p, err1 := strconv.Atoi(f[1])
		us, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || pid != 0 && p != pid || time.UnixMicro(us).Before(from) {
			continue
		}
		out = append(out, record{kind: kind, pid: p, at: time.UnixMicro(us), fields: f[3:]})
	}
	return out
}

// completedBy returns the IDs of the tasks process pid completed from
// from on.
func (c *cell) completedBy(pid int, from time.Time) []string {
	var ids []string
	for _, r := range c.records(kindDone, pid, from) {
		if len(r.fields) > 0 {
			ids = append(ids, unescape(r.fields[0]))
		}
	}
	return ids
}

// claimedBy returns the IDs of the tasks process pid claimed between from
// and to.
func (c *cell) claimedBy(pid int, from, to time.Time) []string {
	var ids []string
	for _, r := range c.records(kindClaim, pid, from) {
		if r.at.After(to) {
			continue
		}
		for i := 0; i < len(r.fields); i += 2 {
			ids = append(ids, unescape(r.fields[i]))
		}
	}
	return ids
}

// feedUntil enqueues a batch of short tasks every half second until
// process pid completes one of them, and reports how long that took, or
// false if it did not within within. The other processors take their
// share, so a single batch could be gone before pid polls again.
func (c *cell) feedUntil(prefix string, pid int, within time.Duration) (time.Duration, bool) {
	c.t.Helper()
	start := time.Now()
	next := start
	for i := 0; time.Since(start) < min(within, c.remaining()); {
		if time.Now().After(next) {
			c.enqueue(c.tasks(fmt.Sprintf("%s%02d", prefix, i), 20, work{Ms: 50})...)
			i++
			next = time.Now().Add(500 * time.Millisecond)
		}
		for _, id := range c.completedBy(pid, start) {
			if strings.HasPrefix(id, prefix) {
				return time.Since(start), true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start), false
}

// inFlight records ids as in flight at a fault.
func (c *cell) inFlight(ids ...[]string) {
	var all []string
	for _, s := range ids {
		all = append(all, s...)
	}
	slices.Sort(all)
	c.mu.Lock()
	c.faults = append(c.faults, slices.Compact(all))
	c.mu.Unlock()
}

// scenarioPartition cuts one of three processors off from the store (no
// byte either way, nothing closed) for longer than the lease while it
// holds tasks, then heals the link. The other two must take its tasks
// over, it must work again without a restart, and only what it held may
// run twice.
func scenarioPartition(c *cell) {
	px, spec := c.proxy()
	a, b := c.startChild(nil), c.startChild(nil)
	v := c.startChild(func(o *orders) { o.Spec = spec })
	c.waitUp(a, b, v)
	c.enqueue(c.tasks("part", 96, work{Ms: 800})...) // longer than a renewal: the cut-off one loses leases
	if !c.waitHolding(v, 2) {
		c.t.Fatal("the processor to cut off never held 2 tasks")
	}
	px.Partition()
	cut := time.Now()
	held := c.heldBy(v.pid)

	// The others take over what it held once the leases end (for AMQP,
	// once the broker gave up on its heartbeats).
	takeover := 4*c.spec.Lease + 10*time.Second
	var taken []string
	ok := waitFor(min(takeover, c.remaining()), func() bool {
		taken = taken[:0]
		done := append(c.completedBy(a.pid, cut), c.completedBy(b.pid, cut)...)
		for _, id := range held {
			if slices.Contains(done, id) {
				taken = append(taken, id)
			}
		}
		return len(taken) == len(held) && time.Since(cut) > c.spec.Lease+time.Second
	})
	if !ok {
		c.t.Fatalf("the other processors completed only %d of the %d tasks the cut-off one held within %s", len(taken), len(held), takeover)
	}
	px.Heal()
	healed := time.Now()
	c.note("cut off for %s holding %d tasks, all taken over", healed.Sub(cut).Round(100*time.Millisecond), len(held))

	// It works again by itself.
	back, ok := c.feedUntil("healed", v.pid, 30*time.Second)
	if !ok {
		c.t.Fatal("the cut-off processor completed no task within 30s of the heal")
	}
	// In flight at the partition: what it held, and what it claimed
	// around it (a poll the partition held may deliver claims the server
	// made before it healed).
	c.inFlight(held, c.claimedBy(v.pid, cut.Add(-time.Second), healed.Add(c.spec.Lease)))
	c.waitAll()
	c.waitQuiet()
	c.finish()
	r, _ := c.report(v)
	acked, refused := 0, 0
	c.mu.Lock()
	for _, id := range held {
		switch c.hist.settled[v.pid][id] {
		case kindAck:
			acked++
		case kindAckErr:
			refused++
		}
	}
	c.mu.Unlock()
	c.note("working again %s after the heal; it lost %d leases; of its stale acks %d returned an error, %d nil (the stop scenario checks they touch no newer claim)",
		back.Round(100*time.Millisecond), r.Stats.LeaseLost, refused, acked)
}

// netLatency and netJitter are the latency scenario's, each way.
const netLatency, netJitter = 50 * time.Millisecond, 20 * time.Millisecond

// scenarioLatency runs two processors whose every byte to and from the
// store takes 50ms (plus up to 20ms) each way, for the whole run: every
// task completes, none twice, and no lease is lost for tasks far shorter
// than the lease. With PEONIFY_CHAOS_LONG=1 it also measures throughput
// at 0 and 50ms for the default QueueSize and the README's advice.
func scenarioLatency(c *cell) {
	px, spec := c.proxy()
	px.SetFaults(streamtest.Faults{Latency: netLatency, Jitter: netJitter})
	a := c.startChild(func(o *orders) { o.Spec = spec })
	b := c.startChild(func(o *orders) { o.Spec = spec })
	c.waitUp(a, b)
	start := time.Now()
	c.enqueue(c.tasks("lat", 200, work{Ms: 20})...)
	c.waitAll()
	took := time.Since(start)
	c.waitQuiet()
	c.finish()
	var lost, ackErrs uint64
	for _, r := range c.reports() {
		lost += r.Stats.LeaseLost
		ackErrs += r.Stats.AckErrors
	}
	if lost > 0 || ackErrs > 0 {
		c.t.Errorf("at %s±%s each way, %d leases lost and %d acks failed for tasks of 20ms (lease %s)", netLatency, netJitter, lost, ackErrs, c.spec.Lease)
	}
	c.note("%s±%s each way: 200 tasks in %s, no lease lost", netLatency, netJitter, took.Round(100*time.Millisecond))
	if os.Getenv("PEONIFY_CHAOS_LONG") == "1" {
		c.throughput(px, spec)
	}
}

// throughput measures one processor (4 workers) on tasks that do nothing,
// at 0 and 50ms each way, with the default QueueSize and the README's
// advice for remote stores (10× Workers), and logs the figures.
func (c *cell) throughput(px *streamtest.Proxy, spec streamSpec) {
	const n = 200
	for _, lat := range []time.Duration{0, netLatency} {
		for _, qs := range []int{0, 40} {
			px.SetFaults(streamtest.Faults{Latency: lat, Jitter: lat / 5})
			ch := c.startChild(func(o *orders) { o.Spec, o.QueueSize = spec, qs })
			c.waitUp(ch)
			tasks := c.tasks(fmt.Sprintf("tp-%d-%d", lat.Milliseconds(), qs), n, work{})
			start := time.Now()
			c.enqueue(tasks...)
			c.waitCompleted(ids(tasks), n)
			took := time.Since(start)
			c.terminate(ch, exitOK)
			name := "default (= Workers)"
			if qs > 0 {
				name = strconv.Itoa(qs) + " (10× Workers)"
			}
			c.t.Logf("throughput %s, %s each way, QueueSize %s: %.0f tasks/s", c.b.name, lat, name, n/took.Seconds())
			c.note("%s/QS %d: %.0f/s", lat, qs, n/took.Seconds())
		}
	}
	px.SetFaults(streamtest.Faults{})
}

// knownCloseSlack is, by backend, how much longer than the drain deadline
// closing the store's client may take after Run returned, on connections
// that went silent, and why: a bound of the client library, not of the
// stream, that a program's shutdown must allow for (or not wait for).
var knownCloseSlack = map[string]struct {
	slack time.Duration
	why   string
}{
	"postgres": {16 * time.Second, "pgxpool.Close waits up to 15s per half-open connection (pgx pgconn.asyncClose drains it until a 15s deadline)"},
}

// scenarioHalfOpen turns one processor's connections into holes (open,
// silent, no reset) while it holds tasks; new connections work again
// after a moment. It must notice within its StoreTimeout, reconnect and
// work again; then, its connections dead again, it must exit within its
// drain deadline on SIGTERM. Only what it held may run twice.
func scenarioHalfOpen(c *cell) {
	const storeTimeout = time.Second
	px, spec := c.proxy()
	a := c.startChild(nil)
	// Its whole shutdown is bounded by the drain deadline the test
	// enforces: the processor's default ShutdownTimeout is 28s.
	v := c.startChild(func(o *orders) {
		o.Spec, o.StoreTimeout, o.Shutdown = spec, storeTimeout, drainDeadline(o.Grace)-2*time.Second
	})
	c.waitUp(a, v)
	c.enqueue(c.tasks("half", 80, work{Ms: 100})...)
	if !c.waitHolding(v, 2) {
		c.t.Fatal("the processor whose connections die never held 2 tasks")
	}
	px.Blackhole()
	dead := time.Now()
	held := c.heldBy(v.pid)
	time.Sleep(2 * storeTimeout)
	px.Restore()
	restored := time.Now()
	within := 2*storeTimeout + 20*time.Second
	back, ok := c.feedUntil("half2-", v.pid, within)
	if !ok {
		c.t.Fatalf("the processor completed no task within %s of new connections working again", within)
	}
	c.inFlight(held, c.claimedBy(v.pid, dead.Add(-time.Second), restored.Add(time.Second)))

	// SIGTERM while its connections are dead.
	c.enqueue(c.tasks("half3", 60, work{Ms: 300})...)
	if !c.waitHolding(v, 2) {
		c.note("it held fewer than 2 tasks at the second blackhole")
	}
	// Its open connections go silent; new ones work, as behind a NAT
	// that forgot the old ones. (With new ones silent too, pgx's
	// pgxpool.Close waits up to 15s for the cancel request it sends for
	// each broken connection: a bound of the client, not of the stream.)
	px.Blackhole()
	px.Restore()
	c.fault(v.pid)
	if why, ok := knownCloseSlack[c.b.name]; ok {
		v.slack = why.slack
		c.note("known: %s", why.why)
	}
	drained := c.terminate(v, exitOK)
	if r, ok := c.report(v); ok {
		if limit := drainDeadline(v.o.Grace); r.Drain > limit {
			c.t.Errorf("Run returned %s after SIGTERM on dead connections, beyond the drain deadline of %s", r.Drain, limit)
		}
		c.note("Run returned %s after SIGTERM, the client closed in %s", r.Drain.Round(100*time.Millisecond), r.Close.Round(100*time.Millisecond))
	}
	c.waitAll()
	c.waitQuiet()
	c.finish()
	c.note("working again %s after new connections did; SIGTERM on dead connections drained in %s",
		back.Round(100*time.Millisecond), drained.Round(100*time.Millisecond))
}

// scenarioReset runs a producer (in the test) and a processor through a
// proxy that limits each connection to 256 KiB/s and resets one
// connection mid-reply every 150ms, so that enqueues, polls and acks see
// cut replies and resets. An Enqueue that returned an error is tried
// again (it may have stored the tasks); one that returned nil must never
// be lost.
func scenarioReset(c *cell) {
	px, spec := c.proxy()
	px.SetFaults(streamtest.Faults{Bandwidth: 256 << 10})
	logger := slog.New(slog.NewTextHandler(c.t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	prod, err := openStream(context.Background(), spec, "producer-"+randHex(2), logger)
	if err != nil {
		c.t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = prod.s.Close(ctx)
		prod.done()
	}()
	a := c.startChild(nil)
	// Its shutdown is bounded by the drain deadline the test enforces,
	// not by the processor's default ShutdownTimeout of 28s.
	v := c.startChild(func(o *orders) { o.Spec, o.Shutdown = spec, drainDeadline(o.Grace)-2*time.Second })
	c.waitUp(a, v)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var resets int
	wg.Go(func() {
		for ctx.Err() == nil {
			// One armed reset at a time. Armed every 150ms whatever the
			// traffic, resets piled up while the connections were idle
			// or reconnecting, then cut every reconnection's handshake:
			// a producer once could not connect for 10 minutes.
			if px.Resets() == 0 {
				px.ResetMidReply(1)
				resets++
			}
			c.fault(v.pid) // what it holds may see its ack cut
			select {
			case <-ctx.Done():
			case <-time.After(150 * time.Millisecond):
			}
		}
	})
	const batches, batch = 30, 10
	failures := 0
	for i := range batches {
		tasks := c.tasks(fmt.Sprintf("reset%02d", i), batch, work{Ms: 10})
		for try := 0; ; try++ {
			err := c.tryEnqueueWith(prod.enq, false, tasks...)
			if err == nil {
				break
			}
			// Each failed try may have stored the tasks, and a broker that
			// cannot refuse a duplicate ID then holds one more copy.
			c.inFlight(ids(tasks))
			failures++
			if try == 20 {
				c.t.Fatalf("Enqueue through the proxy failed 20 times in a row: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	c.waitAll()
	cancel()
	wg.Wait()
	// The faults end with the load: a reset left armed would cut a
	// connection during the drain at the end (CI once saw a drain take
	// 9.8s, past the deadline, on a connection reconnecting).
	left := px.Disarm()
	px.SetFaults(streamtest.Faults{})
	c.waitQuiet()
	// A reset that cut an ack: the task runs again, as the processor
	// says when the ack fails. (What it held when each reset was armed is
	// recorded already; a claim after the arming may meet the reset too.)
	// Each failed ack is a fault of its own: where a retried Enqueue
	// stored a task twice, both copies can meet cut acks, and each cut
	// ack is one more run (a task stored twice was seen to run five times,
	// with three failed acks).
	for _, r := range c.records(kindAckErr, v.pid, time.Time{}) {
		var cut []string
		for _, f := range r.fields {
			cut = append(cut, unescape(f))
		}
		c.inFlight(cut)
	}
	c.finish()
	c.note("%d resets mid-reply at 256 KiB/s; %d enqueues failed and were tried again", resets-left, failures)
}

// fullDiskSize is the size of the full-disk scenario's tmpfs.
const fullDiskSize = 8 << 20

// mountTmpfs mounts a tmpfs of size bytes in the cell's directory and
// returns its path; it is unmounted when the test ends. It skips the cell
// when the mount fails (it needs root, or CAP_SYS_ADMIN).
func (c *cell) mountTmpfs(size int64) string {
	c.t.Helper()
	dir := filepath.Join(c.dir, "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)); err != nil {
		c.skip(fmt.Sprintf("mounting a tmpfs of %d bytes failed (it needs root or CAP_SYS_ADMIN): %v", size, err))
	}
	c.t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			c.t.Errorf("unmounting the tmpfs: %v", err)
		}
	})
	return dir
}

// fill writes zeros to path until the file system is full.
func fill(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, err := f.Write(buf)
		n += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			if len(buf) == 1 {
				return n, nil
			}
			buf = buf[:len(buf)/2]
			continue
		}
		if err != nil {
			return n, err
		}
	}
}

// integrity runs PRAGMA integrity_check on the SQLite file at path.
func integrity(path string) (string, error) {
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return "", err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var res string
	err = db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&res)
	return res, err
}

// scenarioFullDisk fills the file system under the embedded store while a
// processor runs tasks: Enqueue must fail with an error that says the disk
// is full, the running tasks must complete or come back, the file must
// pass PRAGMA integrity_check, and once space is freed processing resumes
// and every task whose Enqueue returned nil completes.
func scenarioFullDisk(c *cell) {
	v := c.startChild(nil)
	c.waitUp(v)
	c.enqueue(c.tasks("disk", 100, work{Ms: 100})...)
	if !c.waitHolding(v, 2) {
		c.t.Fatal("the processor never held 2 tasks")
	}
	filler := filepath.Join(filepath.Dir(c.spec.Addr), "filler")
	if _, err := fill(filler); err != nil {
		c.t.Fatal(err)
	}
	full := time.Now()
	c.fault(v.pid)
	// SQLite may still have free pages: enqueue until it is out of them.
	var enqErr error
	for i := 0; i < 200 && enqErr == nil; i++ {
		enqErr = c.tryEnqueue(false, c.tasks(fmt.Sprintf("full%03d", i), 1, work{Pad: strings.Repeat("x", 16<<10)})...)
	}
	if enqErr == nil {
		c.t.Fatal("200 enqueues of 16 KiB succeeded on a full disk")
	}
	if msg := strings.ToLower(enqErr.Error()); !strings.Contains(msg, "full") && !strings.Contains(msg, "space") {
		c.t.Errorf("Enqueue on a full disk = %v; want an error that says the disk is full", enqErr)
	}
	time.Sleep(2 * c.spec.Lease) // the processor works on a full disk for a while
	if res, err := integrity(c.spec.Addr); err != nil || res != "ok" {
		c.t.Errorf("PRAGMA integrity_check on the full disk = %q, %v", res, err)
	}
	c.fault(v.pid)
	if err := os.Remove(filler); err != nil {
		c.t.Fatal(err)
	}
	freed := time.Now()
	c.enqueue(c.tasks("freed", 50, work{Ms: 10})...)
	c.waitAll()
	c.inFlight(c.claimedBy(v.pid, full, freed.Add(time.Second)))
	c.waitQuiet()
	c.finish()
	if res, err := integrity(c.spec.Addr); err != nil || res != "ok" {
		c.t.Errorf("PRAGMA integrity_check after the run = %q, %v", res, err)
	}
	c.note("disk full for %s; Enqueue: %v", freed.Sub(full).Round(100*time.Millisecond), enqErr)
}
