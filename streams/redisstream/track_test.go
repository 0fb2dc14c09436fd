package redisstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestMaxReasonLen: the scripts cut reasons to peonify.MaxReasonLen.
func TestMaxReasonLen(t *testing.T) {
	if !strings.Contains(workflowLib, fmt.Sprintf("WF.MAXREASON = %d\n", peonify.MaxReasonLen)) {
		t.Errorf("workflowLib's WF.MAXREASON is not peonify.MaxReasonLen (%d)", peonify.MaxReasonLen)
	}
}

func TestResultRetentionChecked(t *testing.T) {
	if err := (Config{ResultRetention: -time.Second}).Validate(); err == nil || !strings.Contains(err.Error(), "positive duration") {
		t.Errorf("Validate of a negative ResultRetention = %v, want an error asking for a positive duration", err)
	}
	s := newTestStream(t, testClient(t), Config{})
	if s.cfg.ResultRetention != 24*time.Hour {
		t.Errorf("default ResultRetention = %s, want 24h", s.cfg.ResultRetention)
	}
}

// keysUnder counts the keys whose name starts with prefix.
func keysUnder(t *testing.T, s *Stream, prefix string) int {
	t.Helper()
	keys, err := s.client.Keys(streamtest.Context(t), prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// bigWorkflow returns a workflow of n tasks: a root, n-2 tasks that depend
// on it, and a sink that depends on all of those.
func bigWorkflow(id string, n int) *peonify.Workflow {
	w := &peonify.Workflow{ID: id}
	root := w.Add(&peonify.Task{ID: id + "-root", Type: "root"})
	mid := make([]*peonify.Task, n-2)
	for i := range mid {
		mid[i] = w.Add(&peonify.Task{ID: fmt.Sprintf("%s-%05d", id, i), Type: "mid", Payload: []byte(`{"i":1}`)}, root)
	}
	w.Add(&peonify.Task{ID: id + "-sink", Type: "sink"}, mid...)
	return w
}

// TestEnqueueWorkflowAtomic10000 enqueues a workflow of 10,000 tasks whose
// last task is stored already: nothing of it is stored. Without the
// duplicate it is stored in one script run, and runs to the end: the
// root's ack releases 9,998 tasks, whose acks release the sink.
func TestEnqueueWorkflowAtomic10000(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{})
	ctx := streamtest.Context(t)
	const n = 10000
	if err := s.Enqueue(ctx, &peonify.Task{ID: "big-sink", Type: "sink"}); err != nil {
		t.Fatal(err)
	}
	err := s.EnqueueWorkflow(ctx, bigWorkflow("big", n))
	var de *peonify.DuplicateError
	if !errors.As(err, &de) || !slices.Equal(de.IDs, []string{"big-sink"}) {
		t.Fatalf("EnqueueWorkflow with a stored task = %v, want a *peonify.DuplicateError naming big-sink", err)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 1})
	for _, k := range []string{s.keys.Task, s.keys.Dependents, s.keys.Workflow, s.keys.Waiting, s.keys.Seen + "big-0"} {
		if got := keysUnder(t, s, k); got != 0 {
			t.Errorf("%d keys %s* after a refused EnqueueWorkflow, want none", got, k)
		}
	}

	if _, err := s.Delete(ctx, "big-sink"); err != nil {
		t.Fatal(err)
	}
	_ = c.Del(ctx, s.keys.Seen+"big-sink").Err() // its dedup window
	start := time.Now()
	if err := s.EnqueueWorkflow(ctx, bigWorkflow("big", n)); err != nil {
		t.Fatal(err)
	}
	t.Logf("EnqueueWorkflow of %d tasks took %s", n, time.Since(start).Round(time.Millisecond))
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 1, peonify.StateWaiting: n - 1})
	err = s.EnqueueWorkflow(ctx, &peonify.Workflow{ID: "big", Tasks: []*peonify.Task{{Type: "other"}}})
	if !errors.As(err, &de) || !slices.Equal(de.IDs, []string{"big"}) {
		t.Errorf("EnqueueWorkflow of a stored workflow ID = %v, want a *peonify.DuplicateError naming it", err)
	}

	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 1 || ds[0].Task.ID != "big-root" || ds[0].Task.Workflow != "big" {
		t.Fatalf("Poll = %v, want the root alone", ids(ds))
	}
	start = time.Now()
	ack(t, s, ds...)
	t.Logf("the ack that released %d tasks took %s", n-2, time.Since(start).Round(time.Millisecond))
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: n - 2, peonify.StateWaiting: 1, peonify.StateDone: 1})
	for got := 0; got < n-2; {
		ds := streamtest.Poll(t, s, 1000)
		if len(ds) == 0 {
			t.Fatalf("Poll returned nothing after %d of %d released tasks", got, n-2)
		}
		got += len(ds)
		ack(t, s, ds...)
	}
	ds = streamtest.Poll(t, s, 10)
	if len(ds) != 1 || ds[0].Task.ID != "big-sink" || len(ds[0].Task.Parents) != n-2 {
		t.Fatalf("Poll after the fan-in = %v, want the sink with its %d parents", ids(ds), n-2)
	}
	ack(t, s, ds...)
	info, err := s.GetWorkflow(ctx, "big")
	if err != nil || info.State != peonify.WorkflowSucceeded || info.Counts[peonify.StateDone] != n || len(info.Tasks) != peonify.MaxWorkflowTasksListed {
		t.Errorf("GetWorkflow = %s %v (%d tasks listed), %v; want succeeded with %d done", info.State, info.Counts, len(info.Tasks), err, n)
	}
}

// TestStaleAckDoesNotRelease: the ack of a claim whose lease ended and
// that another stream claimed since neither finishes the task nor
// releases its dependent; the current claim's ack does.
func TestStaleAckDoesNotRelease(t *testing.T) {
	c := testClient(t)
	s1 := newTestStream(t, c, Config{Lease: 200 * time.Millisecond, RescueInterval: 10 * time.Millisecond})
	s2 := newTestStream(t, c, Config{Prefix: s1.cfg.Prefix, Lease: 200 * time.Millisecond, RescueInterval: 10 * time.Millisecond})
	ctx := streamtest.Context(t)
	w := &peonify.Workflow{}
	a := w.Add(&peonify.Task{Type: "a"})
	b := w.Add(&peonify.Task{Type: "b"}, a)
	if err := s1.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	old := streamtest.Poll(t, s1, 1)
	time.Sleep(250 * time.Millisecond)
	cur := streamtest.PollUntil(t, s2, 1, 5*time.Second)
	if cur[0].Task.ID != a.ID {
		t.Fatalf("second claim is of %s, want %s", cur[0].Task.ID, a.ID)
	}
	old[0].Result = []byte("stale")
	_ = s1.Ack(ctx, old...)
	if info, err := s1.Get(ctx, b.ID); err != nil || info.State != peonify.StateWaiting {
		t.Fatalf("dependent after a stale ack: %s, %v; want it waiting", info.State, err)
	}
	if info, _ := s1.Get(ctx, a.ID); info.State != peonify.StateRunning {
		t.Errorf("parent after a stale ack: %s, want it running", info.State)
	}
	cur[0].Result = []byte("fresh")
	ack(t, s2, cur...)
	if info, err := s1.Get(ctx, b.ID); err != nil || info.State != peonify.StatePending {
		t.Errorf("dependent after the current ack: %s, %v; want it pending", info.State, err)
	}
	if r, _ := s1.Results(ctx, a.ID); string(r[a.ID]) != "fresh" {
		t.Errorf("Results = %q, want the current claim's result", r)
	}
}

// TestCascade: a dead parent cancels its dependents, and theirs, with a
// reason naming it; a dependent that allows failed parents runs. A
// cancelled running task's claim ends at once: Extend and SetProgress
// report it cancelled, and its Ack changes nothing.
func TestCascade(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{})
	ctx := streamtest.Context(t)
	w := &peonify.Workflow{ID: "wf-cascade"}
	a := w.Add(&peonify.Task{ID: "a", Type: "a"})
	b := w.Add(&peonify.Task{ID: "b", Type: "b"}, a)
	cc := w.Add(&peonify.Task{ID: "c", Type: "c"}, b)
	d := w.Add(&peonify.Task{ID: "d", Type: "d", AllowFailedParents: true}, a)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	ds := streamtest.Poll(t, s, 10)
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "boom"}); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{b.ID: "parent a dead: boom", cc.ID: "parent b cancelled: parent a dead: boom"} {
		info, err := s.Get(ctx, id)
		if err != nil || info.State != peonify.StateCancelled || info.LastError != want {
			t.Errorf("Get(%s) = %s %q, %v; want cancelled with %q", id, info.State, info.LastError, err, want)
		}
	}
	ds = streamtest.Poll(t, s, 10)
	if len(ds) != 1 || ds[0].Task.ID != d.ID || !ds[0].Task.AllowFailedParents {
		t.Fatalf("Poll after the dead parent = %v, want d, which allows failed parents", ids(ds))
	}
	if err := s.SetProgress(ctx, ds[0], peonify.Progress{Fraction: 0.5, Message: "half"}); err != nil {
		t.Fatal(err)
	}
	if info, _ := s.Get(ctx, d.ID); info.Progress.Fraction != 0.5 || info.Progress.Message != "half" || info.Progress.UpdatedAt.IsZero() {
		t.Errorf("Progress of the running task = %+v", info.Progress)
	}
	if n, err := s.Cancel(ctx, d.ID, a.ID, "unknown"); n != 1 || err != nil {
		t.Errorf("Cancel(running, dead, unknown) = %d, %v; want 1", n, err)
	}
	if _, err := s.Extend(ctx, ds[0], time.Second); !errors.Is(err, peonify.ErrCancelled) {
		t.Errorf("Extend of the cancelled claim = %v, want peonify.ErrCancelled", err)
	}
	if err := s.SetProgress(ctx, ds[0], peonify.Progress{Fraction: 1}); !errors.Is(err, peonify.ErrCancelled) {
		t.Errorf("SetProgress of the cancelled claim = %v, want peonify.ErrCancelled", err)
	}
	ds[0].Result = []byte("late")
	_ = s.Ack(ctx, ds...)
	info, err := s.Get(ctx, d.ID)
	if err != nil || info.State != peonify.StateCancelled || info.Result != nil || info.Progress.Message != "half" {
		t.Errorf("after the stale ack: %s result %q progress %+v, %v; want cancelled, no result, its last progress", info.State, info.Result, info.Progress, err)
	}
	wf, err := s.GetWorkflow(ctx, w.ID)
	if err != nil || wf.State != peonify.WorkflowFailed || wf.Counts[peonify.StateDead] != 1 || wf.Counts[peonify.StateCancelled] != 3 {
		t.Errorf("GetWorkflow = %s %v, %v; want failed, 1 dead and 3 cancelled", wf.State, wf.Counts, err)
	}
	if n, err := s.Purge(ctx, peonify.StateCancelled); n != 3 || err != nil {
		t.Errorf("Purge(cancelled) = %d, %v; want 3", n, err)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StateDead: 1})
}

// TestSpawnFenced: Spawn of the current claim adds the children, which
// the spawning task's dependent then waits for too; a second Spawn of the
// same children stores nothing more; a Spawn of a claim that is no
// longer current stores nothing.
func TestSpawnFenced(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{Lease: 200 * time.Millisecond, RescueInterval: 10 * time.Millisecond})
	ctx := streamtest.Context(t)
	w := &peonify.Workflow{ID: "wf-spawn"}
	p := w.Add(&peonify.Task{ID: "p", Type: "p"})
	q := w.Add(&peonify.Task{ID: "q", Type: "q"}, p)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	ds := streamtest.Poll(t, s, 10)
	children := func() []*peonify.Task {
		c1 := &peonify.Task{ID: "p.c1", Type: "child", Workflow: w.ID}
		c2 := &peonify.Task{ID: "p.c2", Type: "child", Workflow: w.ID, Parents: []string{"p.c1"}}
		return []*peonify.Task{c1, c2}
	}
	for range 2 {
		if err := s.Spawn(ctx, ds[0], children()...); err != nil {
			t.Fatal(err)
		}
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StateRunning: 1, peonify.StatePending: 1, peonify.StateWaiting: 2})
	if on, _ := c.HGet(ctx, s.keys.Task+q.ID, "waiting_on").Int(); on != 3 {
		t.Errorf("the dependent waits for %d tasks, want 3: its parent and the two children", on)
	}
	info, _ := s.Get(ctx, q.ID)
	if !slices.Equal(info.Task.Parents, []string{"p", "p.c1", "p.c2"}) {
		t.Errorf("the dependent's parents are %q, want the children added", info.Task.Parents)
	}

	time.Sleep(250 * time.Millisecond)
	again := streamtest.PollUntil(t, s, 10, 5*time.Second) // the parent's lease ended: claimed again
	stale := &peonify.Task{ID: "p.c3", Type: "child", Workflow: w.ID}
	if err := s.Spawn(ctx, ds[0], stale); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("Spawn of a stale claim = %v, want peonify.ErrLeaseLost", err)
	}
	if _, err := s.Get(ctx, stale.ID); !errors.Is(err, peonify.ErrNotFound) {
		t.Errorf("the child of a stale Spawn was stored: %v", err)
	}

	// Everything runs to the end, the dependent last.
	var order []string
	for len(again) > 0 {
		for _, d := range again {
			order = append(order, d.Task.ID)
		}
		ack(t, s, again...)
		again = streamtest.Poll(t, s, 10)
	}
	sort.Strings(order[:2])
	if !slices.Equal(order, []string{"p", "p.c1", "p.c2", "q"}) {
		t.Errorf("ran %v, want p and p.c1, then p.c2, then q", order)
	}
}

// TestResultRetentionTrimmed: a done task with a result is kept for
// ResultRetention, then reported no more, and removed by a poll.
func TestResultRetentionTrimmed(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{ResultRetention: 200 * time.Millisecond})
	ctx := streamtest.Context(t)
	tk := task("t")
	plain := task("t")
	if err := s.Enqueue(ctx, tk, plain); err != nil {
		t.Fatal(err)
	}
	ds := streamtest.Poll(t, s, 10)
	ds[0].Result = []byte("42")
	ack(t, s, ds...)
	if info, err := s.Get(ctx, tk.ID); err != nil || info.State != peonify.StateDone || string(info.Result) != "42" {
		t.Fatalf("Get of a done task with a result = %s %q, %v", info.State, info.Result, err)
	}
	if _, err := s.Get(ctx, plain.ID); !errors.Is(err, peonify.ErrNotFound) {
		t.Errorf("Get of a done task without a result = %v, want ErrNotFound: it is not kept", err)
	}
	time.Sleep(250 * time.Millisecond)
	if r, err := s.Results(ctx, tk.ID); len(r) != 0 || err != nil {
		t.Errorf("Results after the retention = %q, %v; want none", r, err)
	}
	if _, err := s.Get(ctx, tk.ID); !errors.Is(err, peonify.ErrNotFound) {
		t.Errorf("Get after the retention = %v, want ErrNotFound", err)
	}
	streamtest.WaitFor(t, 5*time.Second, "the expired task to be removed", func() bool {
		_, _ = s.Poll(ctx, 1) // runs the trim, at most every 5ms
		time.Sleep(10 * time.Millisecond)
		return keysUnder(t, s, s.keys.Task) == 0 && c.ZCard(ctx, s.keys.Done).Val() == 0 && c.HLen(ctx, s.keys.Tasks).Val() == 0
	})
}

// TestWaitWokenByAnotherStream: a Wait is woken by the ack of another
// Stream, on another client (another process), through the queue's
// channel, well before its safety re-check.
func TestWaitWokenByAnotherStream(t *testing.T) {
	waiter := newTestStream(t, testClient(t), Config{})
	worker := newTestStream(t, testClient(t), Config{Prefix: waiter.cfg.Prefix})
	ctx := streamtest.Context(t)
	tk := task("t")
	if err := worker.Enqueue(ctx, tk); err != nil {
		t.Fatal(err)
	}
	type res struct {
		info peonify.TaskInfo
		err  error
		at   time.Time
	}
	ch := make(chan res, 1)
	go func() {
		info, err := waiter.Wait(ctx, tk.ID)
		ch <- res{info, err, time.Now()}
	}()
	time.Sleep(100 * time.Millisecond) // Wait is subscribed and waiting
	ds := streamtest.Poll(t, worker, 1)
	ds[0].Result = []byte("ok")
	acked := time.Now()
	ack(t, worker, ds...)
	select {
	case r := <-ch:
		if r.err != nil || r.info.State != peonify.StateDone || string(r.info.Result) != "ok" {
			t.Errorf("Wait = %s %q, %v; want done with the result", r.info.State, r.info.Result, r.err)
		}
		if took := r.at.Sub(acked); took > waitRecheck/2 {
			t.Errorf("Wait returned %s after the ack: it was not woken by the notification", took)
		} else {
			t.Logf("Wait returned %s after another stream's ack", took.Round(time.Microsecond))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return")
	}

	// A task done without a result is not kept: its Wait returns
	// ErrNotFound as soon as it is acked.
	plain := task("t")
	if err := worker.Enqueue(ctx, plain); err != nil {
		t.Fatal(err)
	}
	go func() {
		info, err := waiter.Wait(ctx, plain.ID)
		ch <- res{info, err, time.Now()}
	}()
	time.Sleep(100 * time.Millisecond)
	ds = streamtest.Poll(t, worker, 1)
	acked = time.Now()
	ack(t, worker, ds...)
	select {
	case r := <-ch:
		if !errors.Is(r.err, peonify.ErrNotFound) || r.at.Sub(acked) > waitRecheck/2 {
			t.Errorf("Wait of a task acked without a result = %v after %s, want ErrNotFound at once", r.err, r.at.Sub(acked))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return")
	}
}

// TestWorkflowUnderLimits: a task released by its parent's ack is claimed
// through the limited claim, and a waiting task does not hold its key
// under an ordered limit.
func TestWorkflowUnderLimits(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{})
	if err := s.SetLimits([]peonify.Limit{{PerKey: true, Concurrency: 1, Ordered: true}}); err != nil {
		t.Fatal(err)
	}
	ctx := streamtest.Context(t)
	w := &peonify.Workflow{}
	a := w.Add(&peonify.Task{Type: "a", Key: "k1"})
	b := w.Add(&peonify.Task{Type: "b", Key: "k2"}, a)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	other := &peonify.Task{Type: "c", Key: "k2"}
	if err := s.Enqueue(ctx, other); err != nil {
		t.Fatal(err)
	}
	ds := streamtest.Poll(t, s, 10)
	if got := ids(ds); len(got) != 2 || !slices.Contains(got, a.ID) || !slices.Contains(got, other.ID) {
		t.Fatalf("Poll = %v, want %s and %s: the waiting task does not hold key k2", got, a.ID, other.ID)
	}
	var da peonify.Delivery
	for _, d := range ds {
		if d.Task.ID == a.ID {
			da = d
		}
	}
	ack(t, s, da)
	if got := streamtest.Poll(t, s, 10); len(got) != 0 {
		t.Errorf("Poll = %v while k2's task runs, want nothing: the released task waits for its key", ids(got))
	}
	for _, d := range ds {
		if d.Task.ID == other.ID {
			ack(t, s, d)
		}
	}
	if got := streamtest.Poll(t, s, 10); len(got) != 1 || got[0].Task.ID != b.ID {
		t.Errorf("Poll = %v, want the released task", ids(got))
	}
}

// TestChainLatency runs a 10-step chain on a processor and reports the
// time per step: a release wakes the poller as an enqueue does.
func TestChainLatency(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{})
	const steps = 10
	done := make(chan time.Time, steps)
	stop := runProcessor(t, s, peonify.Config{}, peonify.TaskList{
		"step": peonify.HandlerFunc(func(ctx context.Context, tk *peonify.Task) error {
			done <- time.Now()
			return nil
		}),
	})
	defer stop()
	ctx := streamtest.Context(t)
	time.Sleep(100 * time.Millisecond) // the processor is idle
	w := streamtest.Chain("step", steps)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	var at []time.Time
	for range steps {
		select {
		case ts := <-done:
			at = append(at, ts)
		case <-time.After(10 * time.Second):
			t.Fatalf("the chain stopped after %d steps", len(at))
		}
	}
	gaps := make([]time.Duration, 0, steps-1)
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]))
	}
	slices.Sort(gaps)
	p50 := gaps[len(gaps)/2]
	t.Logf("chain of %d steps: p50 %s per step, max %s", steps, p50, gaps[len(gaps)-1])
	if p50 > 50*time.Millisecond {
		t.Errorf("p50 per step %s: a released task is not picked up at once", p50)
	}

	// The store's part of a step, without the processor's batching of
	// acks: the ack that releases the next step, and the poll that claims
	// it.
	w = streamtest.Chain("direct", steps)
	direct := newTestStream(t, c, Config{})
	if err := direct.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	ds := streamtest.Poll(t, direct, 1)
	gaps = gaps[:0]
	for range steps - 1 {
		start := time.Now()
		ack(t, direct, ds...)
		if ds = streamtest.Poll(t, direct, 1); len(ds) != 1 {
			t.Fatal("the next step was not released by the ack")
		}
		gaps = append(gaps, time.Since(start))
	}
	slices.Sort(gaps)
	t.Logf("Ack and Poll of a chain step: p50 %s, max %s", gaps[len(gaps)/2], gaps[len(gaps)-1])
}

// TestWorkflowLabel: a task enqueued on its own with a Workflow is a task
// of that workflow, kept when done.
func TestWorkflowLabel(t *testing.T) {
	s := newTestStream(t, testClient(t), Config{})
	ctx := streamtest.Context(t)
	tk := &peonify.Task{Type: "t", Workflow: "label"}
	if err := s.Enqueue(ctx, tk); err != nil {
		t.Fatal(err)
	}
	ds := streamtest.Poll(t, s, 1)
	if ds[0].Task.Workflow != "label" {
		t.Errorf("delivered with Workflow %q", ds[0].Task.Workflow)
	}
	ack(t, s, ds...)
	info, err := s.GetWorkflow(ctx, "label")
	if err != nil || info.State != peonify.WorkflowSucceeded || len(info.Tasks) != 1 || info.Tasks[0].Task.ID != tk.ID {
		t.Errorf("GetWorkflow = %+v, %v; want the task, done", info, err)
	}
	err = s.EnqueueWorkflow(ctx, &peonify.Workflow{ID: "label", Tasks: []*peonify.Task{{Type: "t"}}})
	if !errors.Is(err, peonify.ErrDuplicate) {
		t.Errorf("EnqueueWorkflow of the label's ID = %v, want ErrDuplicate", err)
	}
}

// TestCancelRunningFreesPermit: a running task cancelled under a limit
// frees its permit at once: the next task of its key is claimed.
func TestCancelRunningFreesPermit(t *testing.T) {
	s := newTestStream(t, testClient(t), Config{})
	if err := s.SetLimits([]peonify.Limit{{PerKey: true, Concurrency: 1}}); err != nil {
		t.Fatal(err)
	}
	ctx := streamtest.Context(t)
	a, b := &peonify.Task{Type: "t", Key: "k"}, &peonify.Task{Type: "t", Key: "k"}
	if err := s.Enqueue(ctx, a, b); err != nil {
		t.Fatal(err)
	}
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 1 || ds[0].Task.ID != a.ID {
		t.Fatalf("Poll = %v, want %s alone", ids(ds), a.ID)
	}
	if got := streamtest.Poll(t, s, 10); len(got) != 0 {
		t.Fatalf("Poll = %v while the key's permit is held", ids(got))
	}
	if n, err := s.Cancel(ctx, a.ID); n != 1 || err != nil {
		t.Fatalf("Cancel = %d, %v", n, err)
	}
	if got := streamtest.Poll(t, s, 10); len(got) != 1 || got[0].Task.ID != b.ID {
		t.Errorf("Poll after cancelling the running task = %v, want %s", ids(got), b.ID)
	}
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeFailed}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("Nack of the cancelled claim = %v, want ErrLeaseLost", err)
	}
	if info, _ := s.Get(ctx, a.ID); info.State != peonify.StateCancelled || info.LastError != "cancelled by request" {
		t.Errorf("Get = %s %q, want cancelled by request", info.State, info.LastError)
	}
}
