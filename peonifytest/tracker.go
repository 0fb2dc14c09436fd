package peonifytest

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/peonify/peonify"
)

// The checks of results, progress and waiting (peonify.Tracker). Those
// that need a Tracker skip, saying why, for a stream that is not one; the
// Tracker check fails for such a stream unless Features.NoTracker says it
// is meant.

// waitWakeTime is how long after the ack that finishes a task a Wait for
// it may take to return: a Tracker wakes its waiters when a task finishes,
// so this is generous on a loaded machine, and shorter than the slow
// safety re-check a store may add for finishes it cannot see.
const waitWakeTime = 500 * time.Millisecond

// tracker returns the stream's peonify.Tracker, found with peonify.As,
// after making sure the stream is an Inspector too, or skips the test.
func (h *harness) tracker() peonify.Tracker {
	h.t.Helper()
	tr, ok := peonify.As[peonify.Tracker](h.s)
	switch {
	case !ok && h.f.NoTracker:
		h.t.Skip("Features.NoTracker: the stream does not keep results, progress or cancellations")
	case !ok:
		h.t.Skipf("%T is not a peonify.Tracker (the Tracker check says whether that is meant)", h.s)
	}
	h.needInspector()
	return tr
}

// workflows returns the stream's peonify.WorkflowStore and Tracker, found
// with peonify.As, or skips the test.
func (h *harness) workflows() (peonify.WorkflowStore, peonify.Tracker) {
	h.t.Helper()
	ws, ok := peonify.As[peonify.WorkflowStore](h.s)
	switch {
	case !ok && h.f.NoWorkflows:
		h.t.Skip("Features.NoWorkflows: the stream does not run workflows")
	case !ok:
		h.t.Skipf("%T is not a peonify.WorkflowStore (the WorkflowStore check says whether that is meant)", h.s)
	}
	return ws, h.tracker()
}

// testTracker checks that a stream is a peonify.Tracker unless
// Features.NoTracker says it is not, and is not one if it says so.
func testTracker(h *harness) {
	_, ok := peonify.As[peonify.Tracker](h.s)
	switch {
	case !ok && h.f.NoTracker:
		h.t.Skip("Features.NoTracker: the stream is not a peonify.Tracker, so peonify.SetResult and ReportProgress fail on it with errors.ErrUnsupported")
	case !ok:
		h.t.Fatalf("%T is not a peonify.Tracker (looked for with peonify.As): it keeps no results, progress or cancellations. "+
			"Implement peonify.Tracker, or set Features.NoTracker if the stream forgets a task once it is acked and its documentation says so; "+
			"a wrapper needs an Unwrap method", h.s)
	case h.f.NoTracker:
		h.t.Fatalf("%T is a peonify.Tracker, but Features.NoTracker says it is not: remove Features.NoTracker", h.s)
	}
	if _, ok := peonify.As[peonify.Inspector](h.s); !ok {
		h.t.Errorf("%T is a peonify.Tracker but not a peonify.Inspector: results and progress are read with Inspector.Get", h.s)
	}
}

// testWorkflowStore checks that a stream is a peonify.WorkflowStore unless
// Features.NoWorkflows says it is not, and is not one if it says so.
func testWorkflowStore(h *harness) {
	_, ok := peonify.As[peonify.WorkflowStore](h.s)
	switch {
	case !ok && h.f.NoWorkflows:
		h.t.Skip("Features.NoWorkflows: the stream is not a peonify.WorkflowStore, so peonify.Spawn fails on it with errors.ErrUnsupported")
	case !ok:
		h.t.Fatalf("%T is not a peonify.WorkflowStore (looked for with peonify.As): it cannot run workflows. "+
			"Implement peonify.WorkflowStore, or set Features.NoWorkflows if the stream cannot and its documentation says so; "+
			"a wrapper needs an Unwrap method", h.s)
	case h.f.NoWorkflows:
		h.t.Fatalf("%T is a peonify.WorkflowStore, but Features.NoWorkflows says it is not: remove Features.NoWorkflows", h.s)
	}
	if _, ok := peonify.As[peonify.Tracker](h.s); !ok {
		h.t.Errorf("%T is a peonify.WorkflowStore but not a peonify.Tracker: a workflow's tasks read their parents' results (peonify.ParentResults)", h.s)
	}
}

// ackResult acks d with result as its Delivery.Result.
func (h *harness) ackResult(d peonify.Delivery, result []byte) {
	h.t.Helper()
	d.Result = result
	h.ack(d)
}

// mustGet returns task id from the Inspector, failing the test on an
// error.
func (h *harness) mustGet(id, when string) peonify.TaskInfo {
	h.t.Helper()
	info, err := h.ins.Get(h.ctx(), id)
	if err != nil {
		h.t.Fatalf("%s: Inspector.Get(%s): %v", when, id, err)
	}
	return info
}

// wantStateNow checks the Inspector's state of task id and returns it.
func (h *harness) wantStateNow(id string, want peonify.State, when string) peonify.TaskInfo {
	h.t.Helper()
	info := h.mustGet(id, when)
	if info.State != want {
		h.t.Errorf("%s: Inspector.Get(%s).State = %q (LastError %q), want %q", when, id, info.State, info.LastError, want)
	}
	return info
}

// wantNotFound checks that Inspector.Get of each id fails with
// ErrNotFound.
func (h *harness) wantNotFound(when string, ids ...string) {
	h.t.Helper()
	for _, id := range ids {
		if info, err := h.ins.Get(h.ctx(), id); !errors.Is(err, peonify.ErrNotFound) {
			h.t.Errorf("%s: Inspector.Get(%s) = state %q, %v; want an error wrapping peonify.ErrNotFound: nothing may be stored", when, id, info.State, err)
		}
	}
}

// testResultRoundTrip checks that a Tracker stores Delivery.Result with
// the ack: Get shows the task done with its result, byte for byte, and
// Results maps it; an empty non-nil result is a result too; a task acked
// without one has none, and Results leaves out tasks that are not done
// and unknown IDs.
func testResultRoundTrip(h *harness) {
	tr := h.tracker()
	withResult, empty, none, pending := h.newTask(), h.newTask(), h.newTask(), h.newTask()
	h.enqueue(withResult, empty, none)
	result := make([]byte, 0, 300)
	result = append(result, `{"answer":42}`...)
	for i := range 256 {
		result = append(result, byte(i))
	}
	for _, d := range h.collect(3, 10) {
		switch d.Task.ID {
		case withResult.ID:
			h.ackResult(d, result)
		case empty.ID:
			h.ackResult(d, []byte{})
		default:
			h.ackResult(d, nil)
		}
	}
	h.enqueue(pending)

	info := h.wantStateNow(withResult.ID, peonify.StateDone, "a task acked with a result")
	if !bytes.Equal(info.Result, result) {
		h.t.Errorf("Inspector.Get(%s).Result is %d bytes%s, want the %d bytes of Delivery.Result given to Ack",
			withResult.ID, len(info.Result), firstDiff(info.Result, result), len(result))
	}
	info = h.wantStateNow(empty.ID, peonify.StateDone, "a task acked with an empty, non-nil result")
	if len(info.Result) != 0 {
		h.t.Errorf("Inspector.Get(%s).Result = %q, want the empty result given to Ack", empty.ID, info.Result)
	}
	switch info, err := h.ins.Get(h.ctx(), none.ID); {
	case errors.Is(err, peonify.ErrNotFound):
	case err != nil:
		h.t.Errorf("Inspector.Get(%s) of a task acked without a result: %v, want the task gone (peonify.ErrNotFound) or done", none.ID, err)
	case info.State != peonify.StateDone || info.Result != nil:
		h.t.Errorf("Inspector.Get(%s) of a task acked without a result: state %q, Result %q; want the task gone or done with a nil Result", none.ID, info.State, info.Result)
	}

	unknown := peonify.NewID()
	res, err := tr.Results(h.ctx(), withResult.ID, empty.ID, none.ID, pending.ID, unknown)
	if err != nil {
		h.t.Fatalf("Tracker.Results: %v (unknown IDs are not an error)", err)
	}
	if got, ok := res[withResult.ID]; !ok || !bytes.Equal(got, result) {
		h.t.Errorf("Tracker.Results()[%s] = %d bytes (present: %t), want the %d bytes acked", withResult.ID, len(got), ok, len(result))
	}
	if got, ok := res[empty.ID]; !ok || len(got) != 0 {
		h.t.Errorf("Tracker.Results()[%s] = %q (present: %t), want the empty result acked: an empty result is a result", empty.ID, got, ok)
	}
	for _, id := range []string{none.ID, pending.ID, unknown} {
		if got, ok := res[id]; ok {
			h.t.Errorf("Tracker.Results()[%s] = %q, want it missing: the task has no result (acked without one, pending, or unknown)", id, got)
		}
	}
	if len(res) != 2 {
		h.t.Errorf("Tracker.Results() has %d entries, want 2", len(res))
	}
	if res, err := tr.Results(h.ctx()); err != nil || len(res) != 0 {
		h.t.Errorf("Tracker.Results() of no IDs = %v, %v; want an empty map and no error", res, err)
	}
}

// waitResult is what a Wait in another goroutine returned.
type waitResult struct {
	info peonify.TaskInfo
	err  error
	at   time.Time
}

// goWait calls Wait for id in a goroutine.
func (h *harness) goWait(ctx context.Context, tr peonify.Tracker, id string) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		info, err := tr.Wait(ctx, id)
		ch <- waitResult{info, err, time.Now()}
	}()
	return ch
}

// testResultWaitWakes checks Tracker.Wait: it blocks while the task runs
// and returns the done task with its result promptly after another
// goroutine acks it (woken, not polling slowly); it returns a dead task
// too, and a finished one at once; it fails with ErrNotFound for an
// unknown ID and with the context's error when the context ends first.
func testResultWaitWakes(h *harness) {
	tr := h.tracker()
	tk, dead := h.newTask(), h.newTask()
	h.enqueue(tk)
	d := h.next()
	ch := h.goWait(h.ctx(), tr, tk.ID)
	deadCh := h.goWait(h.ctx(), tr, dead.ID) // not enqueued yet: ErrNotFound
	select {
	case r := <-ch:
		h.t.Fatalf("Tracker.Wait(%s) returned state %q, %v while the task was running: it must wait until the task finishes", tk.ID, r.info.State, r.err)
	case <-time.After(h.f.Settle):
	}
	result := []byte(`"peonifytest: waited for"`)
	ackedAt := time.Now()
	h.ackResult(d, result)
	select {
	case r := <-ch:
		switch took := r.at.Sub(ackedAt); {
		case r.err != nil:
			h.t.Errorf("Tracker.Wait(%s) after the ack: %v", tk.ID, r.err)
		case r.info.State != peonify.StateDone || !bytes.Equal(r.info.Result, result) || r.info.Task.ID != tk.ID:
			h.t.Errorf("Tracker.Wait(%s) returned task %s in state %q with result %q, want %q with %q", tk.ID, r.info.Task.ID, r.info.State, r.info.Result, peonify.StateDone, result)
		case took > waitWakeTime:
			h.t.Errorf("Tracker.Wait(%s) returned %s after the ack, want within %s: a waiter is woken when the task finishes, not by a slow poll", tk.ID, took.Round(time.Millisecond), waitWakeTime)
		default:
			h.t.Logf("Wait returned %s after the ack", took.Round(time.Microsecond))
		}
	case <-time.After(h.f.Timeout):
		h.t.Fatalf("Tracker.Wait(%s) did not return within %s of the ack that finished the task", tk.ID, h.f.Timeout)
	}

	select {
	case r := <-deadCh:
		if !errors.Is(r.err, peonify.ErrNotFound) {
			h.t.Errorf("Tracker.Wait of an unknown ID returned state %q, %v; want an error wrapping peonify.ErrNotFound", r.info.State, r.err)
		}
	case <-time.After(h.f.Timeout):
		h.t.Fatalf("Tracker.Wait of an unknown ID did not return within %s: it must fail with peonify.ErrNotFound", h.f.Timeout)
	}

	// A finished task: at once.
	ctx, cancel := context.WithTimeout(h.ctx(), h.f.Timeout)
	defer cancel()
	if info, err := tr.Wait(ctx, tk.ID); err != nil || info.State != peonify.StateDone {
		h.t.Errorf("Tracker.Wait(%s) of a done task = state %q, %v; want it done at once", tk.ID, info.State, err)
	}

	// A dead task, and a Wait whose context ends first.
	h.enqueue(dead)
	short, cancelShort := context.WithTimeout(h.ctx(), 50*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	_, err := tr.Wait(short, dead.ID)
	if !errors.Is(err, context.DeadlineExceeded) {
		h.t.Errorf("Tracker.Wait(%s) of a pending task with a 50ms context returned %v, want the context's error (context.DeadlineExceeded)", dead.ID, err)
	}
	if took := time.Since(start); took > 50*time.Millisecond+waitWakeTime {
		h.t.Errorf("Tracker.Wait with a 50ms context returned after %s: it must return when its context ends", took.Round(time.Millisecond))
	}
	ch = h.goWait(h.ctx(), tr, dead.ID)
	d = h.next()
	h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "peonifytest: dead"})
	select {
	case r := <-ch:
		if r.err != nil || r.info.State != peonify.StateDead {
			h.t.Errorf("Tracker.Wait(%s) of a task that went dead = state %q, %v; want %q", dead.ID, r.info.State, r.err, peonify.StateDead)
		}
	case <-time.After(h.f.Timeout):
		h.t.Fatalf("Tracker.Wait(%s) did not return within %s of the task going dead", dead.ID, h.f.Timeout)
	}
}

// testProgressStored checks Tracker.SetProgress: the progress of a running
// task shows in Get, and is kept once it is done; with leases, a stale
// claim's SetProgress fails with ErrLeaseLost and changes nothing.
func testProgressStored(h *harness) {
	tr := h.tracker()
	tk := h.newTask()
	h.enqueue(tk)
	d := h.next()
	at := time.Now()
	p := peonify.Progress{Fraction: 0.5, Message: "peonifytest: half way", UpdatedAt: at}
	if err := tr.SetProgress(h.ctx(), d, p); err != nil {
		h.failf("SetProgress of a current claim: %v", err)
	}
	h.noteLate(d.Deadline)
	checkProgress := func(info peonify.TaskInfo, when string) {
		h.t.Helper()
		got := info.Progress
		if got.Fraction != p.Fraction || got.Message != p.Message || got.UpdatedAt.Sub(at).Abs() > time.Second {
			h.t.Errorf("%s: Inspector.Get(%s).Progress = %+v, want %+v", when, tk.ID, got, p)
		}
	}
	checkProgress(h.wantStateNow(tk.ID, peonify.StateRunning, "after SetProgress"), "while the task runs")
	h.ackResult(d, []byte(`"done"`))
	checkProgress(h.wantStateNow(tk.ID, peonify.StateDone, "after the ack with a result"), "after the task is done")

	if h.f.Lease == 0 {
		return
	}
	tk = h.newTask()
	h.enqueue(tk)
	d = h.next()
	d2 := h.reclaim(d)
	err := tr.SetProgress(h.ctx(), d, peonify.Progress{Fraction: 0.9, Message: "stale", UpdatedAt: time.Now()})
	if !errors.Is(err, peonify.ErrLeaseLost) {
		h.failf("SetProgress of a stale claim (the task was claimed again) returned %v, want an error wrapping peonify.ErrLeaseLost", err)
	}
	if info := h.mustGet(tk.ID, "after a stale SetProgress"); info.Progress.Message == "stale" {
		h.t.Errorf("a stale claim's SetProgress changed the task's progress to %+v", info.Progress)
	}
	if err := tr.SetProgress(h.ctx(), d2, peonify.Progress{Fraction: 0.1, Message: "current", UpdatedAt: time.Now()}); err != nil {
		h.failf("SetProgress of the current claim after a re-claim: %v", err)
	}
	h.ack(d2)
}

// processorLogger returns a logger for a processor under test.
func (h *harness) processorLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(h.t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// processorConfig is the config of the processors the suite runs over the
// stream: 8 workers that poll often, the suite's Timeout to finish their
// tasks at shutdown, and warnings logged to the test.
func (h *harness) processorConfig() peonify.Config {
	return peonify.Config{
		Workers:         8,
		PollInterval:    50 * time.Millisecond,
		MinPollInterval: time.Millisecond,
		ShutdownGrace:   h.f.Timeout,
		Logger:          h.processorLogger(),
	}
}

// fastRetry retries a failed task after 10 to 20ms, without jitter, so
// that a retry does not hold up a test.
var fastRetry = peonify.RetryPolicy{MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Jitter: -1}

// runProcessor runs a real peonify.Processor over the stream with the
// handlers of tl, and returns a function that stops it and checks that
// Run returns nil. The processor closes the stream when it stops, so the
// test inspects the stream before calling stop.
func (h *harness) runProcessor(tl peonify.TaskList) (stop func()) {
	h.t.Helper()
	cfg := h.processorConfig()
	cfg.Retry = fastRetry
	p, err := peonify.New(cfg)
	if err != nil {
		h.t.Fatalf("peonify.New: %v", err)
	}
	if err := p.AddTaskList(tl); err != nil {
		h.t.Fatalf("AddTaskList: %v", err)
	}
	if err := p.AddStream(h.s); err != nil {
		h.t.Fatalf("AddStream: %v", err)
	}
	ctx, cancel := context.WithCancel(h.ctx())
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-runErr:
				if err != nil {
					h.t.Errorf("Processor.Run returned %v after its context was cancelled, want nil", err)
				}
			case <-time.After(h.f.Timeout + h.f.Timeout):
				h.t.Errorf("Processor.Run did not return within %s of its context being cancelled", 2*h.f.Timeout)
			}
		})
	}
	h.t.Cleanup(stop)
	return stop
}

// lowerContains reports whether s contains sub, ignoring case.
func lowerContains(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// testUnsupportedInHandler runs, for a stream that is not a
// peonify.Tracker or not a peonify.WorkflowStore, a real peonify.Processor
// whose handler calls what the stream lacks: peonify.SetResult and
// ReportProgress must fail with an error wrapping errors.ErrUnsupported on
// a stream that is not a Tracker, and peonify.Spawn on one that is not a
// WorkflowStore, each saying why (not a bare ErrUnsupported); and the task
// must still succeed, once, when its handler returns nil.
func testUnsupportedInHandler(h *harness) {
	_, isTracker := peonify.As[peonify.Tracker](h.s)
	_, isWorkflows := peonify.As[peonify.WorkflowStore](h.s)
	if isTracker && isWorkflows {
		h.t.Skipf("%T is a peonify.Tracker and a peonify.WorkflowStore: nothing is unsupported", h.s)
	}
	type call struct {
		name string
		err  error
	}
	tk := h.newTask()
	var (
		mu   sync.Mutex
		runs int
	)
	calls := make(chan []call, 10)
	stop := h.runProcessor(peonify.TaskList{tk.Type: peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
		mu.Lock()
		runs++
		mu.Unlock()
		var got []call
		if !isTracker {
			got = append(got,
				call{"peonify.SetResult", peonify.SetResult(ctx, []byte(`"peonifytest"`))},
				call{"peonify.ReportProgress", peonify.ReportProgress(ctx, 0.5, "peonifytest: half way")})
		}
		if !isWorkflows {
			got = append(got, call{"peonify.Spawn", peonify.Spawn(ctx, &peonify.Task{Type: tk.Type + ".child"})})
		}
		calls <- got
		return nil
	})})
	defer stop()
	h.enqueue(tk)
	select {
	case got := <-calls:
		for _, c := range got {
			switch {
			case !errors.Is(c.err, errors.ErrUnsupported):
				h.t.Errorf("%s in a handler of a task from %T returned %v, want an error wrapping errors.ErrUnsupported", c.name, h.s, c.err)
			case c.err.Error() == errors.ErrUnsupported.Error():
				h.t.Errorf("%s returned a bare errors.ErrUnsupported: wrap it with why the stream cannot do it", c.name)
			}
		}
	case <-time.After(h.f.Timeout):
		h.t.Fatalf("the processor did not run task %s within %s", tk.ID, h.f.Timeout)
	}
	h.pause(h.f.Settle + h.f.Lease)
	mu.Lock()
	n := runs
	mu.Unlock()
	if n != 1 {
		h.t.Errorf("the task whose handler returned nil after the unsupported calls ran %d times, want once: their errors must not fail it", n)
	}
}
