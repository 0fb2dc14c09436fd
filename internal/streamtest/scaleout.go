package streamtest

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// Run is one completion of a task, as a child recorded it.
type Run struct {
	ID    string
	Child int       // the index of the child that ran it
	At    time.Time // when it ran; zero if the ledger does not say
}

// Held is what the killed child held when it died: the only tasks that
// may run twice.
type Held struct {
	// Count is how many tasks it held, when only the number is known.
	Count int

	// IDs, when not nil, are the tasks it held, each with the end of its
	// lease (zero if unknown). Only these may run twice, and none may run
	// in another child before its lease ended.
	IDs map[string]time.Time
}

// bound is the most duplicate runs that h allows.
func (h Held) bound() int {
	if h.IDs != nil {
		return len(h.IDs)
	}
	return h.Count
}

// ScaleOut is the scale-out test of a stream: Children processor
// processes drain a backlog from one queue, Victim is SIGKILLed once a
// quarter of the tasks are done, and at the end every task must have been
// completed, with repeats only of what the killed process held.
type ScaleOut struct {
	// IDs are the tasks enqueued before the children start.
	IDs []string

	// Children is the number of processor processes. Defaults to 4.
	Children int

	// Victim is the index of the child that is killed.
	Victim int

	// Start starts child i (with StartChild).
	Start func(t *testing.T, i int) *Child

	// Runs returns the completions recorded so far.
	Runs func(t *testing.T) []Run

	// Jitter, when positive, delays the kill by a random time up to it,
	// so it lands at a random moment of the run.
	Jitter time.Duration

	// Held reports, once the victim has exited, what it held.
	Held func(t *testing.T) Held

	// Drained reports whether the stream holds nothing more, and if not
	// what it holds. Once every task has run and it reports true, the
	// survivors are stopped with SIGTERM. When nil, the children exit on
	// their own once the queue is empty.
	Drained func(t *testing.T) (bool, string)

	// Within bounds each wait: for a quarter of the tasks, for the rest.
	// Defaults to 60s.
	Within time.Duration

	// StopWithin bounds the exit of a survivor after SIGTERM. Defaults
	// to 30s.
	StopWithin time.Duration

	// MaxRuns, when positive, is the most times a task may run.
	MaxRuns int
}

// Run runs the test.
func (so ScaleOut) Run(t *testing.T) {
	t.Helper()
	so.defaults()
	start := time.Now()
	children := make([]*Child, so.Children)
	for i := range children {
		children[i] = so.Start(t, i)
	}
	WaitUntil(t, "a quarter of the tasks to complete", so.Within, func() (bool, string) {
		n := len(so.Runs(t))
		return n >= len(so.IDs)/4, fmt.Sprintf("%d runs recorded", n)
	})
	if so.Jitter > 0 {
		time.Sleep(rand.N(so.Jitter))
	}
	children[so.Victim].Kill(t)
	killedAt := time.Now()
	held := so.Held(t)

	survivors := append(children[:so.Victim:so.Victim], children[so.Victim+1:]...)
	if so.Drained == nil {
		for _, c := range survivors {
			if err := c.Wait(time.Until(start.Add(so.Within))); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		WaitUntil(t, "every task to complete and the stream to drain", so.Within, func() (bool, string) {
			if n := distinct(so.Runs(t)); n < len(so.IDs) {
				return false, fmt.Sprintf("%d of %d tasks completed", n, len(so.IDs))
			}
			return so.Drained(t)
		})
	}
	took := time.Since(start)
	if so.Drained != nil {
		for _, c := range survivors {
			if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range survivors {
			if err := c.Wait(so.StopWithin); err != nil {
				t.Errorf("after SIGTERM: %v", err)
			}
		}
	}

	runs := so.Runs(t) // every process has exited: the ledger is final
	dups := CheckRuns(t, so.IDs, runs, so.Victim, held, so.MaxRuns)
	perChild := make([]int, so.Children)
	for _, r := range runs {
		perChild[r.Child]++
	}
	t.Logf("%d processes drained %d tasks in %s (%.0f tasks/s); child %d was SIGKILLed after %s holding %d tasks; %d duplicate runs; runs per process %v",
		so.Children, len(so.IDs), took.Round(time.Millisecond), float64(len(so.IDs))/took.Seconds(),
		so.Victim, killedAt.Sub(start).Round(time.Millisecond), held.bound(), dups, perChild)
}

func (so *ScaleOut) defaults() {
	if so.Children == 0 {
		so.Children = 4
	}
	if so.Within == 0 {
		so.Within = 60 * time.Second
	}
	if so.StopWithin == 0 {
		so.StopWithin = 30 * time.Second
	}
}

// distinct returns the number of distinct tasks among runs.
func distinct(runs []Run) int {
	seen := make(map[string]bool, len(runs))
	for _, r := range runs {
		seen[r.ID] = true
	}
	return len(seen)
}

// CheckRuns checks the runs of a test in which the child victim was
// killed holding held: every task of ids ran, no other task ran, no task
// ran more than maxRuns times (when positive), and the repeats are no more
// than held allows; when held names its tasks, only those ran twice and
// none ran in another child before its lease ended. It returns the number
// of duplicate runs.
func CheckRuns(t *testing.T, ids []string, runs []Run, victim int, held Held, maxRuns int) (dups int) {
	t.Helper()
	enqueued := make(map[string]bool, len(ids))
	for _, id := range ids {
		enqueued[id] = true
	}
	count := make(map[string]int, len(ids))
	where := make(map[string][]string, len(ids)) // task ID → "child@time" of each run
	var early []string
	for _, r := range runs {
		count[r.ID]++
		where[r.ID] = append(where[r.ID], fmt.Sprintf("%d@%s", r.Child, r.At.Format("15:04:05.000")))
		if end := held.IDs[r.ID]; r.Child != victim && !end.IsZero() && !r.At.IsZero() && r.At.Before(end) {
			early = append(early, fmt.Sprintf("%s ran in child %d at %s, lease ended at %s", r.ID, r.Child, r.At.Format("15:04:05.000"), end.Format("15:04:05.000")))
		}
	}
	var lost, unknown, unheld, over []string
	for _, id := range ids {
		if count[id] == 0 {
			lost = append(lost, id)
		}
	}
	for id, n := range count {
		_, wasHeld := held.IDs[id]
		switch {
		case !enqueued[id]:
			unknown = append(unknown, id)
		case n > 1 && held.IDs != nil && !wasHeld:
			unheld = append(unheld, fmt.Sprintf("%s ran at child@time %v", id, where[id]))
		case maxRuns > 0 && n > maxRuns:
			over = append(over, fmt.Sprintf("%s ran at child@time %v", id, where[id]))
		}
		dups += n - 1
	}
	SomeErrors(t, "enqueued tasks never completed", lost)
	SomeErrors(t, "tasks completed that were never enqueued", unknown)
	SomeErrors(t, "tasks ran twice that the killed child did not hold: only its tasks may; "+
		"a surviving child lost leases, so it or the server stalled for longer than the lease (see the children's output)", unheld)
	SomeErrors(t, "tasks of the killed child ran elsewhere before its lease ended", early)
	SomeErrors(t, fmt.Sprintf("tasks ran more than %d times: one kill may repeat a task once at most", maxRuns), over)
	if dups > held.bound() {
		t.Errorf("%d duplicate runs, more than the %d tasks the killed child held", dups, held.bound())
	}
	return dups
}

// SomeErrors fails the test with how many items there are and the first
// few of them, if there are any.
func SomeErrors(t testing.TB, what string, items []string) {
	t.Helper()
	if len(items) == 0 {
		return
	}
	t.Errorf("%d %s; the first: %v", len(items), what, items[:min(len(items), 5)])
}

// WaitUntil polls cond, which reads state outside the test process, until
// it reports done; if within passes first, it fails the test with the
// state cond last described.
func WaitUntil(t testing.TB, what string, within time.Duration, cond func() (done bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		done, state := cond()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting %s for %s: %s", within, what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WantEmpty fails the test unless c counts no task in any of states, or
// in any state at all when states is empty.
func WantEmpty(t testing.TB, c Counter, states ...peonify.State) {
	t.Helper()
	if len(states) == 0 {
		states = peonify.States
	}
	counts, err := c.Counts(Context(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range states {
		if counts[st] != 0 {
			t.Errorf("the stream holds %v, want no %s task", counts, st)
		}
	}
}
