// Package crashtest is the crash test of the stream packages, built on the
// one crash-test machinery the chaos suite uses too: processor processes
// started with streamtest's child harness record what they do in a
// chaostest.Ledger, and chaostest's History.Verify decides that nothing
// was lost and that duplicates stayed within what the kills allow.
//
// It is a package of its own because chaostest's tests use streamtest's
// child harness: streamtest cannot import chaostest, and this package
// imports both. Only the _test.go files of the stream packages import it.
package crashtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/chaostest"
	"github.com/peonify/peonify/internal/streamtest"
)

// RunChild runs, in a child process, a processor with cfg on s until ctx
// ends, recording in the ledger file at ledger each completed run, claim,
// ack and nack (chaostest.Ledger's Middleware and Wrap): each task of type
// typ goes to handle. Run closes s.
func RunChild(t *testing.T, ctx context.Context, ledger string, cfg peonify.Config, s peonify.Stream, typ string, handle peonify.HandlerFunc) {
	t.Helper()
	led := OpenLedger(t, ledger)
	cfg.Middleware = append([]peonify.Middleware{led.Middleware()}, cfg.Middleware...)
	p := streamtest.Processor(t, cfg, led.Wrap(s), peonify.TaskList{typ: handle})
	if err := p.Run(ctx); err != nil {
		t.Errorf("run: %v", err)
	}
}

// OpenLedger opens the ledger file at path for appending, closed when the
// test ends.
func OpenLedger(t testing.TB, path string) *chaostest.Ledger {
	t.Helper()
	led, err := chaostest.OpenLedger(path, chaostest.LedgerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = led.Close() })
	return led
}

// ReadLedger reads the ledger file at path.
func ReadLedger(t testing.TB, path string) *chaostest.History {
	t.Helper()
	h, err := chaostest.ReadLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Refresh brings h up to date, failing the test if that fails.
func Refresh(t testing.TB, h *chaostest.History) {
	t.Helper()
	if err := h.Refresh(); err != nil {
		t.Fatal(err)
	}
}

// ScaleOut is the scale-out test of a stream: Children processor
// processes drain a backlog from one queue, recording their work in one
// ledger (with RunChild), Victim is SIGKILLed once a quarter of the tasks
// are done, and at the end every task must have completed, repeats being
// only of the tasks the killed process held (claimed and not acked).
type ScaleOut struct {
	// IDs are the tasks enqueued before the children start.
	IDs []string

	// Ledger is the ledger file the children record in.
	Ledger string

	// Children is the number of processor processes. Defaults to 4.
	Children int

	// Victim is the index of the child that is killed.
	Victim int

	// Start starts child i (with streamtest.StartChild), which runs its
	// processor with RunChild on Ledger.
	Start func(t *testing.T, i int) *streamtest.Child

	// Jitter, when positive, delays the kill by a random time up to it,
	// so it lands at a random moment of the run.
	Jitter time.Duration

	// Leases, when set, reports, once the victim has exited, when the
	// leases of the tasks it held end: none of them may run again before.
	Leases func(t *testing.T, held []string) map[string]time.Time

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
}

// Run runs the test.
func (so ScaleOut) Run(t *testing.T) {
	t.Helper()
	so.defaults()
	h := ReadLedger(t, so.Ledger)
	start := time.Now()
	children := make([]*streamtest.Child, so.Children)
	for i := range children {
		children[i] = so.Start(t, i)
	}
	victim := children[so.Victim]
	// Kill the victim while it holds work: on a loaded machine the other
	// children may do a quarter of the tasks before it claims any.
	streamtest.WaitUntil(t, "a quarter of the tasks to complete, the victim holding some", so.Within, func() (bool, string) {
		Refresh(t, h)
		held := len(h.Held(victim.Pid()))
		return h.Completed() >= len(so.IDs)/4 && held > 0, fmt.Sprintf("%d tasks completed; the victim holds %d", h.Completed(), held)
	})
	if so.Jitter > 0 {
		time.Sleep(rand.N(so.Jitter))
	}
	victim.Kill(t)
	killedAt := time.Now()
	Refresh(t, h)
	held := h.Held(victim.Pid()) // it is dead: its records are all written
	if so.Leases != nil {
		so.checkLeases(t, h, held, so.Leases(t, held))
	}

	survivors := append(children[:so.Victim:so.Victim], children[so.Victim+1:]...)
	if so.Drained == nil {
		for _, c := range survivors {
			if err := c.Wait(time.Until(start.Add(so.Within))); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		streamtest.WaitUntil(t, "every task to complete and the stream to drain", so.Within, func() (bool, string) {
			Refresh(t, h)
			if n := h.Completed(); n < len(so.IDs) {
				return false, fmt.Sprintf("%d of %d tasks completed", n, len(so.IDs))
			}
			return so.Drained(t)
		})
	}
	took := time.Since(start)
	if so.Drained != nil {
		for _, c := range survivors {
			if err := c.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range survivors {
			if err := c.Wait(so.StopWithin); err != nil {
				t.Errorf("after SIGTERM: %v", err)
			}
		}
	}

	Refresh(t, h) // every process has exited: the ledger is final
	v := h.Verify(so.IDs, held)
	if err := v.Err(); err != nil {
		t.Error(err)
	}
	t.Logf("%d processes drained %d tasks in %s (%.0f tasks/s); child %d was SIGKILLed after %s holding %d tasks; %d duplicate runs",
		so.Children, len(so.IDs), took.Round(time.Millisecond), float64(len(so.IDs))/took.Seconds(),
		so.Victim, killedAt.Sub(start).Round(time.Millisecond), len(held), v.Duplicates)
}

// checkLeases checks that no task the victim held runs again before its
// lease ends: it looks just before the first lease ends, when none of them
// may have completed twice.
func (so ScaleOut) checkLeases(t *testing.T, h *chaostest.History, held []string, ends map[string]time.Time) {
	t.Helper()
	var first time.Time
	for _, end := range ends {
		if first.IsZero() || end.Before(first) {
			first = end
		}
	}
	if first.IsZero() {
		return
	}
	time.Sleep(time.Until(first.Add(-100 * time.Millisecond)))
	Refresh(t, h)
	if time.Now().After(first) {
		t.Logf("the check of the leases came too late to mean anything (the first ended at %s)", first.Format("15:04:05.000"))
		return
	}
	var early []string
	for _, id := range held {
		if h.Completions(id) > 1 {
			early = append(early, id)
		}
	}
	streamtest.SomeErrors(t, "tasks of the killed child ran again before their leases ended", early)
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
