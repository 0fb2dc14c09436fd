//go:build unix

package limittest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/chaostest"
	"github.com/peonify/peonify/internal/streamtest"
)

// A PerKey Concurrency 3 limit holds key K to exactly 3 runs at once
// across 4 processes, while 20 other keys run beside it; a Type limit of 3
// holds its type to exactly 3.
func TestConcurrency(t *testing.T) {
	forEachBackend(t, false, func(t *testing.T, b backend) {
		sc := newScenario(t, b, 0,
			peonify.Limit{Name: "per-key", Type: "keyed", PerKey: true, Concurrency: 3},
			peonify.Limit{Name: "capped", Type: "capped", Concurrency: 3})
		var tasks []*peonify.Task
		for i := range 60 {
			tasks = append(tasks, task(fmt.Sprintf("K-%03d", i), "keyed", "K", work{Ms: 60}))
		}
		for k := range 20 {
			for i := range 6 {
				tasks = append(tasks, task(fmt.Sprintf("other-%02d-%d", k, i), "keyed", fmt.Sprintf("k%02d", k), work{Ms: 60}))
			}
		}
		for i := range 40 {
			tasks = append(tasks, task(fmt.Sprintf("cap-%03d", i), "capped", "", work{Ms: 60}))
		}
		sc.start(4, []string{"keyed", "capped"}, nil)
		began := time.Now()
		sc.enqueue(tasks...)
		sc.waitCompleted(ids(tasks), 60*time.Second)
		took := time.Since(began)
		sc.verify()

		k := sc.runs(idPrefix("K-"))
		most, at := maxOverlap(spans(k, time.Time{}))
		pids := map[int]bool{}
		for _, r := range k {
			pids[r.Pid] = true
		}
		switch {
		case most > 3:
			t.Errorf("key K ran %d tasks at once at %s, over its limit of 3", most, at.Format("15:04:05.000000"))
		case most < 3:
			t.Errorf("key K ran at most %d tasks at once with 60 waiting: its limit of 3 was never reached", most)
		}
		for key := range 20 {
			if n, at := maxOverlap(spans(sc.runs(idPrefix(fmt.Sprintf("other-%02d-", key))), time.Time{})); n > 3 {
				t.Errorf("key k%02d ran %d tasks at once at %s, over its limit of 3", key, n, at.Format("15:04:05.000000"))
			}
		}
		capped, at := maxOverlap(spans(sc.runs(idPrefix("cap-")), time.Time{}))
		if capped != 3 {
			t.Errorf("type capped ran at most %d tasks at once (at %s), want exactly its limit of 3", capped, at.Format("15:04:05.000000"))
		}
		all, _ := maxOverlap(spans(sc.runs(func(r chaostest.Run) bool { return !strings.HasPrefix(r.ID, "cap-") }), time.Time{}))
		if all <= 3 {
			t.Errorf("keyed tasks ran at most %d at once: the other keys did not run beside K", all)
		}
		t.Logf("%d tasks in %s; most at once: key K %d (its runs in %d processes), type capped %d, keyed tasks %d",
			len(tasks), took.Round(time.Millisecond), most, len(pids), capped, all)
	})
}

// A Rate 20 per second, Burst 5 limit over 200 tasks and 4 processes: no
// one-second window holds more than 25 starts, and the whole takes at
// least 8.5s.
func TestRate(t *testing.T) {
	forEachBackend(t, true, func(t *testing.T, b backend) {
		sc := newScenario(t, b, 0, peonify.Limit{Name: "rate", Type: "rated", Rate: 20, Burst: 5})
		var tasks []*peonify.Task
		for i := range 200 {
			tasks = append(tasks, task(fmt.Sprintf("r-%03d", i), "rated", "", work{}))
		}
		sc.start(4, []string{"rated"}, func(o *orders) { o.Workers = 4 })
		sc.enqueue(tasks...)
		sc.waitCompleted(ids(tasks), 40*time.Second)
		sc.verify()

		runs := sc.runs(idPrefix("r-"))
		starts := make([]time.Time, len(runs))
		for i, r := range runs {
			starts[i] = r.Start
		}
		// The store grants at most Rate 20 + Burst 5 in any second, but a
		// start is recorded by the handler, after the grant: on a loaded
		// machine a process that stalls for a moment records several late
		// starts at once, which can move up to jitterStarts of them into
		// another second. A store that overshoots for longer shows in the
		// whole run's duration below.
		const jitterStarts = 5 // 250ms of grants at Rate 20
		most, from := busiestWindow(starts, time.Second)
		if most > 25+jitterStarts {
			t.Errorf("%d tasks started in the second from %s: over Rate 20 + Burst 5 (+ %d for late records)", most, from.Format("15:04:05.000000"), jitterStarts)
		}
		if len(starts) == 0 {
			t.Fatal("no run recorded")
		}
		whole := starts[len(starts)-1].Sub(starts[0])
		if whole < 8500*time.Millisecond {
			t.Errorf("the 200 tasks started within %s, less than the 8.5s that Rate 20, Burst 5 allows", whole.Round(time.Millisecond))
		}
		// 5 at once, then 195 at 20 a second: 9.75s. Much longer means
		// tokens went unused while tasks waited.
		if whole > 13*time.Second {
			t.Errorf("the 200 tasks took %s to start, where Rate 20, Burst 5 allows 9.75s: tokens went unused", whole.Round(time.Millisecond))
		}
		t.Logf("200 starts over %s; the busiest second held %d", whole.Round(time.Millisecond), most)
	})
}

// 2,000 tasks over 50 Ordered keys, one in ten failing its first attempt,
// over 4 processes: per key, runs start in enqueue order, a retry before
// the next task, and never overlap.
func TestOrdered(t *testing.T) {
	forEachBackend(t, false, func(t *testing.T, b backend) {
		sc := newScenario(t, b, 0, peonify.Limit{Name: "ordered", Type: "seq", PerKey: true, Ordered: true})
		const keys, n = 50, 2000
		tasks := make([]*peonify.Task, n)
		for i := range tasks {
			key, pos := i%keys, i/keys
			tasks[i] = task(fmt.Sprintf("o%02d-%03d", key, pos), "seq", fmt.Sprintf("o%02d", key), work{Ms: 2, FailOnce: i%10 == 3})
		}
		sc.start(4, []string{"seq"}, nil)
		began := time.Now()
		sc.enqueue(tasks...)
		sc.waitCompleted(ids(tasks), 120*time.Second)
		took := time.Since(began)
		sc.verify()

		failed := 0
		for key := range keys {
			runs := sc.runs(idPrefix(fmt.Sprintf("o%02d-", key)))
			for i, r := range runs {
				if r.Failed {
					failed++
				}
				if i == 0 {
					continue
				}
				prev := runs[i-1]
				p, q := position(prev.ID), position(r.ID)
				switch {
				case q < p:
					t.Errorf("key o%02d: %s (attempt %d) started at %s, after %s (attempt %d): out of enqueue order",
						key, r.ID, r.Attempt, r.Start.Format("15:04:05.000000"), prev.ID, prev.Attempt)
				case prev.Failed && q != p:
					t.Errorf("key o%02d: %s started after %s failed, before its retry: the retry lost its place", key, r.ID, prev.ID)
				case r.Start.Before(prev.End):
					t.Errorf("key o%02d: %s started at %s, before %s (started %s) returned at %s",
						key, r.ID, r.Start.Format("15:04:05.000000"), prev.ID, prev.Start.Format("15:04:05.000000"), prev.End.Format("15:04:05.000000"))
				}
			}
		}
		if failed < n/10 {
			t.Errorf("%d runs failed, want at least the %d tasks that fail once", failed, n/10)
		}
		t.Logf("%d tasks over %d keys in %s, %d failed runs retried in place", n, keys, took.Round(time.Millisecond), failed)
	})
}

// position returns the position of a task in its key's order, from its ID.
func position(id string) int {
	_, pos, _ := strings.Cut(id, "-")
	n, _ := strconv.Atoi(pos)
	return n
}

// Key A gets 20,000 tasks, then key B 20, before 4 processes start
// together under a Fair limit: all of B's tasks finish before a tenth of
// A's have started. Then, while A's run, key C gets 20: all of C's finish
// before another tenth of A's have started.
func TestFair(t *testing.T) {
	forEachBackend(t, false, func(t *testing.T, b backend) {
		sc := newScenario(t, b, 0, peonify.Limit{Name: "fair", Type: "fair", PerKey: true, Fair: true})
		const nA, nB = 20000, 20
		gate := filepath.Join(t.TempDir(), "gate")
		sc.start(4, []string{"fair"}, func(o *orders) { o.Workers, o.QueueSize, o.Gate = 4, 4, gate })
		stored := time.Now()
		if b.bulk != nil {
			b.bulk(t, sc.spec, nA, "fair", "A", "A-")
		} else {
			a := make([]*peonify.Task, nA)
			for i := range a {
				a[i] = task(fmt.Sprintf("A-%05d", i), "fair", "A", work{})
			}
			sc.store(a...)
		}
		storedIn := time.Since(stored)
		keyTasks := func(key string) []*peonify.Task {
			out := make([]*peonify.Task, nB)
			for i := range out {
				out[i] = task(fmt.Sprintf("%s-%02d", key, i), "fair", key, work{})
			}
			return out
		}
		bt := keyTasks("B")
		sc.enqueue(bt...)
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		sc.waitCompleted(ids(bt), 60*time.Second)
		bDone := sc.lastEnd("B-")
		bBehind := sc.startedBetween("A-", time.Time{}, bDone)
		if bBehind >= nA/10 {
			t.Errorf("%d of A's %d tasks had started when B's last finished: B waited behind A", bBehind, nA)
		}

		streamtest.WaitUntil(t, "another 200 of A's tasks to start", 60*time.Second, func() (bool, string) {
			sc.refresh()
			n := sc.startedBetween("A-", time.Time{}, time.Now())
			return n >= bBehind+200, fmt.Sprintf("%d of A's tasks started, in %d polls of 4 processes: claims are slow", n, len(sc.hist.Marks(pollMark)))
		})
		ct := keyTasks("C")
		enqueuingC := time.Now()
		sc.enqueue(ct...)
		// From when Enqueue returned: on SQLite it may first wait a while
		// for the write lock that the claims hold in turn.
		enqueuedC := time.Now()
		sc.waitCompleted(ids(ct), 60*time.Second)
		sc.stopAll()
		sc.refresh()
		cDone := sc.lastEnd("C-")
		cBehind := sc.startedBetween("A-", enqueuedC, cDone)
		if cBehind >= nA/10 {
			t.Errorf("%d of A's tasks started between C's enqueue and C's last finish: C waited behind A", cBehind)
		}
		for _, id := range append(ids(bt), ids(ct)...) {
			if n := sc.hist.Completions(id); n != 1 {
				t.Errorf("task %s completed %d times, want once", id, n)
			}
		}
		t.Logf("A's %d tasks stored in %s; B's %d finished %s after the processes started, when %d of A's had started; "+
			"C's %d were enqueued in %s and finished %s later, while %d more of A's started (limit %d)",
			nA, storedIn.Round(time.Millisecond), nB, bDone.Sub(sc.firstStart()).Round(time.Millisecond), bBehind,
			nB, enqueuedC.Sub(enqueuingC).Round(time.Millisecond), cDone.Sub(enqueuedC).Round(time.Millisecond), cBehind, nA/10)
	})
}

// lastEnd returns when the last run of a task whose ID starts with prefix
// returned.
func (sc *scenario) lastEnd(prefix string) time.Time {
	sc.refresh()
	var last time.Time
	for _, r := range sc.runs(idPrefix(prefix)) {
		if r.End.After(last) {
			last = r.End
		}
	}
	return last
}

// startedBetween counts the runs of tasks whose ID starts with prefix
// that began in [from, to).
func (sc *scenario) startedBetween(prefix string, from, to time.Time) int {
	n := 0
	for _, r := range sc.hist.Runs() {
		if strings.HasPrefix(r.ID, prefix) && !r.Start.Before(from) && r.Start.Before(to) {
			n++
		}
	}
	return n
}

// firstStart returns when the first recorded run began.
func (sc *scenario) firstStart() time.Time {
	var first time.Time
	for _, r := range sc.hist.Runs() {
		if first.IsZero() || r.Start.Before(first) {
			first = r.Start
		}
	}
	return first
}

// A process SIGKILLed while it holds all 3 permits of a key: its tasks
// count against the limit until their leases end, so the others never run
// more than the permits left, and they run 3 at once again soon after the
// leases end.
func TestKill(t *testing.T) {
	const lease = 2 * time.Second
	forEachBackend(t, false, func(t *testing.T, b backend) {
		sc := newScenario(t, b, lease, peonify.Limit{Name: "hold", Type: "hold", PerKey: true, Concurrency: 3})
		tasks := make([]*peonify.Task, 18)
		for i := range tasks {
			tasks[i] = task(fmt.Sprintf("K-%02d", i), "hold", "K", work{Ms: 1000})
		}
		fast := func(o *orders) { o.Workers, o.PollInterval = 4, 200*time.Millisecond }
		// The others start first and wait at a gate: on a loaded machine
		// starting them takes seconds, in which the first process alone
		// could run most of the 18 and leave too few for the others to
		// run 3 at once after the kill.
		gate := filepath.Join(t.TempDir(), "gate")
		sc.start(3, []string{"hold"}, func(o *orders) { fast(o); o.Gate = gate })
		victim := sc.start(1, []string{"hold"}, fast)[0]
		sc.enqueue(tasks...)
		streamtest.WaitUntil(t, "the first process to run 3 tasks", 30*time.Second, func() (bool, string) {
			sc.refresh()
			n := len(sc.runs(func(r chaostest.Run) bool { return r.Pid == victim.pid && !r.Ended() }))
			return n >= 3, fmt.Sprintf("it runs %d", n)
		})
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		// Kill it while its ledger shows it holding tasks (a loaded CI
		// machine once killed it at a moment it held none).
		streamtest.WaitUntil(t, "the first process to hold a task", 30*time.Second, func() (bool, string) {
			sc.refresh()
			n := len(sc.hist.Held(victim.pid))
			return n > 0, fmt.Sprintf("it holds %d", n)
		})
		killedAt := time.Now()
		held := sc.kill(victim)
		if len(held) == 0 {
			t.Fatal("the killed process held no task")
		}
		leaseEnds := sc.leaseEnds(held, killedAt.Add(lease))
		sc.waitCompleted(ids(tasks), 60*time.Second)
		sc.verify(held)

		// The killed process's tasks held their permits from when it began
		// them (or the kill, for those it had not begun) until their leases
		// ended.
		var all []span
		var lastLease time.Time
		for _, r := range sc.runs(func(chaostest.Run) bool { return true }) {
			if r.Ended() {
				all = append(all, span{start: r.Start, end: r.End, id: r.ID})
			}
		}
		for _, id := range held {
			start := killedAt
			for _, r := range sc.runs(func(r chaostest.Run) bool { return r.Pid == victim.pid && r.ID == id && !r.Ended() }) {
				start = r.Start
			}
			end := leaseEnds[id]
			if end.After(lastLease) {
				lastLease = end
			}
			// A hair before the lease ends, for the clocks of the store
			// and of the processes, which may differ by that.
			all = append(all, span{start: start, end: end.Add(-10 * time.Millisecond), id: id})
		}
		if most, at := maxOverlap(all); most > 3 {
			t.Errorf("%d tasks of key K held permits at %s (the kill was at %s, the last lease ended at %s): over its limit of 3",
				most, at.Format("15:04:05.000000"), killedAt.Format("15:04:05.000000"), lastLease.Format("15:04:05.000000"))
		}
		var survivors []span
		for _, r := range sc.runs(func(r chaostest.Run) bool { return r.Pid != victim.pid && r.Ended() }) {
			survivors = append(survivors, span{start: r.Start, end: r.End, id: r.ID})
		}
		back, ok := reached(survivors, 3, killedAt)
		// The lease, then a rescue (every quarter lease) and a poll.
		switch allowed := lastLease.Add(lease/4 + 2*time.Second); {
		case !ok:
			t.Errorf("after the kill the other processes never ran 3 tasks of K at once (killed holding %d tasks; %d runs by the others)",
				len(held), len(survivors))
		case back.After(allowed):
			t.Errorf("the other processes ran 3 tasks of K at once only %s after the last lease ended, want within %s",
				back.Sub(lastLease).Round(time.Millisecond), allowed.Sub(lastLease))
		default:
			t.Logf("killed holding %d tasks; their leases ended %s after the kill; the others ran 3 at once %s after that",
				len(held), lastLease.Sub(killedAt).Round(time.Millisecond), back.Sub(lastLease).Round(time.Millisecond))
		}
	})
}

// leaseEnds returns when the lease of each of the tasks ids ends, as the
// store says; orElse for a task it does not list as running.
func (sc *scenario) leaseEnds(ids []string, orElse time.Time) map[string]time.Time {
	sc.t.Helper()
	ends := make(map[string]time.Time, len(ids))
	for _, id := range ids {
		ends[id] = orElse
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	infos, err := sc.st.s.List(ctx, peonify.ListOptions{State: peonify.StateRunning, Limit: 1000})
	if err != nil {
		sc.t.Logf("listing the running tasks for their leases (taking the kill plus the lease instead): %v", err)
		return ends
	}
	for _, info := range infos {
		if _, ok := ends[info.Task.ID]; ok && !info.LeaseUntil.IsZero() {
			ends[info.Task.ID] = info.LeaseUntil
		}
	}
	return ends
}

// A process whose every task is held back, by a key held with
// KeyConcurrency 0 and by a rate whose next token is an hour away, uses
// next to no CPU and polls a few times a second at most.
func TestIdle(t *testing.T) {
	const window = 4 * time.Second
	forEachBackend(t, true, func(t *testing.T, b backend) {
		sc := newScenario(t, b, 0,
			peonify.Limit{Name: "held", Type: "idle", PerKey: true, Concurrency: 1, KeyConcurrency: map[string]int{"held": 0}},
			peonify.Limit{Name: "slow", Type: "slow", Rate: 1, Period: time.Hour, Burst: 1})
		var tasks []*peonify.Task
		for i := range 20 {
			tasks = append(tasks, task(fmt.Sprintf("held-%02d", i), "idle", "held", work{}))
		}
		for i := range 5 {
			tasks = append(tasks, task(fmt.Sprintf("slow-%d", i), "slow", "", work{}))
		}
		c := sc.start(1, []string{"idle", "slow"}, nil)[0]
		sc.store(tasks...)
		streamtest.WaitUntil(t, "the one token of the slow rate to be used", 30*time.Second, func() (bool, string) {
			sc.refresh()
			return len(sc.runs(idPrefix("slow-"))) > 0, "no slow task ran"
		})
		time.Sleep(2 * time.Second) // idle polls back off to the poll interval
		cpu0, cpuOK := processCPU(c.pid)
		from := time.Now()
		time.Sleep(window)
		cpu1, _ := processCPU(c.pid)
		to := time.Now()
		sc.refresh()
		polls := 0
		for _, m := range sc.hist.Marks(pollMark) {
			if m.Pid == c.pid && !m.At.Before(from) && m.At.Before(to) {
				polls++
			}
		}
		elapsed := to.Sub(from)
		perSecond := float64(polls) / elapsed.Seconds()
		if perSecond > 3 {
			t.Errorf("the waiting process polled %d times in %s (%.1f a second): it should rest until a permit frees or its poll interval",
				polls, elapsed.Round(time.Millisecond), perSecond)
		}
		cpu := cpu1 - cpu0
		share := cpu.Seconds() / elapsed.Seconds()
		switch {
		case !cpuOK:
			t.Logf("cannot read the CPU time of another process here: not checked")
		case share > 0.05:
			t.Errorf("the waiting process used %s of CPU in %s (%.1f%%): waiting must cost next to nothing",
				cpu, elapsed.Round(time.Millisecond), 100*share)
		}
		if n := len(sc.runs(idPrefix("held-"))); n > 0 {
			t.Errorf("%d tasks of the held key ran", n)
		}
		if n := len(sc.runs(idPrefix("slow-"))); n != 1 {
			t.Errorf("%d tasks of the slow rate ran, want the 1 its bucket held", n)
		}
		sc.stopAll()
		t.Logf("waiting %s: %d polls (%.1f a second), %s of CPU (%.1f%%)", elapsed.Round(time.Millisecond), polls, perSecond, cpu, 100*share)
	})
}
