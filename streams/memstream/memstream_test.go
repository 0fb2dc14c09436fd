package memstream_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/memstream"
)

// newClock returns a hand-driven time source for Config.Now.
func newClock() *streamtest.Clock {
	return streamtest.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
}

const lease = 10 * time.Second

func newStream(t *testing.T) (*memstream.Stream, *streamtest.Clock) {
	t.Helper()
	c := newClock()
	s := memstream.New(memstream.Config{Lease: lease, Now: c.Now})
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, c
}

func enqueue(t *testing.T, s *memstream.Stream, tasks ...*peonify.Task) {
	t.Helper()
	if err := s.Enqueue(context.Background(), tasks...); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
}

func poll(t *testing.T, s *memstream.Stream, limit int) []peonify.Delivery {
	t.Helper()
	ds, err := s.Poll(context.Background(), limit)
	if err != nil {
		t.Fatalf("Poll(%d): %v", limit, err)
	}
	if len(ds) > limit {
		t.Fatalf("Poll(%d) returned %d deliveries", limit, len(ds))
	}
	return ds
}

func pollOne(t *testing.T, s *memstream.Stream) peonify.Delivery {
	t.Helper()
	ds := poll(t, s, 1)
	if len(ds) != 1 {
		t.Fatalf("Poll(1) returned %d deliveries, want 1", len(ds))
	}
	return ds[0]
}

func pollNone(t *testing.T, s *memstream.Stream) {
	t.Helper()
	if ds := poll(t, s, 100); len(ds) != 0 {
		t.Fatalf("Poll returned %d deliveries (first %s), want none", len(ds), ds[0].Task.ID)
	}
}

func ids(ds []peonify.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Task.ID
	}
	return out
}

func counts(t *testing.T, s *memstream.Stream) map[peonify.State]int {
	t.Helper()
	c, err := s.Counts(context.Background())
	if err != nil {
		t.Fatalf("Counts: %v", err)
	}
	return c
}

func wantCounts(t *testing.T, s *memstream.Stream, pending, scheduled, running, dead int) {
	t.Helper()
	c := counts(t, s)
	got := [4]int{c[peonify.StatePending], c[peonify.StateScheduled], c[peonify.StateRunning], c[peonify.StateDead]}
	if want := [4]int{pending, scheduled, running, dead}; got != want {
		t.Fatalf("Counts pending/scheduled/running/dead = %v, want %v", got, want)
	}
}

func get(t *testing.T, s *memstream.Stream, id string) peonify.TaskInfo {
	t.Helper()
	ti, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return ti
}

func TestDefaults(t *testing.T) {
	s := memstream.New(memstream.Config{})
	defer s.Close(context.Background())
	if s.Name() != "memory" {
		t.Errorf("Name() = %q, want memory", s.Name())
	}
	enqueue(t, s, &peonify.Task{Type: "x"})
	before := time.Now()
	d := pollOne(t, s)
	if got := d.Deadline.Sub(before); got < memstream.DefaultLease-time.Second || got > memstream.DefaultLease+time.Second {
		t.Errorf("Deadline is %s from now, want about %s", got, memstream.DefaultLease)
	}
	if n := memstream.New(memstream.Config{Name: "fan-in"}).Name(); n != "fan-in" {
		t.Errorf("Name() = %q, want fan-in", n)
	}
}

func TestEnqueuePollDelivers(t *testing.T) {
	s, c := newStream(t)
	task := &peonify.Task{Type: "email", Payload: []byte(`{"to":"a"}`), Headers: map[string]string{"k": "v"}, MaxAttempts: 3}
	enqueue(t, s, task)
	if task.ID == "" {
		t.Fatal("Enqueue did not fill the caller's empty ID")
	}
	if !task.EnqueuedAt.Equal(c.Now()) {
		t.Errorf("EnqueuedAt = %v, want the clock's %v", task.EnqueuedAt, c.Now())
	}
	// The caller may reuse its task: the stream keeps its own copy.
	task.Payload[2] = 'X'
	task.Headers["k"] = "changed"

	d := pollOne(t, s)
	switch {
	case d.Task.ID != task.ID:
		t.Errorf("delivered ID %q, want %q", d.Task.ID, task.ID)
	case string(d.Task.Payload) != `{"to":"a"}`:
		t.Errorf("delivered payload %q: the stream shares the caller's bytes", d.Task.Payload)
	case d.Task.Headers["k"] != "v":
		t.Errorf("delivered header %q: the stream shares the caller's map", d.Task.Headers["k"])
	case d.Task.Attempt != 1:
		t.Errorf("Attempt = %d, want 1", d.Task.Attempt)
	case d.Task.MaxAttempts != 3 || d.Task.Type != "email":
		t.Errorf("delivered task %+v lost fields", d.Task)
	case d.Token == 0:
		t.Error("Token is zero")
	case !d.Deadline.Equal(c.Now().Add(lease)):
		t.Errorf("Deadline = %v, want now+lease %v", d.Deadline, c.Now().Add(lease))
	}
	pollNone(t, s) // leased: invisible
	wantCounts(t, s, 0, 0, 1, 0)
	ti := get(t, s, task.ID)
	if ti.State != peonify.StateRunning || ti.Attempts != 1 || !ti.LeaseUntil.Equal(d.Deadline) {
		t.Errorf("Get = state %s attempts %d lease %v; want running, 1, %v", ti.State, ti.Attempts, ti.LeaseUntil, d.Deadline)
	}
	if err := s.Ack(context.Background(), d); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	wantCounts(t, s, 0, 0, 0, 0)
	if _, err := s.Get(context.Background(), task.ID); !errors.Is(err, peonify.ErrNotFound) {
		t.Errorf("Get after Ack: %v, want ErrNotFound", err)
	}
	pollNone(t, s)
}

func TestEnqueueKeepsGivenIDAndTime(t *testing.T) {
	s, _ := newStream(t)
	at := time.Date(2020, 5, 6, 0, 0, 0, 0, time.UTC)
	enqueue(t, s, &peonify.Task{ID: "mine", Type: "x", EnqueuedAt: at, Attempt: 7, LastError: "old"})
	d := pollOne(t, s)
	if d.Task.ID != "mine" || !d.Task.EnqueuedAt.Equal(at) {
		t.Errorf("delivered ID %q EnqueuedAt %v, want mine and %v", d.Task.ID, d.Task.EnqueuedAt, at)
	}
	if d.Task.Attempt != 1 || d.Task.LastError != "" {
		t.Errorf("delivered Attempt %d LastError %q; a new task starts at attempt 1 with no error", d.Task.Attempt, d.Task.LastError)
	}
}

func TestEnqueueInvalidStoresNothing(t *testing.T) {
	s, _ := newStream(t)
	good := &peonify.Task{Type: "x"}
	err := s.Enqueue(context.Background(), good, &peonify.Task{ID: "no-type"})
	var inv *peonify.InvalidTaskError
	if !errors.As(err, &inv) {
		t.Fatalf("Enqueue with a task without Type: %v, want *InvalidTaskError", err)
	}
	if err := s.Enqueue(context.Background(), nil); !errors.As(err, &inv) {
		t.Fatalf("Enqueue(nil): %v, want *InvalidTaskError", err)
	}
	wantCounts(t, s, 0, 0, 0, 0)
	if err := s.Enqueue(context.Background()); err != nil {
		t.Errorf("Enqueue of nothing: %v", err)
	}
}

func TestPollArguments(t *testing.T) {
	s, _ := newStream(t)
	enqueue(t, s, &peonify.Task{Type: "x"}, &peonify.Task{Type: "x"}, &peonify.Task{Type: "x"})
	for _, limit := range []int{0, -1} {
		if ds, err := s.Poll(context.Background(), limit); err != nil || len(ds) != 0 {
			t.Errorf("Poll(%d) = %d deliveries, %v; want none and no error", limit, len(ds), err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Poll(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Poll with a cancelled ctx: %v, want context.Canceled", err)
	}
	if err := s.Enqueue(ctx, &peonify.Task{Type: "x"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Enqueue with a cancelled ctx: %v, want context.Canceled", err)
	}
	if got := len(poll(t, s, 2)); got != 2 {
		t.Errorf("Poll(2) with 3 ready returned %d", got)
	}
	if got := len(poll(t, s, 5)); got != 1 {
		t.Errorf("Poll(5) with 1 ready returned %d", got)
	}
}

func TestPriorityThenAvailabilityOrder(t *testing.T) {
	s, c := newStream(t)
	now := c.Now()
	enqueue(t, s,
		&peonify.Task{ID: "low-1", Type: "x", Priority: -1},
		&peonify.Task{ID: "mid-1", Type: "x"},
		&peonify.Task{ID: "high-1", Type: "x", Priority: 5},
		&peonify.Task{ID: "mid-2", Type: "x"},
		&peonify.Task{ID: "high-2", Type: "x", Priority: 5},
		// Due an hour ago: ahead of the other mid tasks, enqueued just now.
		&peonify.Task{ID: "mid-0", Type: "x", RunAt: now.Add(-time.Hour)},
	)
	want := []string{"high-1", "high-2", "mid-0", "mid-1", "mid-2", "low-1"}
	if got := ids(poll(t, s, 10)); !slices.Equal(got, want) {
		t.Errorf("delivery order %v, want %v", got, want)
	}
}

func TestPriorityOrderRandomized(t *testing.T) {
	s, _ := newStream(t)
	const n = 500
	var tasks []*peonify.Task
	for i := range n {
		tasks = append(tasks, &peonify.Task{ID: fmt.Sprintf("t%04d", i), Type: "x", Priority: (i * 7919) % 13})
	}
	enqueue(t, s, tasks...)
	// Delete some from the middle of the heap; the order must hold.
	if n, err := s.Delete(context.Background(), "t0100", "t0200", "t0300"); err != nil || n != 3 {
		t.Fatalf("Delete = %d, %v; want 3", n, err)
	}
	var got []peonify.Delivery
	for {
		ds := poll(t, s, 7)
		if len(ds) == 0 {
			break
		}
		got = append(got, ds...)
	}
	if len(got) != n-3 {
		t.Fatalf("polled %d tasks, want %d", len(got), n-3)
	}
	for i := 1; i < len(got); i++ {
		a, b := got[i-1].Task, got[i].Task
		if a.Priority < b.Priority || (a.Priority == b.Priority && a.ID > b.ID) {
			t.Fatalf("%s (priority %d) delivered before %s (priority %d)", a.ID, a.Priority, b.ID, b.Priority)
		}
	}
}

func TestScheduledUntilRunAt(t *testing.T) {
	s, c := newStream(t)
	enqueue(t, s,
		&peonify.Task{ID: "later", Type: "x", RunAt: c.Now().Add(2 * time.Minute)},
		&peonify.Task{ID: "soon", Type: "x", RunAt: c.Now().Add(time.Minute), Priority: -3},
	)
	pollNone(t, s)
	wantCounts(t, s, 0, 2, 0, 0)
	if ti := get(t, s, "soon"); ti.State != peonify.StateScheduled {
		t.Errorf("state %s, want scheduled", ti.State)
	}
	c.Advance(time.Minute - time.Nanosecond)
	pollNone(t, s)
	c.Advance(time.Nanosecond)
	if d := pollOne(t, s); d.Task.ID != "soon" {
		t.Errorf("got %s, want soon", d.Task.ID)
	}
	c.Advance(time.Hour)
	if d := pollOne(t, s); d.Task.ID != "later" {
		t.Errorf("got %s, want later", d.Task.ID)
	}
}

func TestLeaseExpiryRedelivers(t *testing.T) {
	s, c := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"})
	d1 := pollOne(t, s)
	c.Advance(lease - time.Nanosecond)
	pollNone(t, s)
	c.Advance(time.Nanosecond)
	wantCounts(t, s, 1, 0, 0, 0)
	d2 := pollOne(t, s)
	if d2.Task.Attempt != 2 || d2.Token == d1.Token {
		t.Errorf("redelivery Attempt %d Token %d (first %d); want attempt 2 and a new token", d2.Task.Attempt, d2.Token, d1.Token)
	}
	if d2.Task.LastError == "" {
		t.Error("redelivery after an expired lease has no LastError saying so")
	}
	if d1.Task.Attempt != 1 {
		t.Errorf("first delivery's task changed to Attempt %d: a handed-out task must not be modified", d1.Task.Attempt)
	}

	// The stale claim cannot touch the new one.
	if err := s.Ack(context.Background(), d1); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("stale Ack: %v, want ErrLeaseLost", err)
	}
	if err := s.Nack(context.Background(), d1, peonify.NackOptions{Outcome: peonify.OutcomeDead}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("stale Nack: %v, want ErrLeaseLost", err)
	}
	if _, err := s.Extend(context.Background(), d1, time.Hour); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("stale Extend: %v, want ErrLeaseLost", err)
	}
	if ti := get(t, s, "a"); ti.State != peonify.StateRunning || !ti.LeaseUntil.Equal(d2.Deadline) || ti.Attempts != 2 {
		t.Errorf("after stale calls: %s until %v attempts %d; want running until %v, 2 attempts", ti.State, ti.LeaseUntil, ti.Attempts, d2.Deadline)
	}
	if err := s.Ack(context.Background(), d2); err != nil {
		t.Fatalf("Ack of the current claim: %v", err)
	}
	wantCounts(t, s, 0, 0, 0, 0)
}

func TestClaimEndsAtDeadline(t *testing.T) {
	s, c := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"}, &peonify.Task{ID: "b", Type: "x"}, &peonify.Task{ID: "c", Type: "x"})
	ds := poll(t, s, 3)
	c.Advance(lease)
	// An expired lease is not revived.
	if _, err := s.Extend(context.Background(), ds[0], lease); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("Extend after the deadline: %v, want ErrLeaseLost", err)
	}
	// Until the stream notices the expiry no one else holds the tasks, so
	// a late Ack or Nack is accepted.
	if err := s.Ack(context.Background(), ds[0]); err != nil {
		t.Errorf("late Ack before the expiry was noticed: %v", err)
	}
	if err := s.Nack(context.Background(), ds[1], peonify.NackOptions{Outcome: peonify.OutcomeDead}); err != nil {
		t.Errorf("late Nack before the expiry was noticed: %v", err)
	}
	wantCounts(t, s, 1, 0, 0, 1) // Counts notices: c is pending again
	if err := s.Ack(context.Background(), ds[2]); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("Ack after the expiry was noticed: %v, want ErrLeaseLost", err)
	}
	wantCounts(t, s, 1, 0, 0, 1)
}

func TestExtend(t *testing.T) {
	s, c := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"}, &peonify.Task{ID: "b", Type: "x"})
	ds := poll(t, s, 2)
	c.Advance(lease / 2)
	d, err := s.Extend(context.Background(), ds[0], time.Minute)
	if err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if !d.Deadline.Equal(c.Now().Add(time.Minute)) || d.Token != ds[0].Token || d.Task != ds[0].Task {
		t.Errorf("Extend returned deadline %v token %d; want %v and the same token and task", d.Deadline, d.Token, c.Now().Add(time.Minute))
	}
	if _, err := s.Extend(context.Background(), ds[0], 0); err == nil {
		t.Error("Extend by 0 returned no error")
	}
	c.Advance(lease)
	// b expired; a, extended, did not.
	if got := ids(poll(t, s, 10)); !slices.Equal(got, []string{"b"}) {
		t.Errorf("after the first lease ended, polled %v, want [b]", got)
	}
	// The old Delivery value and the extended one are the same claim.
	if err := s.Ack(context.Background(), ds[0]); err != nil {
		t.Errorf("Ack of the extended claim: %v", err)
	}
	if _, err := s.Extend(context.Background(), d, time.Minute); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("Extend after Ack: %v, want ErrLeaseLost", err)
	}
}

func TestAckIdempotentAndBatched(t *testing.T) {
	s, c := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"}, &peonify.Task{ID: "b", Type: "x"}, &peonify.Task{ID: "c", Type: "x"})
	ds := poll(t, s, 3)
	if err := s.Ack(context.Background(), ds[0]); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if err := s.Ack(context.Background(), ds[0]); err != nil {
		t.Errorf("second Ack of the same delivery: %v, want nil", err)
	}
	// A delivery stripped of its Ref is found by Task.ID.
	if err := s.Ack(context.Background(), peonify.Delivery{Task: ds[0].Task, Token: ds[0].Token}); err != nil {
		t.Errorf("third Ack, without Ref: %v, want nil", err)
	}
	if err := s.Ack(context.Background(), peonify.Delivery{}); err == nil {
		t.Error("Ack of an empty Delivery returned no error")
	}

	// b goes stale; the batch still acks c.
	c.Advance(lease)
	d2 := pollOne(t, s) // a fresh claim of b or c
	err := s.Ack(context.Background(), ds[1], ds[2])
	if !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("batch with stale claims: %v, want ErrLeaseLost", err)
	}
	if err := s.Ack(context.Background(), d2); err != nil {
		t.Fatalf("Ack of the fresh claim: %v", err)
	}
	wantCounts(t, s, 1, 0, 0, 0)
	if err := s.Ack(context.Background()); err != nil {
		t.Errorf("Ack of nothing: %v", err)
	}
}

func TestAckWithoutRefIsFenced(t *testing.T) {
	s, c := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"})
	d1 := pollOne(t, s)
	c.Advance(lease)
	d2 := pollOne(t, s)
	if err := s.Ack(context.Background(), peonify.Delivery{Task: d1.Task, Token: d1.Token}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("stale Ack without Ref: %v, want ErrLeaseLost", err)
	}
	if err := s.Ack(context.Background(), peonify.Delivery{Task: d2.Task, Token: d2.Token}); err != nil {
		t.Errorf("current Ack without Ref: %v", err)
	}
	wantCounts(t, s, 0, 0, 0, 0)
}

func TestTokenNotReusedAfterReEnqueue(t *testing.T) {
	s, _ := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"})
	d1 := pollOne(t, s)
	if err := s.Ack(context.Background(), d1); err != nil {
		t.Fatal(err)
	}
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"}) // acked IDs are forgotten
	d2 := pollOne(t, s)
	if d2.Token == d1.Token {
		t.Fatal("a re-enqueued task got the token of its acked predecessor")
	}
	if err := s.Nack(context.Background(), d1, peonify.NackOptions{Outcome: peonify.OutcomeDead}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("Nack of the acked predecessor: %v, want ErrLeaseLost", err)
	}
	if ti := get(t, s, "a"); ti.State != peonify.StateRunning {
		t.Errorf("state %s, want running", ti.State)
	}
}

func TestNackFailed(t *testing.T) {
	s, c := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"})
	d := pollOne(t, s)
	if err := s.Nack(context.Background(), d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Minute, Reason: "boom"}); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	ti := get(t, s, "a")
	if ti.State != peonify.StateScheduled || ti.Attempts != 1 || ti.LastError != "boom" {
		t.Errorf("after Nack(Failed): %s, attempts %d, error %q; want scheduled, 1, boom", ti.State, ti.Attempts, ti.LastError)
	}
	if err := s.Ack(context.Background(), d); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("Ack after Nack: %v, want ErrLeaseLost", err)
	}
	if err := s.Nack(context.Background(), d, peonify.NackOptions{Outcome: peonify.OutcomeFailed}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("second Nack: %v, want ErrLeaseLost", err)
	}
	c.Advance(time.Minute - 1)
	pollNone(t, s)
	c.Advance(1)
	d2 := pollOne(t, s)
	if d2.Task.Attempt != 2 || d2.Task.LastError != "boom" {
		t.Errorf("retry has Attempt %d LastError %q; want 2, boom", d2.Task.Attempt, d2.Task.LastError)
	}
	if d.Task.Attempt != 1 || d.Task.LastError != "" {
		t.Errorf("first delivery's task changed to %d/%q: a handed-out task must not be modified", d.Task.Attempt, d.Task.LastError)
	}
	// Without a delay the task is ready at once.
	if err := s.Nack(context.Background(), d2, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Reason: "again"}); err != nil {
		t.Fatal(err)
	}
	if d3 := pollOne(t, s); d3.Task.Attempt != 3 || d3.Task.LastError != "again" {
		t.Errorf("immediate retry has Attempt %d LastError %q; want 3, again", d3.Task.Attempt, d3.Task.LastError)
	}
}

func TestNackReleased(t *testing.T) {
	s, c := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"}, &peonify.Task{ID: "b", Type: "x"})
	ds := poll(t, s, 2)
	// Handed back unstarted, a keeps its place ahead of b.
	for _, d := range []peonify.Delivery{ds[1], ds[0]} {
		if err := s.Nack(context.Background(), d, peonify.NackOptions{Outcome: peonify.OutcomeReleased, Reason: "shutdown"}); err != nil {
			t.Fatalf("Nack(Released): %v", err)
		}
	}
	if ti := get(t, s, "a"); ti.State != peonify.StatePending || ti.Attempts != 0 || ti.LastError != "" {
		t.Errorf("after release: %s, attempts %d, error %q; want pending, 0, none", ti.State, ti.Attempts, ti.LastError)
	}
	ds = poll(t, s, 2)
	if got := ids(ds); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("after release, order %v; want [a b]", got)
	}
	if ds[0].Task.Attempt != 1 {
		t.Errorf("released task came back as attempt %d, want 1", ds[0].Task.Attempt)
	}
	// Snoozed: released with a delay.
	if err := s.Nack(context.Background(), ds[0], peonify.NackOptions{Outcome: peonify.OutcomeReleased, Delay: time.Second}); err != nil {
		t.Fatal(err)
	}
	pollNone(t, s)
	c.Advance(time.Second)
	if d := pollOne(t, s); d.Task.ID != "a" || d.Task.Attempt != 1 {
		t.Errorf("snoozed task came back as %s attempt %d; want a, attempt 1", d.Task.ID, d.Task.Attempt)
	}
}

func TestNackDead(t *testing.T) {
	s, c := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x", UniqueKey: "slot-1"})
	d := pollOne(t, s)
	if err := s.Nack(context.Background(), d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Reason: "first"}); err != nil {
		t.Fatal(err)
	}
	d = pollOne(t, s)
	if err := s.Nack(context.Background(), d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Delay: time.Hour, Reason: "poison"}); err != nil {
		t.Fatalf("Nack(Dead): %v", err)
	}
	ti := get(t, s, "a")
	if ti.State != peonify.StateDead || ti.Attempts != 2 || ti.LastError != "poison" {
		t.Errorf("after Nack(Dead): %s, attempts %d, error %q; want dead, 2, poison", ti.State, ti.Attempts, ti.LastError)
	}
	c.Advance(24 * time.Hour)
	pollNone(t, s)
	wantCounts(t, s, 0, 0, 0, 1)
	// A dead task's ID is still taken; its UniqueKey is free.
	err := s.Enqueue(context.Background(), &peonify.Task{ID: "a", Type: "x"})
	if !errors.Is(err, peonify.ErrDuplicate) {
		t.Errorf("Enqueue of a dead task's ID: %v, want ErrDuplicate", err)
	}
	enqueue(t, s, &peonify.Task{ID: "b", Type: "x", UniqueKey: "slot-1"})
}

func TestNackInvalidOutcome(t *testing.T) {
	s, _ := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"})
	d := pollOne(t, s)
	for _, o := range []peonify.Outcome{0, 99} {
		if err := s.Nack(context.Background(), d, peonify.NackOptions{Outcome: o}); err == nil {
			t.Errorf("Nack with Outcome %d returned no error", o)
		}
	}
	if err := s.Ack(context.Background(), d); err != nil {
		t.Errorf("Ack after rejected Nacks: %v", err)
	}
}

func TestDuplicates(t *testing.T) {
	s, _ := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"}, &peonify.Task{ID: "u1", Type: "x", UniqueKey: "k"})
	fresh := &peonify.Task{Type: "x"}
	err := s.Enqueue(context.Background(),
		&peonify.Task{ID: "a", Type: "x"},                  // same ID
		&peonify.Task{ID: "u2", Type: "x", UniqueKey: "k"}, // same key, live
		fresh,
		&peonify.Task{ID: "c", Type: "x"},
		&peonify.Task{ID: "c", Type: "x"}, // same ID within the call
	)
	var dup *peonify.DuplicateError
	if !errors.As(err, &dup) || !errors.Is(err, peonify.ErrDuplicate) {
		t.Fatalf("Enqueue with duplicates: %v, want *DuplicateError", err)
	}
	if want := []string{"a", "u2", "c"}; !slices.Equal(dup.IDs, want) {
		t.Errorf("DuplicateError.IDs = %v, want %v", dup.IDs, want)
	}
	wantCounts(t, s, 4, 0, 0, 0) // a, u1, fresh, c
	if _, err := s.Get(context.Background(), fresh.ID); err != nil {
		t.Errorf("the non-duplicate in the call was not stored: %v", err)
	}

	// The key is held while the task is running, released when it is acked.
	for {
		ds := poll(t, s, 10)
		if len(ds) == 0 {
			break
		}
		if err := s.Enqueue(context.Background(), &peonify.Task{ID: "u3", Type: "x", UniqueKey: "k"}); !errors.Is(err, peonify.ErrDuplicate) {
			t.Errorf("Enqueue while the key's task runs: %v, want ErrDuplicate", err)
		}
		if err := s.Ack(context.Background(), ds...); err != nil {
			t.Fatal(err)
		}
	}
	enqueue(t, s, &peonify.Task{ID: "u3", Type: "x", UniqueKey: "k"})
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"}) // acked IDs are forgotten
}

func TestMaxDeadDropsOldest(t *testing.T) {
	c := newClock()
	s := memstream.New(memstream.Config{Now: c.Now, MaxDead: 3})
	defer s.Close(context.Background())
	for i := range 5 {
		id := fmt.Sprintf("d%d", i)
		enqueue(t, s, &peonify.Task{ID: id, Type: "x"})
		if err := s.Nack(context.Background(), pollOne(t, s), peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: id}); err != nil {
			t.Fatal(err)
		}
	}
	wantCounts(t, s, 0, 0, 0, 3)
	list, err := s.List(context.Background(), peonify.ListOptions{State: peonify.StateDead})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ti := range list {
		got = append(got, ti.Task.ID)
	}
	if want := []string{"d2", "d3", "d4"}; !slices.Equal(got, want) {
		t.Errorf("dead tasks kept %v, want the newest %v", got, want)
	}
	if _, err := s.Get(context.Background(), "d0"); !errors.Is(err, peonify.ErrNotFound) {
		t.Errorf("Get of a dropped dead task: %v, want ErrNotFound", err)
	}
	enqueue(t, s, &peonify.Task{ID: "d0", Type: "x"}) // its ID is free again
}

func TestClose(t *testing.T) {
	s := memstream.New(memstream.Config{})
	ctx := context.Background()
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"})
	d := pollOne(t, s)
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	check := func(name string, err error) {
		if !errors.Is(err, peonify.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	_, err := s.Poll(ctx, 1)
	check("Poll", err)
	check("Ack", s.Ack(ctx, d))
	check("Nack", s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed}))
	_, err = s.Extend(ctx, d, time.Second)
	check("Extend", err)
	check("Enqueue", s.Enqueue(ctx, &peonify.Task{Type: "x"}))
	_, err = s.Counts(ctx)
	check("Counts", err)
	_, err = s.List(ctx, peonify.ListOptions{State: peonify.StatePending})
	check("List", err)
	_, err = s.Get(ctx, "a")
	check("Get", err)
	_, err = s.Retry(ctx)
	check("Retry", err)
	_, err = s.Delete(ctx, "a")
	check("Delete", err)
	_, err = s.Purge(ctx, peonify.StateDead)
	check("Purge", err)
	if s.Wake() == nil {
		t.Error("Wake() is nil after Close")
	}
}

func TestWake(t *testing.T) {
	s, _ := newStream(t)
	woken := func() bool {
		select {
		case <-s.Wake():
			return true
		default:
			return false
		}
	}
	if woken() {
		t.Fatal("a new stream signals Wake")
	}
	// Many enqueues never block and leave one signal.
	for range 3 {
		enqueue(t, s, &peonify.Task{Type: "x"})
	}
	if !woken() || woken() {
		t.Error("Enqueue did not leave exactly one signal")
	}
	enqueue(t, s, &peonify.Task{Type: "x", RunAt: time.Now().Add(1000 * time.Hour)})
	if woken() {
		t.Error("Enqueue of a scheduled task signalled Wake")
	}
	d := poll(t, s, 10)
	if err := s.Nack(context.Background(), d[0], peonify.NackOptions{Outcome: peonify.OutcomeFailed}); err != nil {
		t.Fatal(err)
	}
	if !woken() {
		t.Error("Nack without delay did not signal Wake")
	}
	if err := s.Nack(context.Background(), d[1], peonify.NackOptions{Outcome: peonify.OutcomeDead}); err != nil {
		t.Fatal(err)
	}
	if woken() {
		t.Error("Nack(Dead) signalled Wake")
	}
	if n, err := s.Retry(context.Background()); err != nil || n != 1 {
		t.Fatalf("Retry = %d, %v; want 1", n, err)
	}
	if !woken() {
		t.Error("Retry did not signal Wake")
	}
}

// TestWakeOnRealClock checks that, on the real clock, Wake fires when a
// scheduled task falls due, a retry delay ends and a lease expires.
func TestWakeOnRealClock(t *testing.T) {
	s := memstream.New(memstream.Config{Lease: 30 * time.Millisecond})
	defer s.Close(context.Background())
	waitWake := func(what string) {
		t.Helper()
		select {
		case <-s.Wake():
		case <-time.After(5 * time.Second):
			t.Fatalf("no Wake after %s", what)
		}
	}
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x", RunAt: time.Now().Add(30 * time.Millisecond)})
	waitWake("RunAt")
	d := pollOne(t, s)

	// Poll armed the timer for the lease; Nack arms it for the delay.
	if err := s.Nack(context.Background(), d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	for {
		waitWake("a retry delay")
		if ds := poll(t, s, 1); len(ds) == 1 {
			break // the wake for the expired first lease may come first
		}
	}
	waitWake("a lease expiry")
	if d := pollOne(t, s); d.Task.Attempt != 3 {
		t.Errorf("after the lease expired, Attempt %d, want 3", d.Task.Attempt)
	}
}

// TestConcurrentPollers runs pollers, ackers and producers at once on the
// real clock and checks that every task is delivered exactly once.
func TestConcurrentPollers(t *testing.T) {
	s := memstream.New(memstream.Config{Lease: time.Minute})
	defer s.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const (
		producers = 4
		perProd   = 2000
		pollers   = 8
		total     = producers * perProd
	)
	var (
		mu   sync.Mutex
		seen = make(map[string]int, total)
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	for p := range producers {
		wg.Go(func() {
			for i := range perProd {
				task := &peonify.Task{ID: fmt.Sprintf("p%d-%d", p, i), Type: "x", Priority: i % 3}
				if err := s.Enqueue(ctx, task); err != nil {
					t.Errorf("Enqueue: %v", err)
					return
				}
			}
		})
	}
	for w := range pollers {
		wg.Go(func() {
			for {
				ds, err := s.Poll(ctx, 1+w%4)
				if err != nil {
					t.Errorf("Poll: %v", err)
					return
				}
				if len(ds) == 0 {
					select {
					case <-done:
						return
					case <-ctx.Done():
						t.Errorf("timed out: %d of %d tasks seen", len(seen), total)
						return
					case <-s.Wake():
					case <-time.After(time.Millisecond):
					}
					continue
				}
				mu.Lock()
				for _, d := range ds {
					seen[d.Task.ID]++
				}
				if len(seen) == total {
					select {
					case <-done:
					default:
						close(done)
					}
				}
				mu.Unlock()
				if err := s.Ack(ctx, ds...); err != nil {
					t.Errorf("Ack: %v", err)
				}
			}
		})
	}
	wg.Wait()
	for id, n := range seen {
		if n != 1 {
			t.Errorf("task %s delivered %d times", id, n)
		}
	}
	if len(seen) != total {
		t.Errorf("%d tasks delivered, want %d", len(seen), total)
	}
	wantCounts(t, s, 0, 0, 0, 0)
}
