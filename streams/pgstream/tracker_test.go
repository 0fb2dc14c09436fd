package pgstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// pollOne claims exactly the task with id, failing the test otherwise.
func pollOne(t *testing.T, s *Stream, id string) peonify.Delivery {
	t.Helper()
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 1 || ds[0].Task.ID != id {
		var got []string
		for _, d := range ds {
			got = append(got, d.Task.ID)
		}
		t.Fatalf("Poll claimed %v, want only %s", got, id)
	}
	return ds[0]
}

// stateOf returns the state and last error of task id.
func stateOf(t *testing.T, s *Stream, id string) (peonify.State, string) {
	t.Helper()
	info, err := s.Get(streamtest.Context(t), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return info.State, info.LastError
}

func wantState(t *testing.T, s *Stream, id string, want peonify.State) {
	t.Helper()
	if got, why := stateOf(t, s, id); got != want {
		t.Fatalf("task %s is %s (%q), want %s", id, got, why, want)
	}
}

// countRows counts the rows of the queue in table.
func countRows(t *testing.T, pool *pgxpool.Pool, s *Stream, table, where string, args ...any) int {
	t.Helper()
	var n int
	q := "SELECT count(*) FROM " + pgx.Identifier{s.cfg.Schema, table}.Sanitize() + " WHERE queue = $1" + where
	if err := pool.QueryRow(context.Background(), q, append([]any{s.Queue()}, args...)...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A workflow of 10,000 tasks is one transaction: with one task ID already
// stored, nothing is; without, all are, waiting or pending as their
// parents say, with their dependencies.
func TestEnqueueWorkflowAtomic(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{NoListen: true})
	ctx := streamtest.Context(t)

	existing := &peonify.Task{ID: "already-there", Type: "x"}
	streamtest.Enqueue(t, s, existing)

	build := func(n int, dupAt int) *peonify.Workflow {
		w := &peonify.Workflow{}
		root := w.Add(&peonify.Task{Type: "root"})
		var mids []*peonify.Task
		for i := 1; i < n-1; i++ {
			tk := &peonify.Task{Type: "mid", Payload: []byte(fmt.Sprint(i))}
			if i == dupAt {
				tk.ID = existing.ID
			}
			mids = append(mids, w.Add(tk, root))
		}
		w.Add(&peonify.Task{Type: "sink", AllowFailedParents: true}, mids[:min(100, len(mids))]...)
		return w
	}
	w := build(10000, 5000)
	err := s.EnqueueWorkflow(ctx, w)
	var de *peonify.DuplicateError
	if !errors.As(err, &de) || !slices.Equal(de.IDs, []string{existing.ID}) {
		t.Fatalf("EnqueueWorkflow with a stored ID = %v, want a DuplicateError naming %s", err, existing.ID)
	}
	if n := countRows(t, pool, s, "peonify_tasks", ""); n != 1 {
		t.Fatalf("after the failed EnqueueWorkflow the queue has %d tasks, want only the one stored before", n)
	}
	if n := countRows(t, pool, s, "peonify_edges", ""); n != 0 {
		t.Fatalf("after the failed EnqueueWorkflow the queue has %d dependencies, want none", n)
	}

	// The same with a small workflow (a single INSERT, not COPY), and
	// with a live unique key.
	small := build(5, 2)
	if err := s.EnqueueWorkflow(ctx, small); !errors.As(err, &de) || !slices.Equal(de.IDs, []string{existing.ID}) {
		t.Fatalf("EnqueueWorkflow of 5 tasks with a stored ID = %v, want a DuplicateError naming %s", err, existing.ID)
	}
	streamtest.Enqueue(t, s, &peonify.Task{Type: "x", UniqueKey: "uk-1"})
	for _, n := range []int{5, 200} {
		w := build(n, -1)
		w.Tasks[1].UniqueKey = "uk-1"
		if err := s.EnqueueWorkflow(ctx, w); !errors.As(err, &de) || !slices.Equal(de.IDs, []string{w.Tasks[1].ID}) {
			t.Fatalf("EnqueueWorkflow of %d tasks with a live unique key = %v, want a DuplicateError naming %s", n, err, w.Tasks[1].ID)
		}
	}
	if n := countRows(t, pool, s, "peonify_tasks", ""); n != 2 {
		t.Fatalf("after the failed EnqueueWorkflows the queue has %d tasks, want only the two stored before", n)
	}

	w = build(10000, -1)
	start := time.Now()
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	t.Logf("a 10,000-task workflow was stored in %s", time.Since(start))
	if n := countRows(t, pool, s, "peonify_tasks", " AND workflow = $2", w.ID); n != 10000 {
		t.Fatalf("workflow has %d tasks stored, want 10000", n)
	}
	if n := countRows(t, pool, s, "peonify_edges", ""); n != 9998+100 {
		t.Fatalf("%d dependencies stored, want %d", n, 9998+100)
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts[peonify.StateWaiting] != 9999 || counts[peonify.StatePending] != 3 {
		t.Fatalf("counts %v, want 9999 waiting and 3 pending (the root and the plain tasks)", counts)
	}
	sink := w.Tasks[len(w.Tasks)-1]
	info, err := s.Get(ctx, sink.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != peonify.StateWaiting || info.Task.Workflow != w.ID || len(info.Task.Parents) != 100 ||
		info.Task.Parents[0] != w.Tasks[1].ID || !info.Task.AllowFailedParents {
		t.Fatalf("sink task stored as %+v", info)
	}

	// The same workflow again: a duplicate, by its ID.
	err = s.EnqueueWorkflow(ctx, &peonify.Workflow{ID: w.ID, Tasks: []*peonify.Task{{Type: "late"}}})
	if !errors.As(err, &de) || !slices.Equal(de.IDs, []string{w.ID}) {
		t.Fatalf("EnqueueWorkflow of a stored workflow ID = %v, want a DuplicateError naming it", err)
	}
	// A cycle is refused before anything is stored.
	a, b := &peonify.Task{ID: "a", Type: "x", Parents: []string{"b"}}, &peonify.Task{ID: "b", Type: "x", Parents: []string{"a"}}
	if err := s.EnqueueWorkflow(ctx, &peonify.Workflow{Tasks: []*peonify.Task{a, b}}); !errors.As(err, new(*peonify.InvalidTaskError)) {
		t.Fatalf("EnqueueWorkflow of a cycle = %v, want an InvalidTaskError", err)
	}
}

// diamond enqueues A -> B, C -> D and returns the tasks.
func diamond(t *testing.T, s *Stream, dAllows bool) (a, b, c, d *peonify.Task, w *peonify.Workflow) {
	t.Helper()
	w = &peonify.Workflow{}
	a = w.Add(&peonify.Task{ID: "A", Type: "a"})
	b = w.Add(&peonify.Task{ID: "B", Type: "b"}, a)
	c = w.Add(&peonify.Task{ID: "C", Type: "c"}, a)
	d = w.Add(&peonify.Task{ID: "D", Type: "d", AllowFailedParents: dAllows}, b, c)
	if err := s.EnqueueWorkflow(streamtest.Context(t), w); err != nil {
		t.Fatal(err)
	}
	return a, b, c, d, w
}

// Dependents are released by the ack of their last parent, in the same
// transaction, and read their parents' results; the workflow is then
// succeeded.
func TestWorkflowDiamondReleasesOnAck(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{NoListen: true})
	ctx := streamtest.Context(t)
	_, _, _, _, w := diamond(t, s, false)
	wantState(t, s, "B", peonify.StateWaiting)

	da := pollOne(t, s, "A")
	da.Result = []byte("ra")
	if err := s.Ack(ctx, da); err != nil {
		t.Fatal(err)
	}
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 2 {
		t.Fatalf("after A's ack, %d tasks were claimed, want B and C", len(ds))
	}
	wantState(t, s, "D", peonify.StateWaiting)
	for _, d := range ds {
		d.Result = []byte("r" + strings.ToLower(d.Task.ID))
		if d.Task.ID == "C" {
			d.Result = []byte{} // empty, not none
		}
		if err := s.Ack(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	dd := pollOne(t, s, "D")
	if !slices.Equal(dd.Task.Parents, []string{"B", "C"}) || dd.Task.Workflow != w.ID {
		t.Fatalf("D delivered with parents %v, workflow %q", dd.Task.Parents, dd.Task.Workflow)
	}
	res, err := s.Results(ctx, dd.Task.Parents...)
	if err != nil {
		t.Fatal(err)
	}
	if string(res["B"]) != "rb" || res["C"] == nil || len(res["C"]) != 0 || len(res) != 2 {
		t.Fatalf("Results of D's parents = %q, want B: rb and C: empty", res)
	}
	if err := s.Ack(ctx, dd); err != nil { // no result, but in a workflow: kept done
		t.Fatal(err)
	}
	info, err := s.GetWorkflow(ctx, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != peonify.WorkflowSucceeded || info.Counts[peonify.StateDone] != 4 || len(info.Tasks) != 4 ||
		info.Tasks[0].Task.ID != "A" || info.Tasks[0].Result != nil || info.CreatedAt.IsZero() || info.UpdatedAt.Before(info.CreatedAt) {
		t.Fatalf("GetWorkflow = %+v", info)
	}
	got, err := s.Get(ctx, "A")
	if err != nil || got.State != peonify.StateDone || string(got.Result) != "ra" {
		t.Fatalf("Get(A) = %+v, %v; want done with its result", got, err)
	}
	if _, err := s.GetWorkflow(ctx, "no-such-workflow"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("GetWorkflow of an unknown ID = %v, want ErrNotFound", err)
	}
}

// An ack of a claim that is no longer current changes nothing: the
// dependent is released once, by the current claim's ack.
func TestStaleAckDoesNotRelease(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{NoListen: true, Lease: 50 * time.Millisecond, RescueInterval: time.Hour})
	ctx := streamtest.Context(t)
	w := &peonify.Workflow{}
	a := w.Add(&peonify.Task{Type: "a"})
	b := w.Add(&peonify.Task{Type: "b"}, a)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	first := pollOne(t, s, a.ID)
	time.Sleep(100 * time.Millisecond)
	if _, _, err := s.rescue(ctx); err != nil {
		t.Fatal(err)
	}
	second := pollOne(t, s, a.ID)
	first.Result = []byte("stale")
	if err := s.Ack(ctx, first); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, b.ID, peonify.StateWaiting)
	wantState(t, s, a.ID, peonify.StateRunning)
	second.Result = []byte("current")
	if err := s.Ack(ctx, second); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, second); err != nil { // a duplicate ack: nothing
		t.Fatal(err)
	}
	wantState(t, s, b.ID, peonify.StatePending)
	var waitingOn int
	if err := pool.QueryRow(ctx, "SELECT waiting_on FROM "+testSchema+".peonify_tasks WHERE queue = $1 AND id = $2", s.Queue(), b.ID).Scan(&waitingOn); err != nil || waitingOn != 0 {
		t.Fatalf("waiting_on of B = %d, %v; want 0 (released once)", waitingOn, err)
	}
	if res, _ := s.Results(ctx, a.ID); string(res[a.ID]) != "current" {
		t.Fatalf("result of A = %q, want the current claim's", res[a.ID])
	}
}

// A dead parent cancels its dependents with a reason naming it, and theirs
// in turn; a dependent that allows failed parents runs anyway. Cancel and
// Delete cascade the same way.
func TestWorkflowCascade(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{NoListen: true})
	ctx := streamtest.Context(t)

	t.Run("dead", func(t *testing.T) {
		w := &peonify.Workflow{}
		a := w.Add(&peonify.Task{ID: "dead-a", Type: "a"})
		b := w.Add(&peonify.Task{ID: "dead-b", Type: "b"}, a)
		c := w.Add(&peonify.Task{ID: "dead-c", Type: "c"}, b)
		d := w.Add(&peonify.Task{ID: "dead-d", Type: "d", AllowFailedParents: true}, a)
		e := w.Add(&peonify.Task{ID: "dead-e", Type: "e", AllowFailedParents: true}, c, d)
		if err := s.EnqueueWorkflow(ctx, w); err != nil {
			t.Fatal(err)
		}
		da := pollOne(t, s, a.ID)
		if err := s.Nack(ctx, da, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "boom"}); err != nil {
			t.Fatal(err)
		}
		if st, why := stateOf(t, s, b.ID); st != peonify.StateCancelled || why != "parent dead-a dead: boom" {
			t.Fatalf("B is %s (%q), want cancelled naming its dead parent", st, why)
		}
		if st, why := stateOf(t, s, c.ID); st != peonify.StateCancelled || why != "parent dead-b cancelled: parent dead-a dead: boom" {
			t.Fatalf("C is %s (%q), want cancelled naming its cancelled parent", st, why)
		}
		dd := pollOne(t, s, d.ID)
		wantState(t, s, e.ID, peonify.StateWaiting) // C was cancelled, D runs
		if err := s.Ack(ctx, dd); err != nil {
			t.Fatal(err)
		}
		pollOne(t, s, e.ID)
		info, err := s.GetWorkflow(ctx, w.ID)
		if err != nil || info.State != peonify.WorkflowRunning {
			t.Fatalf("GetWorkflow = %+v, %v", info, err)
		}
		if n := countRows(t, pool, s, "peonify_edges", " AND parent_id LIKE 'dead-%'"); n != 0 {
			t.Fatalf("%d dependencies left after every parent finished", n)
		}
	})

	t.Run("lease-expired", func(t *testing.T) {
		s := newTestStream(t, pool, Config{NoListen: true, Lease: 50 * time.Millisecond, RescueInterval: time.Hour})
		w := &peonify.Workflow{}
		a := w.Add(&peonify.Task{ID: "exp-a", Type: "a", MaxAttempts: 1})
		b := w.Add(&peonify.Task{ID: "exp-b", Type: "b"}, a)
		if err := s.EnqueueWorkflow(ctx, w); err != nil {
			t.Fatal(err)
		}
		pollOne(t, s, a.ID) // and the process running it dies
		time.Sleep(100 * time.Millisecond)
		if _, dead, err := s.rescue(ctx); err != nil || dead != 1 {
			t.Fatalf("rescue = %d dead, %v; want 1", dead, err)
		}
		if st, why := stateOf(t, s, b.ID); st != peonify.StateCancelled || !strings.HasPrefix(why, "parent exp-a dead: lease expired") {
			t.Fatalf("B is %s (%q), want cancelled by its parent's expired lease", st, why)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		w := &peonify.Workflow{}
		a := w.Add(&peonify.Task{ID: "can-a", Type: "a"})
		b := w.Add(&peonify.Task{ID: "can-b", Type: "b"}, a)
		if err := s.EnqueueWorkflow(ctx, w); err != nil {
			t.Fatal(err)
		}
		n, err := s.Cancel(ctx, a.ID, "no-such-task")
		if err != nil || n != 1 {
			t.Fatalf("Cancel = %d, %v; want 1", n, err)
		}
		if st, why := stateOf(t, s, b.ID); st != peonify.StateCancelled || why != "parent can-a cancelled: cancelled by request" {
			t.Fatalf("B is %s (%q)", st, why)
		}
		if n, err := s.Cancel(ctx, a.ID); err != nil || n != 0 {
			t.Fatalf("Cancel of a cancelled task = %d, %v; want 0", n, err)
		}
		info, err := s.GetWorkflow(ctx, w.ID)
		if err != nil || info.State != peonify.WorkflowCancelled {
			t.Fatalf("GetWorkflow = %+v, %v; want cancelled", info, err)
		}
		if n, err := s.Purge(ctx, peonify.StateCancelled); err != nil || n < 2 {
			t.Fatalf("Purge(cancelled) = %d, %v", n, err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		w := &peonify.Workflow{}
		a := w.Add(&peonify.Task{ID: "del-a", Type: "a"})
		b := w.Add(&peonify.Task{ID: "del-b", Type: "b"}, a)
		c := w.Add(&peonify.Task{ID: "del-c", Type: "c", AllowFailedParents: true}, b)
		if err := s.EnqueueWorkflow(ctx, w); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Delete(ctx, a.ID); err != nil || n != 1 {
			t.Fatalf("Delete = %d, %v", n, err)
		}
		if st, why := stateOf(t, s, b.ID); st != peonify.StateCancelled || why != "parent del-a deleted" {
			t.Fatalf("B is %s (%q)", st, why)
		}
		wantState(t, s, c.ID, peonify.StatePending)
		pollOne(t, s, c.ID)
	})

	t.Run("cancel-workflow", func(t *testing.T) {
		_, _, _, _, w := func() (a, b, c, d *peonify.Task, w *peonify.Workflow) {
			w = &peonify.Workflow{}
			a = w.Add(&peonify.Task{ID: "cw-a", Type: "a"})
			b = w.Add(&peonify.Task{ID: "cw-b", Type: "b"}, a)
			c = w.Add(&peonify.Task{ID: "cw-c", Type: "c", AllowFailedParents: true}, b)
			if err := s.EnqueueWorkflow(ctx, w); err != nil {
				t.Fatal(err)
			}
			return
		}()
		da := pollOne(t, s, "cw-a")
		if err := s.Ack(ctx, da); err != nil {
			t.Fatal(err)
		}
		n, err := s.CancelWorkflow(ctx, w.ID)
		if err != nil || n != 2 {
			t.Fatalf("CancelWorkflow = %d, %v; want 2 (B and C)", n, err)
		}
		wantState(t, s, "cw-c", peonify.StateCancelled)
		if _, err := s.CancelWorkflow(ctx, "no-such-workflow"); !errors.Is(err, peonify.ErrNotFound) {
			t.Fatalf("CancelWorkflow of an unknown workflow = %v, want ErrNotFound", err)
		}
	})
}

// A running task cancelled is cancelled at once; its claim's Extend and
// SetProgress say so, and its Ack and Nack change nothing.
func TestCancelRunningTask(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{NoListen: true})
	ctx := streamtest.Context(t)
	tk := task("long")
	streamtest.Enqueue(t, s, tk)
	d := pollOne(t, s, tk.ID)
	p := peonify.Progress{Fraction: 0.25, Message: "a quarter", UpdatedAt: time.Now()}
	if err := s.SetProgress(ctx, d, p); err != nil {
		t.Fatal(err)
	}
	info, err := s.Get(ctx, tk.ID)
	if err != nil || info.Progress.Fraction != 0.25 || info.Progress.Message != "a quarter" || !info.Progress.UpdatedAt.Equal(p.UpdatedAt.Truncate(time.Microsecond)) {
		t.Fatalf("Get after SetProgress = %+v, %v", info.Progress, err)
	}
	if n, err := s.Cancel(ctx, tk.ID); err != nil || n != 1 {
		t.Fatalf("Cancel = %d, %v", n, err)
	}
	if _, err := s.Extend(ctx, d, time.Minute); !errors.Is(err, peonify.ErrCancelled) {
		t.Fatalf("Extend of a cancelled task = %v, want ErrCancelled", err)
	}
	if err := s.SetProgress(ctx, d, p); !errors.Is(err, peonify.ErrCancelled) {
		t.Fatalf("SetProgress of a cancelled task = %v, want ErrCancelled", err)
	}
	d.Result = []byte("late")
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("Nack of a cancelled claim = %v, want ErrLeaseLost", err)
	}
	info, err = s.Get(ctx, tk.ID)
	if err != nil || info.State != peonify.StateCancelled || info.Result != nil || info.LastError != "cancelled by request" || info.Progress.Fraction != 0.25 {
		t.Fatalf("cancelled task = %+v, %v", info, err)
	}
	// Another claim's stale calls say lease lost, not cancelled.
	other := d
	other.Token++
	if _, err := s.Extend(ctx, other, time.Minute); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("Extend of another claim = %v, want ErrLeaseLost", err)
	}
	if ds := streamtest.Poll(t, s, 10); len(ds) != 0 {
		t.Fatalf("a cancelled task was claimed")
	}
}

// Spawn is fenced like Ack and skips children stored already; the
// spawning task's dependents wait for the children and see them as
// parents.
func TestSpawnFencedAndDeduplicated(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{NoListen: true, Lease: 50 * time.Millisecond, RescueInterval: time.Hour})
	ctx := streamtest.Context(t)
	w := &peonify.Workflow{}
	p := w.Add(&peonify.Task{ID: "P", Type: "p"})
	q := w.Add(&peonify.Task{ID: "Q", Type: "q"}, p)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	children := func() []*peonify.Task {
		c1 := &peonify.Task{ID: "P.c1", Type: "c", Workflow: w.ID}
		c2 := &peonify.Task{ID: "P.c2", Type: "c", Workflow: w.ID, Parents: []string{"P.c1"}}
		return []*peonify.Task{c1, c2}
	}
	stale := pollOne(t, s, p.ID)
	time.Sleep(100 * time.Millisecond)
	if _, _, err := s.rescue(ctx); err != nil {
		t.Fatal(err)
	}
	d := pollOne(t, s, p.ID)
	if err := s.Spawn(ctx, stale, children()...); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("Spawn from a stale claim = %v, want ErrLeaseLost", err)
	}
	if n := countRows(t, pool, s, "peonify_tasks", " AND id LIKE 'P.c%'"); n != 0 {
		t.Fatalf("the stale Spawn stored %d children", n)
	}
	if _, err := s.Extend(ctx, d, time.Minute); err != nil {
		t.Fatal(err)
	}
	d.Deadline = time.Now().Add(time.Minute)
	for range 2 { // a second run of P spawns the same children: not stored twice
		if err := s.Spawn(ctx, d, children()...); err != nil {
			t.Fatal(err)
		}
	}
	if n := countRows(t, pool, s, "peonify_tasks", " AND id LIKE 'P.c%'"); n != 2 {
		t.Fatalf("%d children stored, want 2", n)
	}
	wantState(t, s, "P.c2", peonify.StateWaiting)
	info, err := s.Get(ctx, q.ID)
	if err != nil || !slices.Equal(info.Task.Parents, []string{"P", "P.c1", "P.c2"}) {
		t.Fatalf("Q's parents after Spawn = %v, %v", info.Task.Parents, err)
	}
	bad := &peonify.Task{ID: "P.x", Type: "c", Workflow: "another"}
	if err := s.Spawn(ctx, d, bad); err == nil {
		t.Fatal("Spawn of a child of another workflow succeeded")
	}

	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, q.ID, peonify.StateWaiting) // the children are not done
	c1 := pollOne(t, s, "P.c1")
	c1.Result = []byte("one")
	if err := s.Ack(ctx, c1); err != nil {
		t.Fatal(err)
	}
	c2 := pollOne(t, s, "P.c2")
	if err := s.Ack(ctx, c2); err != nil {
		t.Fatal(err)
	}
	dq := pollOne(t, s, q.ID)
	res, err := s.Results(ctx, dq.Task.Parents...)
	if err != nil || string(res["P.c1"]) != "one" {
		t.Fatalf("Q's parent results = %q, %v", res, err)
	}
	if err := s.Spawn(ctx, dq, &peonify.Task{ID: "Q.c1", Type: "c", Workflow: w.ID}); err != nil {
		t.Fatal(err) // a task without dependents spawns too
	}
	pollOne(t, s, "Q.c1")
}

// Done tasks with a result or a workflow are kept for ResultRetention,
// then deleted by the cleaner in bounded batches; plain ones are deleted
// on ack.
func TestResultRetention(t *testing.T) {
	pool := testPool(t)
	if _, err := New(pool, Config{ResultRetention: -time.Second}); err == nil || !strings.Contains(err.Error(), "positive duration") {
		t.Fatalf("New with a negative ResultRetention = %v", err)
	}
	ctx := streamtest.Context(t)
	s := newTestStream(t, pool, Config{NoListen: true, ResultRetention: 200 * time.Millisecond})
	plain, withResult, labelled := task("plain"), task("result"), task("labelled")
	labelled.Workflow = "wf-label"
	streamtest.Enqueue(t, s, plain, withResult, labelled)
	ds := streamtest.Poll(t, s, 10)
	for i := range ds {
		if ds[i].Task.ID == withResult.ID {
			ds[i].Result = []byte("kept")
		}
	}
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, plain.ID); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("a plain task was kept after its ack: %v", err)
	}
	wantState(t, s, withResult.ID, peonify.StateDone)
	wantState(t, s, labelled.ID, peonify.StateDone)
	if n, err := s.cleanup(ctx); err != nil || n != 0 {
		t.Fatalf("cleanup within the retention deleted %d, %v", n, err)
	}
	time.Sleep(300 * time.Millisecond)
	if n, err := s.cleanup(ctx); err != nil || n != 2 {
		t.Fatalf("cleanup after the retention deleted %d, %v; want 2", n, err)
	}
	if _, err := s.Get(ctx, withResult.ID); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("a result outlived its retention: %v", err)
	}
}

// Wait is woken by a NOTIFY when another Stream, on another pool (as in
// another process), finishes the task: well before its 2 s recheck.
func TestWaitWokenByAnotherStream(t *testing.T) {
	ctx := streamtest.Context(t)
	waiter := newTestStream(t, testPool(t), Config{})
	worker := newTestStream(t, testPool(t), Config{Queue: waiter.Queue(), NoListen: true})
	waitListening(t, waiter, 1)

	if _, err := waiter.Wait(ctx, "no-such-task"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("Wait of an unknown task = %v, want ErrNotFound", err)
	}
	for _, outcome := range []string{"result", "dead", "cancelled"} {
		tk := task("waited")
		streamtest.Enqueue(t, worker, tk)
		type reply struct {
			info peonify.TaskInfo
			err  error
			at   time.Time
		}
		got := make(chan reply, 1)
		go func() {
			info, err := waiter.Wait(ctx, tk.ID)
			got <- reply{info, err, time.Now()}
		}()
		time.Sleep(300 * time.Millisecond) // Wait is waiting
		d := pollOne(t, worker, tk.ID)
		var err error
		switch outcome {
		case "result":
			d.Result = []byte("42")
			err = worker.Ack(ctx, d)
		case "dead":
			err = worker.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "no"})
		case "cancelled":
			_, err = worker.Cancel(ctx, tk.ID)
		}
		if err != nil {
			t.Fatal(err)
		}
		finished := time.Now()
		select {
		case r := <-got:
			if r.err != nil || !r.info.State.Finished() {
				t.Fatalf("%s: Wait = %+v, %v", outcome, r.info, r.err)
			}
			if outcome == "result" && !bytes.Equal(r.info.Result, []byte("42")) {
				t.Fatalf("Wait returned result %q", r.info.Result)
			}
			lag := r.at.Sub(finished)
			t.Logf("%s: Wait returned %s after the other stream finished the task", outcome, lag)
			if lag > time.Second {
				t.Fatalf("%s: Wait took %s: not woken by the notification", outcome, lag)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Wait did not return", outcome)
		}
	}
	// A task acked without a result is deleted: Wait says not found, at
	// its recheck.
	tk := task("plain")
	streamtest.Enqueue(t, worker, tk)
	errc := make(chan error, 1)
	go func() {
		_, err := waiter.Wait(ctx, tk.ID)
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := worker.Ack(ctx, pollOne(t, worker, tk.ID)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, peonify.ErrNotFound) {
			t.Fatalf("Wait of a task deleted on ack = %v, want ErrNotFound", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait of a deleted task did not return")
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	streamtest.Enqueue(t, worker, task("never"))
	ids, _ := worker.List(ctx, peonify.ListOptions{State: peonify.StatePending})
	if _, err := waiter.Wait(cctx, ids[0].Task.ID); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its context = %v", err)
	}
}

// A schema at version 2 with tasks in it migrates to version 3: the tasks
// stay as they were, and workflows work.
func TestMigrateFromVersion2(t *testing.T) {
	ctx := streamtest.Context(t)
	s := migratedFrom(t, 2, `INSERT INTO %[1]s.peonify_tasks (queue, id, type, key) VALUES ('q', 'old', 'old-type', 'k');
		INSERT INTO %[1]s.peonify_tasks (queue, id, type, state, last_error) VALUES ('q', 'old-dead', 'old-type', 'dead', 'gone')`)
	if st, why := stateOf(t, s, "old-dead"); st != peonify.StateDead || why != "gone" {
		t.Fatalf("old dead task is %s (%q)", st, why)
	}
	w := &peonify.Workflow{}
	a := w.Add(&peonify.Task{Type: "a"})
	b := w.Add(&peonify.Task{Type: "b"}, a)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 2 {
		t.Fatalf("polled %d, want the old task and A", len(ds))
	}
	for i := range ds {
		ds[i].Result = []byte("r")
	}
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}
	pollOne(t, s, b.ID)
	if info, err := s.Get(ctx, "old"); err != nil || info.State != peonify.StateDone || string(info.Result) != "r" || info.Task.Key != "k" {
		t.Fatalf("old task after its ack = %+v, %v", info, err)
	}
}

// A chain's next step starts within milliseconds of the previous one's
// end: the release in the ack wakes the processor through the same path
// as an enqueue. The figure (p50 per step) is logged; the test fails only
// far beyond the goal of 2 ms, since the machine may be shared.
func TestWorkflowChainStepLatency(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	const chains, steps = 5, 10
	starts := make(chan time.Time, chains*steps)
	ends := make(chan time.Time, chains)
	h := peonify.HandlerFunc(func(ctx context.Context, tk *peonify.Task) error {
		starts <- time.Now()
		if len(tk.Parents) > 0 {
			res, err := peonify.ParentResults(ctx)
			if err != nil || len(res[tk.Parents[0]]) == 0 {
				return fmt.Errorf("parent results %q, %v", res, err)
			}
		}
		if err := peonify.SetResult(ctx, []byte(tk.ID)); err != nil {
			return err
		}
		if string(tk.Payload) == fmt.Sprint(steps-1) {
			ends <- time.Now()
		}
		return nil
	})
	p := streamtest.Processor(t, peonify.Config{Logger: streamtest.Logger(t)}, s, peonify.TaskList{"step": h})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
	}()
	var per []time.Duration
	for range chains {
		w := &peonify.Workflow{}
		var prev *peonify.Task
		for i := range steps {
			tk := &peonify.Task{Type: "step", Payload: []byte(fmt.Sprint(i))}
			if prev == nil {
				prev = w.Add(tk)
			} else {
				prev = w.Add(tk, prev)
			}
		}
		if err := s.EnqueueWorkflow(streamtest.Context(t), w); err != nil {
			t.Fatal(err)
		}
		var first time.Time
		var last time.Time
		for i := range steps {
			select {
			case at := <-starts:
				if i == 0 {
					first = at
				} else {
					per = append(per, at.Sub(last))
				}
				last = at
			case <-time.After(10 * time.Second):
				t.Fatalf("step %d of the chain did not start", i)
			}
		}
		<-ends
		_ = first
	}
	slices.Sort(per)
	p50 := per[len(per)/2]
	t.Logf("chain step latency (start to start, including the handler): p50 %s, max %s over %d steps", p50, per[len(per)-1], len(per))
	if p50 > 50*time.Millisecond {
		t.Fatalf("p50 step latency %s: the release does not wake the processor", p50)
	}
}

// The stream's own share of a chain step: the ack that releases the next
// step, with its result, and the claim of that step.
func TestWorkflowChainStepStreamCost(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{NoListen: true})
	ctx := streamtest.Context(t)
	const steps = 50
	w := streamtest.Chain("step", steps)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	var ack, claim []time.Duration
	d := pollOne(t, s, w.Tasks[0].ID)
	for i := 1; i < steps; i++ {
		d.Result = []byte(`{"ok":true}`)
		t0 := time.Now()
		if err := s.Ack(ctx, d); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		d = pollOne(t, s, w.Tasks[i].ID)
		ack, claim = append(ack, t1.Sub(t0)), append(claim, time.Since(t1))
	}
	slices.Sort(ack)
	slices.Sort(claim)
	t.Logf("per chain step: ack with release p50 %s, claim p50 %s", ack[len(ack)/2], claim[len(claim)/2])
}

// The release is part of the ack's transaction: when releasing the
// dependent fails (here, a trigger refuses it, as a crash would cut it
// short), the ack is undone too, so the parent is still running under its
// claim, and a later ack of the same claim releases it.
func TestReleaseFailureUndoesAck(t *testing.T) {
	pool := testPool(t)
	ctx := streamtest.Context(t)
	schema := "peonify_atomic_" + streamtest.RandHex(4)
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	if err := MigrateSchema(ctx, pool, schema); err != nil {
		t.Fatal(err)
	}
	_, err := pool.Exec(ctx, `
CREATE TABLE `+schema+`.refuse (on_ boolean NOT NULL);
INSERT INTO `+schema+`.refuse VALUES (true);
CREATE FUNCTION `+schema+`.refuse_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.state = 'waiting' AND NEW.state = 'pending' AND (SELECT on_ FROM `+schema+`.refuse) THEN
    RAISE EXCEPTION 'release refused by the test';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse BEFORE UPDATE ON `+schema+`.peonify_tasks FOR EACH ROW EXECUTE FUNCTION `+schema+`.refuse_release();`)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestStream(t, pool, Config{Schema: schema, NoListen: true})
	w := &peonify.Workflow{}
	a := w.Add(&peonify.Task{Type: "a"})
	b := w.Add(&peonify.Task{Type: "b"}, a)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	d := pollOne(t, s, a.ID)
	d.Result = []byte("r")
	if err := s.Ack(ctx, d); err == nil || !strings.Contains(err.Error(), "release refused") {
		t.Fatalf("Ack whose release failed = %v, want the trigger's error", err)
	}
	wantState(t, s, a.ID, peonify.StateRunning)
	wantState(t, s, b.ID, peonify.StateWaiting)
	if res, _ := s.Results(ctx, a.ID); len(res) != 0 {
		t.Fatalf("the failed ack stored a result: %q", res)
	}
	if _, err := pool.Exec(ctx, "UPDATE "+schema+".refuse SET on_ = false"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, a.ID, peonify.StateDone)
	pollOne(t, s, b.ID)
}

// A fan-out of 10,000 tasks and their fan-in, run by a processor, against
// 10,000 plain tasks: the workflow's throughput is logged with the ratio
// (the goal is at least 0.5). Skipped with -short.
func TestWorkflowFanOutThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("drains 20,000 tasks; skipped with -short")
	}
	const n = 10000
	run := func(name string, enqueue func(s *Stream) error) float64 {
		s := newTestStream(t, testPool(t), Config{})
		var done atomic.Int64
		all := make(chan struct{})
		h := peonify.HandlerFunc(func(ctx context.Context, tk *peonify.Task) error {
			if tk.Type == "root" {
				children := make([]*peonify.Task, n-2)
				for i := range children {
					children[i] = &peonify.Task{Type: "t"}
				}
				return peonify.Spawn(ctx, children...)
			}
			if tk.Type == "sink" {
				if _, err := peonify.ParentResults(ctx); err != nil {
					return err
				}
			} else if tk.Workflow != "" {
				if err := peonify.SetResult(ctx, []byte(`1`)); err != nil {
					return err
				}
			}
			return nil
		})
		p := streamtest.Processor(t, peonify.Config{Logger: streamtest.Logger(t), Workers: 100, OnEvent: func(e peonify.Event) {
			if e.Kind == peonify.EventSucceeded && done.Add(1) == n {
				close(all)
			}
		}}, s, peonify.TaskList{"t": h, "sink": h, "root": h})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		start := time.Now()
		if err := enqueue(s); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- p.Run(ctx) }()
		select {
		case <-all:
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s: %d of %d tasks done in 2 minutes", name, done.Load(), n)
		}
		rate := n / time.Since(start).Seconds()
		cancel()
		<-errc
		t.Logf("%s: %.0f tasks/s", name, rate)
		return rate
	}
	plain := run("plain", func(s *Stream) error {
		tasks := make([]*peonify.Task, n)
		for i := range tasks {
			tasks[i] = &peonify.Task{Type: "t"}
		}
		return s.Enqueue(context.Background(), tasks...)
	})
	wf := run("workflow", func(s *Stream) error {
		w := &peonify.Workflow{}
		var mids []*peonify.Task
		for range n - 1 {
			mids = append(mids, w.Add(&peonify.Task{Type: "t"}))
		}
		w.Add(&peonify.Task{Type: "sink"}, mids...)
		return s.EnqueueWorkflow(context.Background(), w)
	})
	spawned := run("spawned", func(s *Stream) error {
		w := &peonify.Workflow{}
		root := w.Add(&peonify.Task{Type: "root"})
		w.Add(&peonify.Task{Type: "sink"}, root)
		return s.EnqueueWorkflow(context.Background(), w)
	})
	t.Logf("RESULT mode=workflow peonify=%.0f peer=plain:%.0f ratio=%.2f (fan-out at enqueue); spawned %.0f ratio=%.2f",
		wf, plain, wf/plain, spawned, spawned/plain)
}

// Released tasks go through the limited claim like any task; a waiting
// task holds no place in its key's order, and a cancelled running task
// frees its permit at once.
func TestWorkflowUnderLimits(t *testing.T) {
	s := limitedStream(t, Config{NoListen: true},
		peonify.Limit{Name: "one", PerKey: true, Concurrency: 1},
		peonify.Limit{Name: "ordered", Type: "o", PerKey: true, Ordered: true})
	ctx := streamtest.Context(t)
	w := &peonify.Workflow{}
	a := w.Add(&peonify.Task{ID: "lim-a", Type: "t", Key: "k"})
	b := w.Add(&peonify.Task{ID: "lim-b", Type: "o", Key: "k2"}, a)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	// Stored after b, same key and type: b, waiting, does not hold it back.
	later := &peonify.Task{ID: "lim-later", Type: "o", Key: "k2"}
	streamtest.Enqueue(t, s, later)
	ds := streamtest.Poll(t, s, 10)
	if got := []string{ds[0].Task.ID, ds[len(ds)-1].Task.ID}; len(ds) != 2 || !slices.Contains(got, "lim-a") || !slices.Contains(got, "lim-later") {
		t.Fatalf("claimed %d tasks (%v), want lim-a and lim-later", len(ds), got)
	}
	for _, d := range ds {
		if d.Task.ID == "lim-later" {
			if n, err := s.Cancel(ctx, d.Task.ID); err != nil || n != 1 {
				t.Fatalf("Cancel = %d, %v", n, err)
			}
		} else if err := s.Ack(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	// b is released, and k2's permit is free: the cancelled task no
	// longer runs.
	pollOne(t, s, b.ID)
}

// Close ends a Wait in progress with ErrClosed.
func TestWaitEndsOnClose(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{NoListen: true})
	tk := task("never-runs")
	streamtest.Enqueue(t, s, tk)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Wait(streamtest.Context(t), tk.ID)
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, peonify.ErrClosed) {
			t.Fatalf("Wait after Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
}

// A second run of a spawning task may add a child that depends on a child
// of the first run that has finished already: it is not left waiting.
func TestSpawnAfterEarlierChildFinished(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{NoListen: true})
	ctx := streamtest.Context(t)
	w := &peonify.Workflow{}
	p := w.Add(&peonify.Task{ID: "R", Type: "p"})
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	d := pollOne(t, s, p.ID)
	c1 := func() *peonify.Task { return &peonify.Task{ID: "R.c1", Type: "c", Workflow: w.ID} }
	c2 := func() *peonify.Task { return &peonify.Task{ID: "R.c2", Type: "c", Workflow: w.ID} }
	if err := s.Spawn(ctx, d, c1(), c2()); err != nil {
		t.Fatal(err)
	}
	for _, dc := range streamtest.Poll(t, s, 10) {
		if dc.Task.ID == "R.c1" {
			if err := s.Ack(ctx, dc); err != nil {
				t.Fatal(err)
			}
		} else if err := s.Nack(ctx, dc, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "bad"}); err != nil {
			t.Fatal(err)
		}
	}
	// The second run spawns more: after c1 (done) and after c2 (dead).
	c3 := &peonify.Task{ID: "R.c3", Type: "c", Workflow: w.ID, Parents: []string{"R.c1"}}
	c4 := &peonify.Task{ID: "R.c4", Type: "c", Workflow: w.ID, Parents: []string{"R.c2"}}
	if err := s.Spawn(ctx, d, c1(), c2(), c3, c4); err != nil {
		t.Fatal(err)
	}
	pollOne(t, s, "R.c3")
	if st, why := stateOf(t, s, "R.c4"); st != peonify.StateCancelled || why != "parent R.c2 dead: bad" {
		t.Fatalf("R.c4 is %s (%q), want cancelled by its dead parent", st, why)
	}
}

// Streams that share a Listener share its LISTEN connection for Wait
// too: a waiter of one queue is woken by a finish in its queue.
func TestWaitWithSharedListener(t *testing.T) {
	pool := testPool(t)
	ctx := streamtest.Context(t)
	_, _, b := sharedListenerStreams(t, pool)
	worker := newTestStream(t, testPool(t), Config{Queue: b.Queue(), NoListen: true})
	tk := task("shared")
	streamtest.Enqueue(t, worker, tk)
	got := make(chan error, 1)
	go func() {
		info, err := b.Wait(ctx, tk.ID)
		if err == nil && string(info.Result) != "ok" {
			err = fmt.Errorf("result %q", info.Result)
		}
		got <- err
	}()
	time.Sleep(100 * time.Millisecond)
	d := pollOne(t, worker, tk.ID)
	d.Result = []byte("ok")
	if err := worker.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("Wait took %s: not woken by the shared listener", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return")
	}
}
