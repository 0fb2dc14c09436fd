//go:build unix

package chaostest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// Sizes of the workflow scenario.
const (
	diamonds     = 200 // workflows A→B, A→C, B→D, C→D
	diamondKills = 3
	diamondMs    = 25 // each task's work
)

// diamond is one workflow of the scenario, with the result each of its
// tasks must end with.
type diamond struct {
	id      string
	tasks   []*peonify.Task // A, B, C, D
	results map[string]string
}

// newDiamond builds workflow i: A, then B and C, which read A's result,
// then D, which reads B's and C's. Each task sets a result made of its
// letter and its parents' results, so D's shows what it was given.
func newDiamond(i int) diamond {
	d := diamond{id: fmt.Sprintf("wf%03d", i), results: map[string]string{}}
	w := &peonify.Workflow{ID: d.id}
	add := func(letter string, parents ...*peonify.Task) *peonify.Task {
		wk := work{Ms: diamondMs, Result: fmt.Sprintf("%s%d", letter, i), Parents: map[string]string{}}
		var ids []string
		for _, p := range parents {
			wk.Parents[p.ID] = d.results[p.ID]
			ids = append(ids, p.ID)
		}
		t := w.Add(&peonify.Task{ID: d.id + "-" + letter, Type: "chaos", Payload: payload(wk)}, parents...)
		got := make(map[string][]byte, len(ids))
		for id, v := range wk.Parents {
			got[id] = []byte(v)
		}
		d.results[t.ID] = resultOf(wk.Result, ids, got)
		return t
	}
	a := add("a")
	b, c := add("b", a), add("c", a)
	add("d", b, c)
	d.tasks = w.Tasks
	return d
}

// workflow returns the diamond as a new Workflow to enqueue.
func (d diamond) workflow() *peonify.Workflow {
	w := &peonify.Workflow{ID: d.id}
	for _, t := range d.tasks {
		cp := *t
		cp.Parents = slices.Clone(t.Parents)
		w.Tasks = append(w.Tasks, &cp)
	}
	return w
}

// scenarioWorkflow runs 200 diamond workflows at once on two processors
// and SIGKILLs one of them three times, at a quarter, half and three
// quarters of the work, starting another in its place each time. Every
// workflow must succeed; no task may start before each of its parents has
// returned success (the ledger's timed records); D must have been given
// B's and C's results; and, as in every scenario, each task's success
// counts once: it completed, and more than once only if it was in flight
// at a kill.
func scenarioWorkflow(c *cell) {
	wf, ok1 := peonify.As[peonify.WorkflowStore](c.st.s)
	tr, ok2 := peonify.As[peonify.Tracker](c.st.s)
	if !ok1 || !ok2 {
		c.skip(fmt.Sprintf("the %s stream runs no workflows (it is not a peonify.WorkflowStore and Tracker)", c.b.name))
	}
	if c.b.name == "sqlite" {
		// One file's writer takes every ack, each releasing dependents
		// in its transaction, behind four producers' workflow inserts:
		// on a loaded machine (load 29, with the race detector) acks of
		// finished tasks waited 5.6s, past the cells' 2s lease, and
		// another process ran them again while their holder was alive.
		c.spec.Lease = 6 * time.Second
	}
	timed := func(o *orders) { o.Timed = true }
	victim, other := c.startChild(timed), c.startChild(timed)
	c.waitUp(victim, other)

	all := make([]diamond, diamonds)
	for i := range all {
		all[i] = newDiamond(i)
	}
	// Four producers enqueue the workflows at once, beside the processors.
	const producers = 4
	var wg sync.WaitGroup
	errs := make([]error, producers)
	for p := range producers {
		wg.Go(func() {
			for i := p; i < len(all); i += producers {
				if err := c.enqueueWorkflow(wf, all[i]); err != nil {
					errs[p] = fmt.Errorf("EnqueueWorkflow(%s): %w", all[i].id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	enqueued := slices.Clone(c.enqueued)
	c.mu.Unlock()

	var held []string
	for k := 1; k <= diamondKills; k++ {
		c.waitCompleted(enqueued, k*len(enqueued)/(diamondKills+1))
		if !c.waitHolding(victim, 1) {
			c.note("kill %d: the victim held no task", k)
		}
		held = append(held, c.kill(victim)...)
		victim = c.startChild(timed)
		c.waitUp(victim)
	}
	c.waitAll()
	c.waitQuiet()
	c.note("%d SIGKILLs holding %d tasks (%s)", diamondKills, len(held), byLetter(held))
	c.finish()
	c.checkDiamonds(wf, tr, all)
}

// enqueueWorkflow stores d and counts its tasks as tasks that must
// complete. A DuplicateError means an earlier call stored it.
func (c *cell) enqueueWorkflow(wf peonify.WorkflowStore, d diamond) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := wf.EnqueueWorkflow(ctx, d.workflow()); err != nil && !errors.Is(err, peonify.ErrDuplicate) {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range d.tasks {
		c.enqueued = append(c.enqueued, t.ID)
	}
	return nil
}

// byLetter counts task IDs by their last letter: which step of the
// diamonds the kills found in flight.
func byLetter(ids []string) string {
	n := map[string]int{}
	for _, id := range ids {
		n[id[strings.LastIndexByte(id, '-')+1:]]++
	}
	var parts []string
	for _, l := range []string{"a", "b", "c", "d"} {
		parts = append(parts, fmt.Sprintf("%s %d", l, n[l]))
	}
	return strings.Join(parts, ", ")
}

// checkDiamonds checks what the workflow scenario asserts besides the
// ledger's verdict: every workflow succeeded, with each task done once in
// the store; D ended with the result made of B's and C's; and no handler
// run of a task began before a run of each of its parents had returned
// success.
func (c *cell) checkDiamonds(wf peonify.WorkflowStore, tr peonify.Tracker, all []diamond) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	failed := 0
	for _, d := range all {
		info, err := wf.GetWorkflow(ctx, d.id)
		switch {
		case err != nil:
			c.t.Errorf("GetWorkflow(%s): %v", d.id, err)
		case info.State != peonify.WorkflowSucceeded || info.Counts[peonify.StateDone] != len(d.tasks):
			c.t.Errorf("workflow %s is %s with tasks by state %v, want %s with %d done", d.id, info.State, info.Counts, peonify.WorkflowSucceeded, len(d.tasks))
		default:
			continue
		}
		if failed++; failed == 5 {
			c.t.Fatal("and so on: giving up on the workflows")
		}
	}

	var ids []string
	for _, d := range all {
		for _, t := range d.tasks {
			ids = append(ids, t.ID)
		}
	}
	got, err := tr.Results(ctx, ids...)
	if err != nil {
		c.t.Fatalf("Results of the workflows' tasks: %v", err)
	}
	wrong := 0
	for _, d := range all {
		for _, t := range d.tasks {
			if v, want := string(got[t.ID]), d.results[t.ID]; v != want {
				if wrong++; wrong <= 5 {
					c.t.Errorf("task %s ended with result %q, want %q", t.ID, v, want)
				}
			}
		}
	}

	c.refresh()
	c.mu.Lock()
	runs := c.hist.Runs()
	c.mu.Unlock()
	ran := map[string]bool{}
	for _, r := range runs {
		ran[r.ID] = true
	}
	parents := map[string][]string{}
	for _, d := range all {
		for _, t := range d.tasks {
			parents[t.ID] = t.Parents
			if !ran[t.ID] {
				c.t.Errorf("task %s has no timed run in the ledger", t.ID)
			}
		}
	}
	bad, checked := startedEarly(runs, parents)
	early := len(bad)
	for _, b := range some5(bad) {
		c.t.Error(b)
	}
	if early > 0 {
		c.t.Errorf("%d runs of dependents started before a parent's success", early)
	}
	c.note("%d workflows succeeded; no dependent started before its parents' success (%d run-parent pairs)", len(all)-failed, checked)
}

// startedEarly checks that every run in runs began after a run of each of
// the task's parents (by task ID) had returned success, and returns the
// runs that did not, described, and how many (run, parent) pairs it
// checked.
func startedEarly(runs []Run, parents map[string][]string) (bad []string, checked int) {
	// The first success of each task: the earliest end of a run that
	// returned nil.
	firstOK := map[string]time.Time{}
	for _, r := range runs {
		if r.Ended() && !r.Failed {
			if at, ok := firstOK[r.ID]; !ok || r.End.Before(at) {
				firstOK[r.ID] = r.End
			}
		}
	}
	for _, r := range runs {
		for _, p := range parents[r.ID] {
			checked++
			at, done := firstOK[p]
			if done && !at.After(r.Start) {
				continue
			}
			when := "never succeeded"
			if done {
				when = fmt.Sprintf("first succeeded %s later", at.Sub(r.Start))
			}
			bad = append(bad, fmt.Sprintf("task %s (attempt %d, pid %d) started at %s, but its parent %s %s",
				r.ID, r.Attempt, r.Pid, r.Start.Format("15:04:05.000000"), p, when))
		}
	}
	return bad, checked
}

// startedEarly finds a dependent that started before its parent's
// success, one whose parent never succeeded, and none in a correct order.
func TestStartedEarly(t *testing.T) {
	at := func(ms int) time.Time { return time.UnixMilli(int64(1_000_000 + ms)) }
	parents := map[string][]string{"b": {"a"}, "d": {"b", "c"}}
	ok := []Run{
		{ID: "a", Attempt: 1, Start: at(0), End: at(10), Failed: true},
		{ID: "a", Attempt: 2, Start: at(20), End: at(30)},
		{ID: "b", Attempt: 1, Start: at(30), End: at(40)},
		{ID: "c", Attempt: 1, Start: at(0), End: at(5)},
		{ID: "d", Attempt: 1, Start: at(41), End: at(50)},
	}
	if bad, n := startedEarly(ok, parents); len(bad) != 0 || n != 3 {
		t.Errorf("a correct order: %d pairs checked (want 3), flagged %q", n, bad)
	}
	early := slices.Clone(ok)
	early[2].Start = at(25) // b began after a's failed run, before its success
	if bad, _ := startedEarly(early, parents); len(bad) != 1 || !strings.Contains(bad[0], "parent a first succeeded 5ms later") {
		t.Errorf("b before a's success: flagged %q", bad)
	}
	never := append(slices.Clone(ok[1:]), Run{ID: "d", Attempt: 2, Start: at(60)})
	never[0].Failed = true // a never succeeded
	if bad, _ := startedEarly(never, parents); len(bad) != 1 || !strings.Contains(bad[0], "parent a never succeeded") {
		t.Errorf("a never succeeded: flagged %q", bad)
	}
}

// The results the diamonds' tasks must end with show what each was given.
func TestDiamondResults(t *testing.T) {
	d := newDiamond(7)
	want := map[string]string{"wf007-a": "a7", "wf007-b": "b7(a7)", "wf007-c": "c7(a7)", "wf007-d": "d7(b7(a7),c7(a7))"}
	for id, w := range want {
		if got := d.results[id]; got != w {
			t.Errorf("%s: result %q, want %q", id, got, w)
		}
	}
	if got := d.workflow().Tasks[3].Parents; !slices.Equal(got, []string{"wf007-b", "wf007-c"}) {
		t.Errorf("D's parents are %v", got)
	}
}
