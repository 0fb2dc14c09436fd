package memstream_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

func ackWith(t *testing.T, s *memstream.Stream, d peonify.Delivery, result []byte) {
	t.Helper()
	d.Result = result
	if err := s.Ack(context.Background(), d); err != nil {
		t.Fatalf("Ack of %s: %v", d.Task.ID, err)
	}
}

func enqueueWorkflow(t *testing.T, s *memstream.Stream, w *peonify.Workflow) {
	t.Helper()
	if err := s.EnqueueWorkflow(context.Background(), w); err != nil {
		t.Fatalf("EnqueueWorkflow: %v", err)
	}
}

func wantState(t *testing.T, s *memstream.Stream, id string, want peonify.State) peonify.TaskInfo {
	t.Helper()
	ti := get(t, s, id)
	if ti.State != want {
		t.Fatalf("Get(%s).State = %s (LastError %q), want %s", id, ti.State, ti.LastError, want)
	}
	return ti
}

// A done task with a result is kept for ResultRetention and then
// forgotten; one without a result is forgotten at once.
func TestResultRetention(t *testing.T) {
	c := newClock()
	s := memstream.New(memstream.Config{Lease: lease, Now: c.Now, ResultRetention: time.Hour})
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	enqueue(t, s, &peonify.Task{ID: "kept", Type: "t"}, &peonify.Task{ID: "plain", Type: "t"})
	for _, d := range poll(t, s, 2) {
		if d.Task.ID == "kept" {
			ackWith(t, s, d, []byte("r"))
		} else {
			ackWith(t, s, d, nil)
		}
	}
	if _, err := s.Get(context.Background(), "plain"); !errors.Is(err, peonify.ErrNotFound) {
		t.Errorf("Get of a task acked without a result: %v, want ErrNotFound", err)
	}
	if ti := wantState(t, s, "kept", peonify.StateDone); string(ti.Result) != "r" {
		t.Errorf("kept task's Result = %q, want r", ti.Result)
	}
	if n := counts(t, s)[peonify.StateDone]; n != 1 {
		t.Errorf("Counts[done] = %d, want 1", n)
	}
	if err := s.Enqueue(context.Background(), &peonify.Task{ID: "kept", Type: "t"}); !errors.Is(err, peonify.ErrDuplicate) {
		t.Errorf("Enqueue of a kept done task's ID: %v, want ErrDuplicate", err)
	}
	c.Advance(time.Hour - time.Millisecond)
	wantState(t, s, "kept", peonify.StateDone)
	c.Advance(time.Millisecond)
	if _, err := s.Get(context.Background(), "kept"); !errors.Is(err, peonify.ErrNotFound) {
		t.Errorf("Get of a done task after its retention: %v, want ErrNotFound", err)
	}
	if res, err := s.Results(context.Background(), "kept"); err != nil || len(res) != 0 {
		t.Errorf("Results after the retention = %v, %v; want none", res, err)
	}
}

// A Wait that started before a task was acked without a result returns it
// done, and Close wakes the others with ErrClosed.
func TestWaitAckedWithoutResultAndClose(t *testing.T) {
	s := memstream.New(memstream.Config{Lease: lease})
	enqueue(t, s, &peonify.Task{ID: "a", Type: "t"}, &peonify.Task{ID: "b", Type: "t"})
	type res struct {
		info peonify.TaskInfo
		err  error
	}
	wait := func(id string) chan res {
		ch := make(chan res, 1)
		go func() {
			info, err := s.Wait(context.Background(), id)
			ch <- res{info, err}
		}()
		return ch
	}
	wa, wb := wait("a"), wait("b")
	time.Sleep(100 * time.Millisecond) // let both Waits start
	for _, d := range poll(t, s, 2) {
		if d.Task.ID == "a" {
			ackWith(t, s, d, nil)
		}
	}
	if r := <-wa; r.err != nil || r.info.State != peonify.StateDone {
		t.Errorf("Wait(a) = %s, %v; want done", r.info.State, r.err)
	}
	_ = s.Close(context.Background())
	if r := <-wb; !errors.Is(r.err, peonify.ErrClosed) {
		t.Errorf("Wait(b) after Close = %s, %v; want ErrClosed", r.info.State, r.err)
	}
}

// A dead parent tells its dependents once: after Retry, its success does
// not count again for a dependent that allows failed parents.
func TestRetriedParentReleasesNothing(t *testing.T) {
	s, _ := newStream(t)
	w := &peonify.Workflow{}
	p1 := w.Add(&peonify.Task{ID: "p1", Type: "t"})
	p2 := w.Add(&peonify.Task{ID: "p2", Type: "t"})
	w.Add(&peonify.Task{ID: "cb", Type: "t", AllowFailedParents: true}, p1, p2)
	enqueueWorkflow(t, s, w)
	var d2 peonify.Delivery
	for _, d := range poll(t, s, 2) {
		if d.Task.ID == p1.ID {
			if err := s.Nack(context.Background(), d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "boom"}); err != nil {
				t.Fatal(err)
			}
		} else {
			d2 = d
		}
	}
	if n, err := s.Retry(context.Background(), p1.ID); err != nil || n != 1 {
		t.Fatalf("Retry = %d, %v", n, err)
	}
	ackWith(t, s, pollOne(t, s), []byte("again"))
	wantState(t, s, "cb", peonify.StateWaiting)
	ackWith(t, s, d2, nil)
	if d := pollOne(t, s); d.Task.ID != "cb" {
		t.Fatalf("polled %s, want cb", d.Task.ID)
	}
}

// Spawn is fenced like Ack, skips children stored already, and adds the
// new ones to the spawning task's dependents.
func TestSpawnFencedAndIdempotent(t *testing.T) {
	s, c := newStream(t)
	w := &peonify.Workflow{ID: "wf"}
	root := w.Add(&peonify.Task{ID: "root", Type: "t"})
	w.Add(&peonify.Task{ID: "sink", Type: "t"}, root)
	enqueueWorkflow(t, s, w)
	d := pollOne(t, s)
	child := func(id string) *peonify.Task {
		return &peonify.Task{ID: id, Type: "t", Workflow: "wf", EnqueuedAt: c.Now()}
	}
	c.Advance(lease)
	d2 := pollOne(t, s)
	if err := s.Spawn(context.Background(), d, child("c1")); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("Spawn of a stale claim: %v, want ErrLeaseLost", err)
	}
	if _, err := s.Get(context.Background(), "c1"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("a stale Spawn stored its child: %v", err)
	}
	for range 2 { // a duplicate run spawns the same children
		if err := s.Spawn(context.Background(), d2, child("c1"), child("c2")); err != nil {
			t.Fatalf("Spawn: %v", err)
		}
	}
	if ti := wantState(t, s, "sink", peonify.StateWaiting); !slices.Equal(ti.Task.Parents, []string{"root", "c1", "c2"}) {
		t.Errorf("sink's Parents = %v, want root, c1, c2", ti.Task.Parents)
	}
	ackWith(t, s, d2, nil)
	for _, d := range poll(t, s, 10) {
		if d.Task.ID == "sink" {
			t.Fatal("sink released before the children finished")
		}
		ackWith(t, s, d, []byte(d.Task.ID))
	}
	if d := pollOne(t, s); d.Task.ID != "sink" {
		t.Fatalf("polled %s, want sink", d.Task.ID)
	}
}

// Cancel counts every ID it cancels, also one that the cascade from
// another would have cancelled.
func TestCancelCountsDependentsGiven(t *testing.T) {
	s, _ := newStream(t)
	w := &peonify.Workflow{}
	a := w.Add(&peonify.Task{ID: "a", Type: "t"})
	w.Add(&peonify.Task{ID: "b", Type: "t"}, a)
	enqueueWorkflow(t, s, w)
	if n, err := s.Cancel(context.Background(), "a", "b"); err != nil || n != 2 {
		t.Fatalf("Cancel(a, b) = %d, %v; want 2", n, err)
	}
	if ti := wantState(t, s, "b", peonify.StateCancelled); ti.LastError != "cancelled by request" {
		t.Errorf("b's LastError = %q, want cancelled by request", ti.LastError)
	}
}
