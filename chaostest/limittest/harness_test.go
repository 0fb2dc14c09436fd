//go:build unix

package limittest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/chaostest"
	"github.com/peonify/peonify/internal/streamtest"
)

// scenario is one scenario on one backend: its queue, its ledger and its
// processor processes.
type scenario struct {
	t        *testing.T
	b        backend
	spec     streamSpec
	st       *opened // the test's own handle on the queue: Enqueue and Inspector
	ledger   string
	hist     *chaostest.History
	limits   []peonify.Limit
	children []*child
	enqueued []string // tasks that must complete
	seq      int
}

// child is one processor process.
type child struct {
	*streamtest.Child
	name   string
	pid    int
	killed bool
}

// newScenario prepares a fresh queue on b, with lease as its streams'
// lease (0 for the default), for processes that all enforce limits.
func newScenario(t *testing.T, b backend, lease time.Duration, limits ...peonify.Limit) *scenario {
	t.Helper()
	sc := &scenario{t: t, b: b, limits: limits, ledger: filepath.Join(t.TempDir(), "ledger")}
	sc.spec = b.prepare(t, lease)
	st, err := openStream(context.Background(), sc.spec, "test", streamtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	sc.st = st
	t.Cleanup(func() {
		// The children are gone by now: each Child's own cleanup, which
		// runs first, kills one still running. Scenarios stop them with
		// stopAll.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := st.s.Close(ctx); err != nil {
			t.Errorf("closing the test's stream: %v", err)
		}
		st.done()
	})
	if _, ok := peonify.As[peonify.Limiter](st.s); !ok {
		t.Fatalf("the %s stream is not a peonify.Limiter: it cannot enforce limits, and this suite tests the stores that must", b.name)
	}
	if h, err := chaostest.ReadLedger(sc.ledger); err != nil {
		t.Fatal(err)
	} else {
		sc.hist = h
	}
	return sc
}

// start starts n processor processes with the scenario's limits, each
// handling the task types types, one after the other; change adjusts
// their orders. It returns once each has written that it is about to run.
func (sc *scenario) start(n int, types []string, change func(*orders)) []*child {
	sc.t.Helper()
	var out []*child
	for range n {
		sc.seq++
		o := orders{
			Spec: sc.spec, Ledger: sc.ledger, Name: fmt.Sprintf("%s-%d-%s", sc.b.name, sc.seq, streamtest.RandHex(2)),
			Types: types, Limits: sc.limits, Workers: 8, MaxAttempts: 5,
		}
		if change != nil {
			change(&o)
		}
		c := &child{Child: streamtest.StartMain(sc.t, "", childEnv, o), name: o.Name}
		c.pid = c.Pid()
		sc.children = append(sc.children, c)
		out = append(out, c)
		// One at a time: the scenarios are about claims, not about
		// processes opening a store at once.
		streamtest.WaitUntil(sc.t, "child "+c.name+" to start", 30*time.Second, func() (bool, string) {
			if c.Exited() {
				sc.t.Fatalf("child %s exited (%v) before it started: %s", c.name, c.Err(), c.Output())
			}
			sc.refresh()
			for _, m := range sc.hist.Marks(upMark) {
				if m.Pid == c.pid {
					return true, ""
				}
			}
			return false, "it has not written that it is up"
		})
	}
	return out
}

// kill ends c with SIGKILL and returns the tasks it held: claimed, and
// neither acked nor nacked.
func (sc *scenario) kill(c *child) []string {
	sc.t.Helper()
	c.killed = true
	c.Kill(sc.t)
	sc.refresh()
	return sc.hist.Held(c.pid)
}

// stopAll ends every child still running with SIGTERM and checks that
// each exits cleanly and in time.
func (sc *scenario) stopAll() {
	sc.t.Helper()
	for _, c := range sc.children {
		if !c.Exited() {
			_ = c.Signal(syscall.SIGTERM)
		}
	}
	for _, c := range sc.children {
		if c.killed {
			continue
		}
		select {
		case <-c.Done():
		case <-time.After(30 * time.Second):
			_ = c.Signal(syscall.SIGKILL)
			<-c.Done()
			sc.t.Errorf("child %s did not exit within 30s of SIGTERM; killed it", c.name)
			continue
		}
		if err := c.Err(); err != nil {
			var ee *exec.ExitError
			code := -1
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			sc.t.Errorf("child %s exited with %v (code %d), want 0; its output:\n%s", c.name, err, code, c.Output())
		}
	}
}

// refresh reads what the children recorded since the last look.
func (sc *scenario) refresh() {
	sc.t.Helper()
	if err := sc.hist.Refresh(); err != nil {
		sc.t.Fatal(err)
	}
}

// task returns a task of typ with key and work w, named id.
func task(id, typ, key string, w work) *peonify.Task {
	b, _ := json.Marshal(w)
	return &peonify.Task{ID: id, Type: typ, Key: key, Payload: b}
}

// enqueue stores tasks, in batches of 1,000 and in order, and counts them
// as tasks that must complete.
func (sc *scenario) enqueue(tasks ...*peonify.Task) {
	sc.t.Helper()
	sc.store(tasks...)
	sc.enqueued = append(sc.enqueued, ids(tasks)...)
}

// store stores tasks, in batches of 1,000 and in order, that the scenario
// does not wait for. A batch that fails is stored again, as the Enqueuer
// contract allows (the tasks keep the IDs the first try gave them, and
// those stored already come back as duplicates): on a SQLite file that
// four processes claim from in turn, a write can wait past its busy
// timeout.
func (sc *scenario) store(tasks ...*peonify.Task) {
	sc.t.Helper()
	for len(tasks) > 0 {
		n := min(len(tasks), 1000)
		for try := 1; ; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := sc.st.s.Enqueue(ctx, tasks[:n]...)
			cancel()
			if err == nil || errors.Is(err, peonify.ErrDuplicate) {
				break
			}
			if try == 5 {
				sc.t.Fatalf("enqueue: %v (%d tries)", err, try)
			}
			sc.t.Logf("enqueue failed, storing the batch again: %v", err)
		}
		tasks = tasks[n:]
	}
}

// waitCompleted waits until every one of ids has completed, for at most
// within.
func (sc *scenario) waitCompleted(ids []string, within time.Duration) {
	sc.t.Helper()
	streamtest.WaitUntil(sc.t, fmt.Sprintf("%d tasks to complete", len(ids)), within, func() (bool, string) {
		sc.refresh()
		n := 0
		for _, id := range ids {
			if sc.hist.Completions(id) > 0 {
				n++
			}
		}
		return n == len(ids), fmt.Sprintf("%d of %d completed; %s", n, len(ids), sc.describe())
	})
}

// describe says what the queue holds, for a failure message.
func (sc *scenario) describe() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	counts, err := sc.st.s.Counts(ctx)
	if err != nil {
		return "counting the queue's tasks: " + err.Error()
	}
	return fmt.Sprintf("the queue holds %v", counts)
}

// verify checks, once every child has exited, that every enqueued task
// completed, and that only tasks in inFlight ran twice.
func (sc *scenario) verify(inFlight ...[]string) {
	sc.t.Helper()
	sc.stopAll()
	sc.refresh()
	if err := sc.hist.Verify(sc.enqueued, inFlight...).Err(); err != nil {
		sc.t.Error(err)
	}
}

// runs returns the recorded runs that keep, in the order they began.
func (sc *scenario) runs(keep func(chaostest.Run) bool) []chaostest.Run {
	var out []chaostest.Run
	for _, r := range sc.hist.Runs() {
		if keep(r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b chaostest.Run) int { return a.Start.Compare(b.Start) })
	return out
}

// spans returns the runs as spans; a run that has not returned ends at
// end.
func spans(runs []chaostest.Run, end time.Time) []span {
	out := make([]span, len(runs))
	for i, r := range runs {
		out[i] = span{start: r.Start, end: r.End, id: r.ID}
		if !r.Ended() {
			out[i].end = end
		}
	}
	return out
}

// idPrefix returns a filter of runs whose task ID starts with prefix.
func idPrefix(prefix string) func(chaostest.Run) bool {
	return func(r chaostest.Run) bool { return strings.HasPrefix(r.ID, prefix) }
}

// ids returns the IDs of tasks.
func ids(tasks []*peonify.Task) []string {
	out := make([]string, len(tasks))
	for i, t := range tasks {
		out[i] = t.ID
	}
	return out
}
