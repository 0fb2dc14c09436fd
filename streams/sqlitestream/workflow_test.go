package sqlitestream

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// diamond enqueues the workflow wf: a, then b and c after a, then d after
// b and c.
func diamond(t testing.TB, s *Stream, wf string) {
	t.Helper()
	w := &peonify.Workflow{ID: wf}
	a := w.Add(&peonify.Task{ID: wf + "-a", Type: "test"})
	b := w.Add(&peonify.Task{ID: wf + "-b", Type: "test"}, a)
	c := w.Add(&peonify.Task{ID: wf + "-c", Type: "test"}, a)
	w.Add(&peonify.Task{ID: wf + "-d", Type: "test"}, b, c)
	if err := s.EnqueueWorkflow(context.Background(), w); err != nil {
		t.Fatalf("enqueue workflow %s: %v", wf, err)
	}
}

func wantState(t testing.TB, s *Stream, id string, want peonify.State) peonify.TaskInfo {
	t.Helper()
	info := get(t, s, id)
	if info.State != want {
		t.Fatalf("task %s is %s (last error %q), want %s", id, info.State, info.LastError, want)
	}
	return info
}

func ackResult(t testing.TB, s *Stream, d peonify.Delivery, result string) {
	t.Helper()
	d.Result = []byte(result)
	ack(t, s, d)
}

func TestResultKept(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx := context.Background()
	enqueue(t, s, task("plain"), task("res"), task("empty"))
	ds := poll(t, s, 3)
	for i := range ds {
		switch ds[i].Task.ID {
		case "res":
			ds[i].Result = []byte(`{"n":1}`)
		case "empty":
			ds[i].Result = []byte{}
		}
	}
	ack(t, s, ds...)
	if _, err := s.Get(ctx, "plain"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("a task acked without a result is kept: Get = %v", err)
	}
	if info := wantState(t, s, "res", peonify.StateDone); string(info.Result) != `{"n":1}` || info.Attempts != 1 {
		t.Fatalf("task with a result: %+v", info)
	}
	if info := wantState(t, s, "empty", peonify.StateDone); info.Result == nil || len(info.Result) != 0 {
		t.Fatalf("task with an empty result has Result %#v, want empty and not nil", info.Result)
	}
	res, err := s.Results(ctx, "res", "empty", "plain", "unknown")
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || string(res["res"]) != `{"n":1}` || res["empty"] == nil || len(res["empty"]) != 0 {
		t.Fatalf("Results = %q, want res and an empty one", res)
	}
	if infos := list(t, s, peonify.ListOptions{State: peonify.StateDone}); len(infos) != 2 || string(infos[1].Result) != `{"n":1}` {
		t.Fatalf("List(done) = %+v", infos)
	}
	// Kept done tasks keep their ID taken.
	if err := s.Enqueue(ctx, task("res")); !errors.Is(err, peonify.ErrDuplicate) {
		t.Fatalf("enqueue of a kept task's ID = %v, want ErrDuplicate", err)
	}
}

// TestPlainAckStatements: an ack of a task without a result and outside
// workflows is the one statement it always was (KeepDone or not); the
// release of dependents costs the tasks of workflows only, and one
// statement more for a task that has none.
func TestPlainAckStatements(t *testing.T) {
	for _, keep := range []time.Duration{0, time.Hour} {
		s := openTest(t, Config{KeepDone: keep}, nil)
		enqueue(t, s, task("a"))
		ack(t, s, pollOne(t, s))
		if n := s.w.lastStmts.Load(); n != 1 {
			t.Fatalf("a plain ack (KeepDone %v) ran %d statements, want 1", keep, n)
		}
	}
	s := openTest(t, Config{}, nil)
	w := &peonify.Workflow{}
	w.Add(&peonify.Task{Type: "test"})
	if err := s.EnqueueWorkflow(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	ack(t, s, pollOne(t, s))
	if n := s.w.lastStmts.Load(); n != 2 {
		t.Fatalf("the ack of a workflow task without dependents ran %d statements, want 2", n)
	}
	diamond(t, s, "w")
	ack(t, s, pollOne(t, s))
	// The ack, finding and forgetting the dependents, counting each off
	// (2 each), and releasing those ready (2).
	if n := s.w.lastStmts.Load(); n != 3+2*2+2 {
		t.Fatalf("the ack of a workflow task with 2 dependents ran %d statements, want 9", n)
	}
}

func TestConfigResultRetention(t *testing.T) {
	err := Config{ResultRetention: -time.Second}.Validate()
	var ce *peonify.ConfigError
	if !errors.As(err, &ce) || ce.Field != "sqlitestream.Config.ResultRetention" || !strings.Contains(err.Error(), "positive") {
		t.Fatalf("Validate of a negative ResultRetention = %v", err)
	}
	if got := (Config{}).withDefaults().ResultRetention; got != 24*time.Hour {
		t.Fatalf("default ResultRetention = %v, want 24h", got)
	}
}

// TestResultRetention: done tasks with a result, or of a workflow, are
// deleted by the cleanup once ResultRetention has passed; KeepDone, when
// longer, keeps them longer.
func TestResultRetention(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{ResultRetention: time.Hour, KeepDone: time.Minute}, clk)
	ctx := context.Background()
	runCleanup := func() {
		t.Helper()
		if err := s.w.do(ctx, func(tx *wtx) error { _, err := cleanup(tx, s.cfg); return err }); err != nil {
			t.Fatal(err)
		}
	}
	enqueue(t, s, task("res"), task("plain"))
	ds := poll(t, s, 2)
	for i := range ds {
		if ds[i].Task.ID == "res" {
			ds[i].Result = []byte("r")
		}
	}
	ack(t, s, ds...)
	w := &peonify.Workflow{ID: "wf"}
	w.Add(&peonify.Task{ID: "wf-a", Type: "test"})
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	ack(t, s, pollOne(t, s))
	wantCounts(t, s, map[peonify.State]int{peonify.StateDone: 3})

	clk.Advance(time.Minute)
	runCleanup()
	wantCounts(t, s, map[peonify.State]int{peonify.StateDone: 2}) // plain went after KeepDone
	clk.Advance(time.Hour - time.Minute - time.Second)
	runCleanup()
	wantCounts(t, s, map[peonify.State]int{peonify.StateDone: 2})
	clk.Advance(time.Second)
	runCleanup()
	wantCounts(t, s, nil)
	if _, err := s.GetWorkflow(ctx, "wf"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("GetWorkflow after the cleanup = %v, want ErrNotFound", err)
	}

	// The cleanup is bounded: it deletes at most 1000 rows a transaction.
	var tasks []*peonify.Task
	for i := range 1500 {
		tasks = append(tasks, task(fmt.Sprint("t", i)))
	}
	enqueue(t, s, tasks...)
	for {
		ds := poll(t, s, 500)
		if len(ds) == 0 {
			break
		}
		for i := range ds {
			ds[i].Result = []byte("x")
		}
		ack(t, s, ds...)
	}
	clk.Advance(time.Hour)
	var more bool
	if err := s.w.do(ctx, func(tx *wtx) (err error) { more, err = cleanup(tx, s.cfg); return err }); err != nil {
		t.Fatal(err)
	}
	if !more || counts(t, s)[peonify.StateDone] != 500 {
		t.Fatalf("first cleanup: more = %v, %d done left; want true, 500", more, counts(t, s)[peonify.StateDone])
	}
}

func TestEnqueueWorkflowStates(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{}, clk)
	ctx := context.Background()
	w := &peonify.Workflow{}
	a := w.Add(&peonify.Task{Type: "test", Key: "k", Priority: 2})
	later := w.Add(&peonify.Task{Type: "test", RunAt: clk.Now().Add(time.Hour)})
	b := w.Add(&peonify.Task{Type: "test", AllowFailedParents: true}, a, later)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	if w.ID == "" || a.Workflow != w.ID || b.Workflow != w.ID {
		t.Fatalf("EnqueueWorkflow did not fill the workflow IDs: %q %q %q", w.ID, a.Workflow, b.Workflow)
	}
	wantState(t, s, a.ID, peonify.StatePending)
	wantState(t, s, later.ID, peonify.StateScheduled)
	info := wantState(t, s, b.ID, peonify.StateWaiting)
	if info.Task.Workflow != w.ID || !slices.Equal(info.Task.Parents, []string{a.ID, later.ID}) || !info.Task.AllowFailedParents {
		t.Fatalf("waiting task: %+v", info.Task)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 1, peonify.StateScheduled: 1, peonify.StateWaiting: 1})
	if got := list(t, s, peonify.ListOptions{State: peonify.StateWaiting}); len(got) != 1 || got[0].Task.ID != b.ID {
		t.Fatalf("List(waiting) = %s", ids(got))
	}
	d := pollOne(t, s)
	if d.Task.ID != a.ID || d.Task.Workflow != w.ID || d.Task.Key != "k" {
		t.Fatalf("polled %+v", d.Task)
	}
	ack(t, s, d)
	wantState(t, s, b.ID, peonify.StateWaiting) // later has not run
	clk.Advance(time.Hour)
	d = pollOne(t, s)
	ack(t, s, d)
	d = pollOne(t, s)
	if d.Task.ID != b.ID || !slices.Equal(d.Task.Parents, []string{a.ID, later.ID}) || !d.Task.AllowFailedParents {
		t.Fatalf("polled %+v, want %s with its parents", d.Task, b.ID)
	}
	// A plain Enqueue may label a task with a workflow, but not give it parents.
	enqueue(t, s, &peonify.Task{ID: "labelled", Type: "test", Workflow: "label"})
	if info := get(t, s, "labelled"); info.Task.Workflow != "label" {
		t.Fatalf("labelled task: %+v", info.Task)
	}
	if err := s.Enqueue(ctx, &peonify.Task{Type: "test", Parents: []string{"labelled"}}); err == nil {
		t.Fatal("Enqueue of a task with parents succeeded")
	}
}

// TestEnqueueWorkflowAtomic: a workflow of 10,000 tasks whose last task
// has the ID of a stored task, or whose ID is taken, stores nothing; one
// whose tasks repeat an ID is refused before the file is touched.
func TestEnqueueWorkflowAtomic(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx := context.Background()
	n := 10000
	if raceEnabled {
		n = 3000
	}
	build := func(wf, last string) *peonify.Workflow {
		w := &peonify.Workflow{ID: wf}
		root := w.Add(&peonify.Task{ID: wf + "-root", Type: "test"})
		for i := 1; i < n-1; i++ {
			w.Add(&peonify.Task{ID: fmt.Sprintf("%s-%d", wf, i), Type: "test"}, root)
		}
		w.Add(&peonify.Task{ID: last, Type: "test"}, w.Tasks[1:]...)
		return w
	}
	enqueue(t, s, task("taken"))

	var dup *peonify.DuplicateError
	err := s.EnqueueWorkflow(ctx, build("w1", "taken"))
	if !errors.As(err, &dup) || !slices.Equal(dup.IDs, []string{"taken"}) {
		t.Fatalf("EnqueueWorkflow with a stored task's ID = %v, want a DuplicateError naming it", err)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 1})
	var deps, waits int
	if err := s.db.QueryRow("SELECT (SELECT count(*) FROM peonify_deps), (SELECT count(*) FROM peonify_waiting)").Scan(&deps, &waits); err != nil {
		t.Fatal(err)
	}
	if deps != 0 || waits != 0 {
		t.Fatalf("after the failed EnqueueWorkflow: %d dependencies, %d waiting rows stored", deps, waits)
	}

	w := build("w1", "w1-last")
	w.Tasks[n/2].ID = w.Tasks[n/3].ID
	var invalid *peonify.InvalidTaskError
	if err := s.EnqueueWorkflow(ctx, w); !errors.As(err, &invalid) {
		t.Fatalf("EnqueueWorkflow with a repeated ID = %v, want an InvalidTaskError", err)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 1})

	start := time.Now()
	if err := s.EnqueueWorkflow(ctx, build("w1", "w1-last")); err != nil {
		t.Fatal(err)
	}
	t.Logf("a workflow of %d tasks (%d dependencies) enqueued in %v", n, 2*(n-2), time.Since(start))
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 2, peonify.StateWaiting: n - 1})
	if err := s.EnqueueWorkflow(ctx, build("w1", "w1-other")); !errors.As(err, &dup) || !slices.Equal(dup.IDs, []string{"w1"}) {
		t.Fatalf("EnqueueWorkflow of a stored workflow ID = %v, want a DuplicateError naming it", err)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 2, peonify.StateWaiting: n - 1})
	info, err := s.GetWorkflow(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != peonify.WorkflowRunning || info.Counts[peonify.StateWaiting] != n-1 || info.Counts[peonify.StatePending] != 1 ||
		len(info.Tasks) != peonify.MaxWorkflowTasksListed || info.CreatedAt.IsZero() {
		t.Fatalf("GetWorkflow: state %s, counts %v, %d tasks listed", info.State, info.Counts, len(info.Tasks))
	}
}

// TestEnqueueWorkflowBatched: a workflow that fails as a duplicate in a
// group commit with other operations undoes its own tasks only.
func TestEnqueueWorkflowBatched(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx := context.Background()
	enqueue(t, s, task("taken"))
	w := &peonify.Workflow{ID: "wf"}
	w.Add(&peonify.Task{ID: "fresh", Type: "test"})
	w.Add(&peonify.Task{ID: "taken", Type: "test"})
	// Run an Enqueue and the workflow in one transaction.
	errc := make(chan error, 2)
	block := make(chan struct{})
	go func() {
		errc <- s.w.do(ctx, func(*wtx) error { <-block; return nil })
	}()
	time.Sleep(20 * time.Millisecond) // the writer runs the blocking op
	go func() { errc <- s.Enqueue(ctx, task("other")) }()
	go func() { errc <- s.EnqueueWorkflow(ctx, w) }()
	time.Sleep(50 * time.Millisecond)
	close(block)
	var errs []error
	for range 3 {
		errs = append(errs, <-errc)
	}
	n := 0
	for _, err := range errs {
		if errors.Is(err, peonify.ErrDuplicate) {
			n++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if n != 1 {
		t.Fatalf("errors %v, want one duplicate", errs)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 2})
	get(t, s, "other")
	if _, err := s.Get(ctx, "fresh"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("a task of the duplicate workflow was stored: %v", err)
	}
}

// TestReleaseInAckTransaction: the release of the dependents is part of
// the ack's transaction. A trigger makes the release fail: the ack fails
// with it and leaves the parent running, claimed by the same token, and
// its dependents waiting; once it can, the same ack does both.
func TestReleaseInAckTransaction(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx := context.Background()
	diamond(t, s, "w")
	d := pollOne(t, s)
	if _, err := s.db.Exec(`CREATE TRIGGER fail_release BEFORE UPDATE OF state ON peonify_tasks
		WHEN old.state = 'waiting' AND new.state = 'pending' BEGIN SELECT RAISE(ABORT, 'release refused'); END`); err != nil {
		t.Fatal(err)
	}
	d.Result = []byte("a's result")
	if err := s.Ack(ctx, d); err == nil || !strings.Contains(err.Error(), "release refused") {
		t.Fatalf("Ack whose release fails = %v, want the trigger's error", err)
	}
	wantState(t, s, "w-a", peonify.StateRunning)
	wantState(t, s, "w-b", peonify.StateWaiting)
	if res, _ := s.Results(ctx, "w-a"); len(res) != 0 {
		t.Fatalf("the result of the failed ack was stored: %q", res)
	}
	if _, err := s.db.Exec(`DROP TRIGGER fail_release`); err != nil {
		t.Fatal(err)
	}
	ack(t, s, d)
	if info := wantState(t, s, "w-a", peonify.StateDone); string(info.Result) != "a's result" {
		t.Fatalf("result %q", info.Result)
	}
	wantState(t, s, "w-b", peonify.StatePending)
	wantState(t, s, "w-c", peonify.StatePending)
	wantState(t, s, "w-d", peonify.StateWaiting)
}

// TestStaleAckDoesNotRelease: an ack of a claim that is no longer current,
// and an ack repeated, release nothing.
func TestStaleAckDoesNotRelease(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Minute}, clk)
	diamond(t, s, "w")
	old := pollOne(t, s)
	clk.Advance(2 * time.Minute)
	cur := pollOne(t, s) // the lease ended: claimed again
	if cur.Task.ID != "w-a" || cur.Token == old.Token {
		t.Fatalf("reclaim: %+v", cur)
	}
	ack(t, s, old)
	wantState(t, s, "w-a", peonify.StateRunning)
	wantState(t, s, "w-b", peonify.StateWaiting)
	pollNone(t, s)

	ack(t, s, cur)
	ds := poll(t, s, 10)
	if len(ds) != 2 {
		t.Fatalf("polled %d tasks after the ack, want b and c", len(ds))
	}
	ack(t, s, ds[0])
	ack(t, s, ds[0]) // a duplicate ack counts d's parent once
	ack(t, s, old, cur)
	wantState(t, s, "w-d", peonify.StateWaiting)
	ack(t, s, ds[1])
	wantState(t, s, "w-d", peonify.StatePending)
	var waits int
	if err := s.db.QueryRow("SELECT count(*) FROM peonify_waiting").Scan(&waits); err != nil || waits != 0 {
		t.Fatalf("%d waiting rows left (%v)", waits, err)
	}
}

// TestReleaseWakes: the release of a dependent wakes the processor at
// once, as an Enqueue does, and a dependent scheduled for later arms the
// timer.
func TestReleaseWakes(t *testing.T) {
	s := openTest(t, Config{WatchInterval: -1}, nil)
	w := &peonify.Workflow{}
	a := w.Add(&peonify.Task{Type: "test"})
	w.Add(&peonify.Task{Type: "test"}, a)
	// Due a second from now, so that it is still not due when its
	// parent is acked, however slow a loaded machine: if it were due by
	// then, the release would be its only wake.
	w.Add(&peonify.Task{Type: "test", RunAt: time.Now().Add(time.Second)}, a)
	if err := s.EnqueueWorkflow(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	<-s.Wake()
	d := pollOne(t, s)
	select {
	case <-s.Wake():
		t.Fatal("woken before the release")
	default:
	}
	ack(t, s, d)
	select {
	case <-s.Wake():
	default:
		t.Fatal("the release did not wake the processor")
	}
	pollOne(t, s)
	select {
	case <-s.Wake():
	case <-time.After(10 * time.Second):
		t.Fatal("the dependent scheduled for later did not wake the processor")
	}
	pollOne(t, s)
}

// TestCascade: a parent that goes dead cancels its dependents, naming it,
// and theirs in turn; a dependent that allows failed parents runs once
// they have all finished.
func TestCascade(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx := context.Background()
	w := &peonify.Workflow{ID: "w"}
	a := w.Add(&peonify.Task{ID: "a", Type: "test"})
	ok := w.Add(&peonify.Task{ID: "ok", Type: "test"})
	b := w.Add(&peonify.Task{ID: "b", Type: "test"}, a, ok)
	w.Add(&peonify.Task{ID: "c", Type: "test"}, b)
	w.Add(&peonify.Task{ID: "callback", Type: "test", AllowFailedParents: true}, b, ok)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	var da, dok peonify.Delivery
	for _, d := range poll(t, s, 2) {
		if d.Task.ID == "a" {
			da = d
		} else {
			dok = d
		}
	}
	nack(t, s, da, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "boom"})
	wantState(t, s, "a", peonify.StateDead)
	if info := wantState(t, s, "b", peonify.StateCancelled); info.LastError != "parent a dead: boom" {
		t.Fatalf("b's reason = %q", info.LastError)
	}
	if info := wantState(t, s, "c", peonify.StateCancelled); info.LastError != "parent b cancelled: parent a dead: boom" {
		t.Fatalf("c's reason = %q", info.LastError)
	}
	wantState(t, s, "callback", peonify.StateWaiting) // ok runs
	ackResult(t, s, dok, "ok's")
	d := pollOne(t, s)
	if d.Task.ID != "callback" {
		t.Fatalf("polled %s, want the callback", d.Task.ID)
	}
	res, err := s.Results(ctx, d.Task.Parents...)
	if err != nil || len(res) != 1 || string(res["ok"]) != "ok's" {
		t.Fatalf("the callback's parents' results = %q, %v", res, err)
	}
	ack(t, s, d)
	info, err := s.GetWorkflow(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != peonify.WorkflowFailed || info.Counts[peonify.StateDead] != 1 || info.Counts[peonify.StateCancelled] != 2 ||
		info.Counts[peonify.StateDone] != 2 || len(info.Tasks) != 5 {
		t.Fatalf("workflow after the cascade: %s %v, %d tasks", info.State, info.Counts, len(info.Tasks))
	}
	for _, ti := range info.Tasks {
		if ti.Result != nil {
			t.Fatalf("GetWorkflow lists task %s with its result", ti.Task.ID)
		}
	}
	// Retrying the dead parent does not bring back what it cancelled.
	if n, err := s.Retry(ctx, "a"); err != nil || n != 1 {
		t.Fatalf("Retry = %d, %v", n, err)
	}
	ack(t, s, pollOne(t, s))
	wantState(t, s, "b", peonify.StateCancelled)
	pollNone(t, s)
}

// TestCascadeDeleteAndPurge: deleting or purging an unfinished parent
// cancels its dependents; deleting a finished one does not.
func TestCascadeDeleteAndPurge(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx := context.Background()
	diamond(t, s, "w")
	if n, err := s.Delete(ctx, "w-a"); err != nil || n != 1 {
		t.Fatalf("Delete = %d, %v", n, err)
	}
	if info := wantState(t, s, "w-b", peonify.StateCancelled); info.LastError != "parent w-a deleted" {
		t.Fatalf("b's reason = %q", info.LastError)
	}
	if info := wantState(t, s, "w-d", peonify.StateCancelled); !strings.HasPrefix(info.LastError, "parent w-b cancelled: ") &&
		!strings.HasPrefix(info.LastError, "parent w-c cancelled: ") {
		t.Fatalf("d's reason = %q", info.LastError)
	}
	if n, err := s.Purge(ctx, peonify.StateCancelled); err != nil || n != 3 {
		t.Fatalf("Purge(cancelled) = %d, %v", n, err)
	}

	diamond(t, s, "v")
	ack(t, s, pollOne(t, s))
	if n, err := s.Delete(ctx, "v-a"); err != nil || n != 1 { // done: released already
		t.Fatalf("Delete = %d, %v", n, err)
	}
	wantState(t, s, "v-b", peonify.StatePending)
	if n, err := s.Purge(ctx, peonify.StatePending); err != nil || n != 2 {
		t.Fatalf("Purge(pending) = %d, %v", n, err)
	}
	wantState(t, s, "v-d", peonify.StateCancelled)

	diamond(t, s, "u")
	if n, err := s.Purge(ctx, peonify.StateWaiting); err != nil || n != 3 {
		t.Fatalf("Purge(waiting) = %d, %v", n, err)
	}
	ack(t, s, pollOne(t, s)) // u-a, whose dependents are gone
	wantCounts(t, s, map[peonify.State]int{peonify.StateDone: 1, peonify.StateCancelled: 1})
	var deps, waits int
	if err := s.db.QueryRow("SELECT (SELECT count(*) FROM peonify_deps), (SELECT count(*) FROM peonify_waiting)").Scan(&deps, &waits); err != nil {
		t.Fatal(err)
	}
	if deps != 0 || waits != 0 {
		t.Fatalf("%d dependencies and %d waiting rows left", deps, waits)
	}
}

// TestCancel: waiting, pending, scheduled and running tasks are cancelled
// at once; the running one's claim then gets ErrCancelled from Extend and
// SetProgress, and its Ack and Nack change nothing.
func TestCancel(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Minute}, clk)
	ctx := context.Background()
	setLimits(t, s, peonify.Limit{Concurrency: 1})
	diamond(t, s, "w")
	enqueue(t, s, task("p"), &peonify.Task{ID: "s", Type: "test", RunAt: clk.Now().Add(time.Hour)})
	run := pollOne(t, s) // w-a
	if run.Task.ID != "w-a" {
		t.Fatalf("polled %s", run.Task.ID)
	}
	pollNone(t, s) // the concurrency limit is full
	n, err := s.Cancel(ctx, "w-a", "p", "s", "w-a", "unknown")
	if err != nil || n != 3 {
		t.Fatalf("Cancel = %d, %v; want 3", n, err)
	}
	for _, id := range []string{"w-a", "p", "s"} {
		if info := wantState(t, s, id, peonify.StateCancelled); info.LastError != cancelledByRequest {
			t.Fatalf("%s's reason = %q", id, info.LastError)
		}
	}
	if info := wantState(t, s, "w-d", peonify.StateCancelled); !strings.Contains(info.LastError, "parent w-a cancelled: cancelled by request") {
		t.Fatalf("d's reason = %q", info.LastError)
	}
	if _, err := s.Extend(ctx, run, time.Minute); !errors.Is(err, peonify.ErrCancelled) {
		t.Fatalf("Extend of the cancelled claim = %v, want ErrCancelled", err)
	}
	if err := s.SetProgress(ctx, run, peonify.Progress{Fraction: 0.5}); !errors.Is(err, peonify.ErrCancelled) {
		t.Fatalf("SetProgress of the cancelled claim = %v, want ErrCancelled", err)
	}
	if err := s.Nack(ctx, run, peonify.NackOptions{Outcome: peonify.OutcomeFailed}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("Nack of the cancelled claim = %v, want ErrLeaseLost", err)
	}
	ack(t, s, run)
	wantState(t, s, "w-a", peonify.StateCancelled)
	if n, err := s.Cancel(ctx, "w-a", "w-b"); err != nil || n != 0 {
		t.Fatalf("Cancel of finished tasks = %d, %v; want 0", n, err)
	}
	// The cancelled running task no longer holds its permit.
	enqueue(t, s, task("next"))
	d := pollOne(t, s)
	if d.Task.ID != "next" {
		t.Fatalf("polled %s", d.Task.ID)
	}
	ack(t, s, d)
	clk.Advance(2 * time.Hour)
	pollNone(t, s) // s never runs
	wantCounts(t, s, map[peonify.State]int{peonify.StateCancelled: 6})
	if got := list(t, s, peonify.ListOptions{State: peonify.StateCancelled}); len(got) != 6 {
		t.Fatalf("List(cancelled) = %s", ids(got))
	}
}

// TestCancelWorkflow cancels what has not finished, and says how much.
func TestCancelWorkflow(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx := context.Background()
	diamond(t, s, "w")
	ack(t, s, pollOne(t, s))
	d := pollOne(t, s) // b or c runs
	n, err := s.CancelWorkflow(ctx, "w")
	if err != nil || n != 3 {
		t.Fatalf("CancelWorkflow = %d, %v; want 3", n, err)
	}
	info, err := s.GetWorkflow(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != peonify.WorkflowCancelled || info.Counts[peonify.StateCancelled] != 3 || info.Counts[peonify.StateDone] != 1 {
		t.Fatalf("workflow: %s %v", info.State, info.Counts)
	}
	if _, err := s.Extend(ctx, d, time.Minute); !errors.Is(err, peonify.ErrCancelled) {
		t.Fatalf("Extend = %v, want ErrCancelled", err)
	}
	if n, err := s.CancelWorkflow(ctx, "w"); err != nil || n != 0 {
		t.Fatalf("second CancelWorkflow = %d, %v", n, err)
	}
	if _, err := s.CancelWorkflow(ctx, "nope"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("CancelWorkflow of an unknown workflow = %v, want ErrNotFound", err)
	}
	if _, err := s.GetWorkflow(ctx, "nope"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("GetWorkflow of an unknown workflow = %v, want ErrNotFound", err)
	}
}

func TestProgress(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Minute}, clk)
	ctx := context.Background()
	enqueue(t, s, task("a"))
	old := pollOne(t, s)
	at := clk.Now().Add(-time.Second)
	if err := s.SetProgress(ctx, old, peonify.Progress{Fraction: 0.25, Message: "a quarter", UpdatedAt: at}); err != nil {
		t.Fatal(err)
	}
	info := wantState(t, s, "a", peonify.StateRunning)
	if info.Progress.Fraction != 0.25 || info.Progress.Message != "a quarter" || !info.Progress.UpdatedAt.Equal(at) {
		t.Fatalf("progress = %+v", info.Progress)
	}
	clk.Advance(2 * time.Minute)
	cur := pollOne(t, s)
	if err := s.SetProgress(ctx, old, peonify.Progress{Fraction: 0.9}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("SetProgress of a stale claim = %v, want ErrLeaseLost", err)
	}
	if err := s.SetProgress(ctx, cur, peonify.Progress{Fraction: 0.5, Message: "half"}); err != nil {
		t.Fatal(err)
	}
	cur.Result = []byte("r")
	ack(t, s, cur)
	if info := wantState(t, s, "a", peonify.StateDone); info.Progress.Fraction != 0.5 || info.Progress.Message != "half" ||
		!info.Progress.UpdatedAt.Equal(clk.Now()) {
		t.Fatalf("progress after the ack = %+v", info.Progress)
	}
}

// TestSpawn: a running task's children are stored only for its current
// claim; its dependents wait for them and see them as parents; a second
// run spawning the same children stores nothing more.
func TestSpawn(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Minute}, clk)
	ctx := context.Background()
	enqueueSpawner(t, s)
	old := pollOne(t, s)
	clk.Advance(2 * time.Minute)
	cur := pollOne(t, s)
	children := func() []*peonify.Task {
		c1 := &peonify.Task{ID: "p.c1", Type: "test", Workflow: "w", EnqueuedAt: clk.Now()}
		c2 := &peonify.Task{ID: "p.c2", Type: "test", Workflow: "w", EnqueuedAt: clk.Now()}
		c3 := &peonify.Task{ID: "p.c3", Type: "test", Workflow: "w", EnqueuedAt: clk.Now(), Parents: []string{"p.c1", "p.c2"}}
		return []*peonify.Task{c1, c2, c3}
	}
	if err := s.Spawn(ctx, old, children()...); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("Spawn from a stale claim = %v, want ErrLeaseLost", err)
	}
	if _, err := s.Get(ctx, "p.c1"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("the stale Spawn stored a child: %v", err)
	}
	other := children()
	other[0].Workflow = "elsewhere"
	if err := s.Spawn(ctx, cur, other...); err == nil {
		t.Fatal("Spawn of a child of another workflow succeeded")
	}
	if err := s.Spawn(ctx, cur, children()...); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, "p.c1", peonify.StatePending)
	if info := wantState(t, s, "p.c3", peonify.StateWaiting); !slices.Equal(info.Task.Parents, []string{"p.c1", "p.c2"}) {
		t.Fatalf("c3's parents = %v", info.Task.Parents)
	}
	wantParents := []string{"p", "p.c1", "p.c2", "p.c3"}
	if info := wantState(t, s, "fanin", peonify.StateWaiting); !slices.Equal(info.Task.Parents, wantParents) {
		t.Fatalf("fanin's parents = %v, want %v", info.Task.Parents, wantParents)
	}
	ack(t, s, cur)
	if err := s.Spawn(ctx, cur, children()...); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("Spawn after the ack = %v, want ErrLeaseLost", err)
	}

	for range 10 {
		ds := poll(t, s, 10)
		for _, d := range ds {
			d.Result = []byte(d.Task.ID)
			ack(t, s, d)
		}
		if len(ds) == 0 {
			break
		}
	}
	info := wantState(t, s, "fanin", peonify.StateDone)
	if !slices.Equal(info.Task.Parents, wantParents) {
		t.Fatalf("fanin's parents = %v", info.Task.Parents)
	}
	res, err := s.Results(ctx, info.Task.Parents...)
	if err != nil || len(res) != 3 {
		t.Fatalf("fanin's parents' results = %q, %v", res, err)
	}
}

// TestSpawnDuplicateRun: a second claim of the spawning task (its first
// run's lease ended) spawns the same children: they are not stored again,
// and the dependents do not wait for them twice.
func TestSpawnDuplicateRun(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Minute}, clk)
	ctx := context.Background()
	enqueueSpawner(t, s)
	child := func() *peonify.Task {
		return &peonify.Task{ID: "p.c1", Type: "test", Workflow: "w", EnqueuedAt: clk.Now()}
	}
	first := pollOne(t, s)
	if err := s.Spawn(ctx, first, child()); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute) // the first run stalls; its lease ends
	var second peonify.Delivery
	for _, d := range poll(t, s, 10) {
		switch d.Task.ID {
		case "p":
			second = d
		case "p.c1":
			ack(t, s, d) // the child ran already
		}
	}
	if second.Token == 0 {
		t.Fatal("p was not claimed again")
	}
	if err := s.Spawn(ctx, second, child()); err != nil {
		t.Fatal(err)
	}
	if info := get(t, s, "fanin"); !slices.Equal(info.Task.Parents, []string{"p", "p.c1"}) {
		t.Fatalf("fanin's parents after the second run = %v", info.Task.Parents)
	}
	var waitingOn int
	if err := s.db.QueryRow("SELECT waiting_on FROM peonify_waiting WHERE id = 'fanin'").Scan(&waitingOn); err != nil || waitingOn != 1 {
		t.Fatalf("fanin waits for %d parents (%v), want 1: p", waitingOn, err)
	}
	ack(t, s, second)
	wantState(t, s, "fanin", peonify.StatePending)
}

// TestWait: Wait returns a finished task, wakes when the task finishes
// through this Stream, fails for an unknown task, and ends with ctx.
func TestWait(t *testing.T) {
	s := openTest(t, Config{WatchInterval: -1}, nil)
	ctx := context.Background()
	if _, err := s.Wait(ctx, "unknown"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("Wait of an unknown task = %v, want ErrNotFound", err)
	}
	enqueue(t, s, task("a"), task("plain"))
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := s.Wait(short, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its context = %v, want DeadlineExceeded", err)
	}
	type got struct {
		info peonify.TaskInfo
		err  error
		at   time.Time
	}
	waitFor := func(id string) chan got {
		c := make(chan got, 1)
		go func() {
			info, err := s.Wait(ctx, id)
			c <- got{info, err, time.Now()}
		}()
		return c
	}
	ca, cp := waitFor("a"), waitFor("plain")
	time.Sleep(20 * time.Millisecond)
	ds := poll(t, s, 2)
	for i := range ds {
		if ds[i].Task.ID == "a" {
			ds[i].Result = []byte("done")
		}
	}
	acked := time.Now()
	ack(t, s, ds...)
	r := <-ca
	if r.err != nil || r.info.State != peonify.StateDone || string(r.info.Result) != "done" {
		t.Fatalf("Wait = %+v, %v", r.info, r.err)
	}
	if d := r.at.Sub(acked); d > 500*time.Millisecond {
		t.Fatalf("Wait returned %v after the ack: not woken", d)
	}
	if r := <-cp; !errors.Is(r.err, peonify.ErrNotFound) {
		t.Fatalf("Wait of a task deleted by its ack = %v, want ErrNotFound", r.err)
	}
}

// TestWaitOtherStream: a Wait is woken when another Stream on the same
// file (as another process would) finishes the task, through the file
// watch, and without it by the check every second.
func TestWaitOtherStream(t *testing.T) {
	for _, watch := range []time.Duration{10 * time.Millisecond, -1} {
		t.Run(fmt.Sprint("watch=", watch), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tasks.db")
			waiter := openFile(t, path, Config{WatchInterval: watch}, nil)
			worker := openFile(t, path, Config{WatchInterval: -1}, nil)
			diamond(t, waiter, "w")
			c := make(chan error, 1)
			var info peonify.TaskInfo
			go func() {
				var err error
				info, err = waiter.Wait(context.Background(), "w-d")
				c <- err
			}()
			var last time.Time
			for range 3 {
				for _, d := range poll(t, worker, 10) {
					d.Result = []byte("from " + d.Task.ID)
					last = time.Now()
					ack(t, worker, d)
				}
			}
			select {
			case err := <-c:
				if err != nil || info.State != peonify.StateDone || !bytes.Equal(info.Result, []byte("from w-d")) {
					t.Fatalf("Wait = %+v, %v", info, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Wait not woken within 5s after another Stream finished the task")
			}
			took := time.Since(last)
			limit := 1500 * time.Millisecond
			if watch > 0 {
				limit = 500 * time.Millisecond
			}
			if took > limit {
				t.Fatalf("Wait returned %v after the other Stream's ack, want under %v", took, limit)
			}
			t.Logf("woken %v after the other Stream's ack", took)
		})
	}
}

// TestMigrateToWorkflows opens a file of the release before workflows
// (schema version 2), with tasks in every state it had and the groups
// index: the rebuilt table keeps them, their order (rowids) and indexes,
// and done tasks are kept for KeepDone from when they finished.
func TestMigrateToWorkflows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	if _, err := db.Exec(migrations[0] + ";" + migrations[1] + ";" + groupsIndex + `; PRAGMA user_version = 2; PRAGMA journal_mode = WAL;`); err != nil {
		t.Fatalf("make a version 2 file: %v", err)
	}
	for i, row := range []struct {
		id, state, key string
		visible        int64
	}{
		{"z-first", "pending", "k", 1}, {"a-second", "pending", "k", 2}, {"sched", "scheduled", "", now + int64(time.Hour)},
		{"dead", "dead", "", 3}, {"done", "done", "", now}, {"uniq", "pending", "", 4},
	} {
		uk := sql.NullString{}
		if row.id == "uniq" {
			uk = sql.NullString{String: "u", Valid: true}
		}
		if _, err := db.Exec(`INSERT INTO peonify_tasks (id, type, payload, enqueued_at, state, visible_at, updated_at, key, unique_key)
			VALUES (?1, 'test', x'01', ?2, ?3, ?4, ?4, ?5, ?6)`, row.id, i+1, row.state, row.visible, row.key, uk); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s := openFile(t, path, Config{KeepDone: time.Hour}, nil)
	var version int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&version); err != nil || version != len(migrations) {
		t.Fatalf("schema version after open = %d (%v), want %d", version, err, len(migrations))
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 3, peonify.StateScheduled: 1,
		peonify.StateDead: 1, peonify.StateDone: 1})
	if info := get(t, s, "z-first"); info.Task.Key != "k" || info.Task.Workflow != "" || info.Task.Parents != nil ||
		info.Result != nil || string(info.Task.Payload) != "\x01" {
		t.Fatalf("old task after migration: %+v", info)
	}
	var indexes []string
	rows, err := s.db.Query("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'peonify_tasks' AND sql IS NOT NULL ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		indexes = append(indexes, n)
	}
	rows.Close()
	want := []string{"peonify_tasks_cancelled", "peonify_tasks_dead", "peonify_tasks_done", "peonify_tasks_groups",
		"peonify_tasks_key", "peonify_tasks_pending", "peonify_tasks_running", "peonify_tasks_scheduled",
		"peonify_tasks_unique", "peonify_tasks_waiting", "peonify_tasks_workflow"}
	if !slices.Equal(indexes, want) {
		t.Fatalf("indexes after migration: %v, want %v", indexes, want)
	}
	// The unique index still holds.
	if err := s.Enqueue(context.Background(), &peonify.Task{Type: "test", UniqueKey: "u"}); !errors.Is(err, peonify.ErrDuplicate) {
		t.Fatalf("enqueue of a live unique key = %v, want ErrDuplicate", err)
	}
	// The rowids, which order an Ordered key, were kept: z-first first.
	setLimits(t, s, peonify.Limit{PerKey: true, Ordered: true})
	got, _ := pollIDs(t, s, 10)
	if !slices.Contains(got, "z-first") || slices.Contains(got, "a-second") {
		t.Fatalf("polled %v, want z-first and not a-second (the rowid order of key k)", got)
	}
	// The done task is kept for KeepDone from when it finished.
	var visible int64
	if err := s.db.QueryRow("SELECT visible_at FROM peonify_tasks WHERE id = 'done'").Scan(&visible); err != nil ||
		visible != now+int64(time.Hour) {
		t.Fatalf("done task deleted at %d (%v), want %d", visible, err, now+int64(time.Hour))
	}
	// Workflows work in the migrated file.
	diamond(t, s, "w")
	wantState(t, s, "w-d", peonify.StateWaiting)
}

// BenchmarkAckFanIn measures the writer's cost of an ack (in one large
// Ack, so no commit is counted): of a plain task, and of a task with a
// result whose ack counts it off a fan-in task that waits for all of
// them.
func BenchmarkAckFanIn(b *testing.B) {
	for _, wf := range []bool{false, true} {
		name := "plain"
		if wf {
			name = "workflow"
		}
		b.Run(name, func(b *testing.B) {
			s := openTest(b, Config{}, nil)
			ctx := context.Background()
			n := b.N
			if wf {
				w := &peonify.Workflow{}
				var cs []*peonify.Task
				for range n {
					cs = append(cs, w.Add(&peonify.Task{Type: "c"}))
				}
				w.Add(&peonify.Task{Type: "sink"}, cs...)
				if err := s.EnqueueWorkflow(ctx, w); err != nil {
					b.Fatal(err)
				}
			} else {
				var ts []*peonify.Task
				for range n {
					ts = append(ts, &peonify.Task{Type: "c"})
				}
				enqueue(b, s, ts...)
			}
			ds := poll(b, s, n)
			for i := range ds {
				ds[i].Result = []byte("1")
				if !wf {
					ds[i].Result = nil
				}
			}
			b.ResetTimer()
			if err := s.Ack(ctx, ds...); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// enqueueSpawner stores the workflow "w" of the spawn tests: a task "p",
// which spawns children when it runs, and "fanin", which depends on it.
func enqueueSpawner(t *testing.T, s *Stream) {
	t.Helper()
	w := &peonify.Workflow{ID: "w"}
	p := w.Add(&peonify.Task{ID: "p", Type: "test"})
	w.Add(&peonify.Task{ID: "fanin", Type: "test"}, p)
	if err := s.EnqueueWorkflow(context.Background(), w); err != nil {
		t.Fatal(err)
	}
}
