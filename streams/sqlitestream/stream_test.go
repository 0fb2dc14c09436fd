package sqlitestream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newClock returns a time source the tests move by hand.
func newClock() *streamtest.Clock {
	return streamtest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
}

// openTest opens a stream on a new file in the test's temporary directory,
// driven by clk when it is not nil, and closes it at the end of the test.
func openTest(t testing.TB, cfg Config, clk *streamtest.Clock) *Stream {
	t.Helper()
	return openFile(t, filepath.Join(t.TempDir(), "tasks.db"), cfg, clk)
}

func openFile(t testing.TB, path string, cfg Config, clk *streamtest.Clock) *Stream {
	t.Helper()
	now := time.Now
	if clk != nil {
		now = clk.Now
	}
	s, err := open(path, cfg, now)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func enqueue(t testing.TB, s *Stream, tasks ...*peonify.Task) {
	t.Helper()
	if err := s.Enqueue(context.Background(), tasks...); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
}

func poll(t testing.TB, s *Stream, limit int) []peonify.Delivery {
	t.Helper()
	ds, err := s.Poll(context.Background(), limit)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	if len(ds) > limit {
		t.Fatalf("poll(%d) returned %d deliveries", limit, len(ds))
	}
	return ds
}

func pollOne(t testing.TB, s *Stream) peonify.Delivery {
	t.Helper()
	ds := poll(t, s, 1)
	if len(ds) != 1 {
		t.Fatalf("poll returned %d deliveries, want 1", len(ds))
	}
	return ds[0]
}

func pollNone(t testing.TB, s *Stream) {
	t.Helper()
	if ds := poll(t, s, 10); len(ds) != 0 {
		t.Fatalf("poll returned %d deliveries (first %s), want none", len(ds), ds[0].Task.ID)
	}
}

func get(t testing.TB, s *Stream, id string) peonify.TaskInfo {
	t.Helper()
	info, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return info
}

func counts(t testing.TB, s *Stream) map[peonify.State]int {
	t.Helper()
	c, err := s.Counts(context.Background())
	if err != nil {
		t.Fatalf("counts: %v", err)
	}
	return c
}

func wantCounts(t testing.TB, s *Stream, want map[peonify.State]int) {
	t.Helper()
	got := counts(t, s)
	for _, st := range peonify.States {
		if got[st] != want[st] {
			t.Fatalf("counts = %v, want %v", got, want)
		}
	}
}

func task(id string) *peonify.Task { return &peonify.Task{ID: id, Type: "test"} }

func TestRoundTrip(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Minute}, clk)
	in := &peonify.Task{
		ID:          "t1",
		Type:        "email",
		Payload:     []byte{0, 1, 2, 0xff, '{'},
		Headers:     map[string]string{"traceparent": "00-abc", "tenant": "x"},
		MaxAttempts: 7,
		Priority:    3,
		UniqueKey:   "k1",
		RunAt:       clk.Now().Add(-time.Hour),
	}
	enqueue(t, s, in)
	if !in.EnqueuedAt.Equal(clk.Now()) {
		t.Errorf("Enqueue set EnqueuedAt = %v, want %v", in.EnqueuedAt, clk.Now())
	}
	d := pollOne(t, s)
	got := d.Task
	if got.ID != in.ID || got.Type != in.Type || !bytes.Equal(got.Payload, in.Payload) ||
		got.MaxAttempts != 7 || got.Priority != 3 || got.UniqueKey != "k1" ||
		!got.RunAt.Equal(in.RunAt) || !got.EnqueuedAt.Equal(in.EnqueuedAt) ||
		len(got.Headers) != 2 || got.Headers["traceparent"] != "00-abc" || got.Headers["tenant"] != "x" {
		t.Errorf("delivered task = %+v, want %+v", got, in)
	}
	if got.Attempt != 1 || got.LastError != "" {
		t.Errorf("Attempt = %d, LastError = %q; want 1 and empty", got.Attempt, got.LastError)
	}
	if d.Token == 0 {
		t.Error("Token is zero")
	}
	if !d.Deadline.Equal(clk.Now().Add(time.Minute)) {
		t.Errorf("Deadline = %v, want now + Lease", d.Deadline)
	}
	if &got.Payload[0] == &in.Payload[0] {
		t.Error("delivered payload shares memory with the enqueued one")
	}
}

func TestEnqueueFillsIDAndEmptyPayload(t *testing.T) {
	s := openTest(t, Config{}, nil)
	a := &peonify.Task{Type: "test"}
	b := &peonify.Task{Type: "test", Payload: []byte{}}
	enqueue(t, s, a, b)
	if a.ID == "" || b.ID == "" || a.ID == b.ID {
		t.Fatalf("Enqueue gave IDs %q and %q, want two distinct", a.ID, b.ID)
	}
	if a.EnqueuedAt.IsZero() {
		t.Error("EnqueuedAt not set")
	}
	for _, d := range poll(t, s, 2) {
		if len(d.Task.Payload) != 0 || d.Task.Headers != nil {
			t.Errorf("task %s: payload %q, headers %v; want empty", d.Task.ID, d.Task.Payload, d.Task.Headers)
		}
	}
}

func TestEnqueueInvalidStoresNothing(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ok := &peonify.Task{Type: "test"}
	err := s.Enqueue(context.Background(), ok, &peonify.Task{ID: "no-type"})
	var invalid *peonify.InvalidTaskError
	if !errors.As(err, &invalid) || invalid.ID != "no-type" {
		t.Fatalf("Enqueue of a task without Type = %v, want *peonify.InvalidTaskError for no-type", err)
	}
	if ok.ID != "" || !ok.EnqueuedAt.IsZero() {
		t.Errorf("a rejected Enqueue changed the valid task: %+v", ok)
	}
	wantCounts(t, s, nil)
	if err := s.Enqueue(context.Background(), nil); err == nil {
		t.Fatal("Enqueue(nil) succeeded")
	}
	if err := s.Enqueue(context.Background()); err != nil {
		t.Fatalf("Enqueue() = %v, want nil", err)
	}
}

func TestDuplicateID(t *testing.T) {
	s := openTest(t, Config{}, nil)
	enqueue(t, s, task("a"))
	err := s.Enqueue(context.Background(), task("b"), task("a"), task("c"), task("c"))
	var dup *peonify.DuplicateError
	if !errors.As(err, &dup) || !errors.Is(err, peonify.ErrDuplicate) {
		t.Fatalf("Enqueue with duplicates = %v, want *peonify.DuplicateError", err)
	}
	if fmt.Sprint(dup.IDs) != "[a c]" {
		t.Errorf("DuplicateError.IDs = %v, want [a c]", dup.IDs)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 3})

	// An acked task is deleted, so its ID may be used again.
	for _, d := range poll(t, s, 3) {
		if err := s.Ack(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	enqueue(t, s, task("a"))
}

func TestUniqueKey(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx := context.Background()
	u := func(id string) *peonify.Task { return &peonify.Task{ID: id, Type: "test", UniqueKey: "slot-1"} }
	enqueue(t, s, u("a"))
	if err := s.Enqueue(ctx, u("b")); !errors.Is(err, peonify.ErrDuplicate) {
		t.Fatalf("second task with the key while the first is pending: %v, want ErrDuplicate", err)
	}
	d := pollOne(t, s)
	if err := s.Enqueue(ctx, u("b")); !errors.Is(err, peonify.ErrDuplicate) {
		t.Fatalf("second task with the key while the first runs: %v, want ErrDuplicate", err)
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, s, u("b")) // a dead task does not hold its key
	// Retrying the dead task while b holds the key leaves it dead.
	if n, err := s.Retry(ctx, "a"); err != nil || n != 0 {
		t.Fatalf("Retry of a dead task whose key is taken = %d, %v; want 0, nil", n, err)
	}
	d = pollOne(t, s)
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	enqueue(t, s, u("c")) // nor does an acked one
	// Tasks without a key never conflict.
	enqueue(t, s, task("x"), task("y"))
}

func TestPollMax(t *testing.T) {
	s := openTest(t, Config{}, nil)
	for i := range 25 {
		enqueue(t, s, task(fmt.Sprintf("t%02d", i)))
	}
	seen := map[string]bool{}
	for _, limit := range []int{1, 7, 10, 100} {
		for _, d := range poll(t, s, limit) {
			if seen[d.Task.ID] {
				t.Fatalf("task %s delivered twice while leased", d.Task.ID)
			}
			seen[d.Task.ID] = true
		}
	}
	if len(seen) != 25 {
		t.Fatalf("delivered %d tasks, want 25", len(seen))
	}
	for _, limit := range []int{0, -1} {
		if ds, err := s.Poll(context.Background(), limit); err != nil || len(ds) != 0 {
			t.Errorf("Poll(%d) = %d deliveries, %v; want none and no error", limit, len(ds), err)
		}
	}
}

func TestPriorityThenFIFO(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{}, clk)
	for i, p := range []int{0, 5, 0, -1, 5, 9} {
		enqueue(t, s, &peonify.Task{ID: fmt.Sprintf("t%d", i), Type: "test", Priority: p})
		clk.Advance(time.Millisecond)
	}
	var got []string
	for range 6 {
		got = append(got, pollOne(t, s).Task.ID)
	}
	if want := "[t5 t1 t4 t0 t2 t3]"; fmt.Sprint(got) != want {
		t.Fatalf("delivery order = %v, want %s", got, want)
	}
	// A batch is ordered too.
	for i, p := range []int{1, 3, 2} {
		enqueue(t, s, &peonify.Task{ID: fmt.Sprintf("b%d", i), Type: "test", Priority: p})
	}
	got = got[:0]
	for _, d := range poll(t, s, 3) {
		got = append(got, d.Task.ID)
	}
	if want := "[b1 b2 b0]"; fmt.Sprint(got) != want {
		t.Fatalf("batch order = %v, want %s", got, want)
	}
}

func TestScheduled(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{}, clk)
	enqueue(t, s, &peonify.Task{ID: "later", Type: "test", RunAt: clk.Now().Add(time.Minute)})
	wantCounts(t, s, map[peonify.State]int{peonify.StateScheduled: 1})
	if info := get(t, s, "later"); info.State != peonify.StateScheduled {
		t.Fatalf("state = %s, want scheduled", info.State)
	}
	pollNone(t, s)
	clk.Advance(59 * time.Second)
	pollNone(t, s)
	clk.Advance(time.Second)
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 1}) // due, though not yet promoted
	d := pollOne(t, s)
	if d.Task.ID != "later" || d.Task.Attempt != 1 {
		t.Fatalf("delivered %s attempt %d, want later attempt 1", d.Task.ID, d.Task.Attempt)
	}
}

func TestLeaseExpiryAndFencing(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: 10 * time.Second}, clk)
	ctx := context.Background()
	enqueue(t, s, task("a"))
	first := pollOne(t, s)
	pollNone(t, s) // leased: invisible to other polls
	if info := get(t, s, "a"); info.State != peonify.StateRunning || !info.LeaseUntil.Equal(first.Deadline) {
		t.Fatalf("info = %+v, want running until %v", info, first.Deadline)
	}

	clk.Advance(10 * time.Second)
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 1})
	second := pollOne(t, s)
	if second.Task.Attempt != 2 || second.Token == first.Token {
		t.Fatalf("redelivery: attempt %d token %d; want attempt 2 and a token other than %d",
			second.Task.Attempt, second.Token, first.Token)
	}

	// The first claim is stale: it must not touch the second.
	if err := s.Ack(ctx, first); err != nil && !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("stale ack: %v", err)
	}
	for _, o := range []peonify.Outcome{peonify.OutcomeFailed, peonify.OutcomeReleased, peonify.OutcomeDead} {
		err := s.Nack(ctx, first, peonify.NackOptions{Outcome: o, Reason: "stale"})
		if !errors.Is(err, peonify.ErrLeaseLost) {
			t.Fatalf("stale nack (%s) = %v, want ErrLeaseLost", o, err)
		}
	}
	if _, err := s.Extend(ctx, first, time.Minute); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("stale extend = %v, want ErrLeaseLost", err)
	}
	info := get(t, s, "a")
	if info.State != peonify.StateRunning || info.Attempts != 2 || info.LastError != "" ||
		!info.LeaseUntil.Equal(second.Deadline) {
		t.Fatalf("after stale calls: %+v; want running, 2 attempts, lease of the second claim", info)
	}
	if err := s.Ack(ctx, second); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "a"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("Get after ack = %v, want ErrNotFound", err)
	}
}

func TestAckAfterLeaseEndedBeforeReclaim(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Second}, clk)
	enqueue(t, s, task("a"), task("b"))
	ds := poll(t, s, 2)
	clk.Advance(2 * time.Second)
	// A poll makes the expired leases pending, but nothing claims them
	// again yet: the late acks still complete their tasks.
	if _, err := s.Poll(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(context.Background(), ds...); err != nil {
		t.Fatal(err)
	}
	c := counts(t, s)
	if c[peonify.StatePending]+c[peonify.StateRunning] != 1 {
		t.Fatalf("counts = %v, want the one task claimed again", c)
	}
}

func TestAckIdempotentAndBatched(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx := context.Background()
	for i := range 5 {
		enqueue(t, s, task(fmt.Sprint(i)))
	}
	ds := poll(t, s, 5)
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatalf("second ack = %v, want nil", err)
	}
	if err := s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, s, nil)
	// A delivery that is not a claim (zero Token) touches nothing.
	enqueue(t, s, task("z"))
	if err := s.Ack(ctx, peonify.Delivery{Task: task("z")}); err != nil && !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatal(err)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 1})
	if err := s.Ack(ctx, peonify.Delivery{}); err == nil {
		t.Fatal("Ack of a delivery without a task succeeded")
	}
}

func TestNackFailed(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{}, clk)
	ctx := context.Background()
	enqueue(t, s, task("a"))
	d := pollOne(t, s)
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Minute, Reason: "boom"}); err != nil {
		t.Fatal(err)
	}
	info := get(t, s, "a")
	if info.State != peonify.StateScheduled || info.LastError != "boom" || info.Attempts != 1 {
		t.Fatalf("after failed nack: %+v; want scheduled, last error boom, 1 attempt", info)
	}
	pollNone(t, s)
	clk.Advance(time.Minute)
	d = pollOne(t, s)
	if d.Task.Attempt != 2 || d.Task.LastError != "boom" {
		t.Fatalf("retry: attempt %d, last error %q; want 2 and boom", d.Task.Attempt, d.Task.LastError)
	}
	// A nack without delay makes the task ready at once.
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Reason: "again"}); err != nil {
		t.Fatal(err)
	}
	if d = pollOne(t, s); d.Task.Attempt != 3 || d.Task.LastError != "again" {
		t.Fatalf("retry: attempt %d, last error %q; want 3 and again", d.Task.Attempt, d.Task.LastError)
	}
	// Nacking the same delivery twice: the second is stale.
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed}); err != nil {
		t.Fatal(err)
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("second nack = %v, want ErrLeaseLost", err)
	}
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	if get(t, s, "a").State != peonify.StatePending {
		t.Fatal("an ack of a nacked delivery removed the task")
	}
}

func TestNackReleased(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{}, clk)
	ctx := context.Background()
	enqueue(t, s, task("a"))
	for range 3 {
		d := pollOne(t, s)
		if d.Task.Attempt != 1 {
			t.Fatalf("attempt after releases = %d, want 1", d.Task.Attempt)
		}
		if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeReleased, Reason: "shutdown"}); err != nil {
			t.Fatal(err)
		}
	}
	if info := get(t, s, "a"); info.Attempts != 0 || info.LastError != "" {
		t.Fatalf("after releases: %+v; want 0 attempts and no error", info)
	}
	d := pollOne(t, s)
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeReleased, Delay: time.Second}); err != nil {
		t.Fatal(err)
	}
	pollNone(t, s)
	clk.Advance(time.Second)
	pollOne(t, s)
}

func TestNackDead(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx := context.Background()
	enqueue(t, s, task("a"))
	d := pollOne(t, s)
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Delay: time.Hour, Reason: "poison"}); err != nil {
		t.Fatal(err)
	}
	pollNone(t, s)
	info := get(t, s, "a")
	if info.State != peonify.StateDead || info.LastError != "poison" || info.Attempts != 1 || info.Task.Type != "test" {
		t.Fatalf("dead task: %+v; want dead, reason poison, 1 attempt", info)
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: 0}); err == nil {
		t.Fatal("Nack without an outcome succeeded")
	}
}

func TestExtend(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: 10 * time.Second}, clk)
	ctx := context.Background()
	enqueue(t, s, task("a"))
	d := pollOne(t, s)
	clk.Advance(8 * time.Second)
	d2, err := s.Extend(ctx, d, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !d2.Deadline.Equal(clk.Now().Add(30*time.Second)) || d2.Token != d.Token {
		t.Fatalf("extended delivery: deadline %v token %d; want now+30s and the same token", d2.Deadline, d2.Token)
	}
	clk.Advance(20 * time.Second) // past the first lease, within the extension
	pollNone(t, s)
	// Zero means Config.Lease.
	if d2, err = s.Extend(ctx, d2, 0); err != nil || !d2.Deadline.Equal(clk.Now().Add(10*time.Second)) {
		t.Fatalf("Extend(0) = %v, %v; want the default lease", d2.Deadline, err)
	}
	// A lease that ended may be renewed while nobody claimed the task.
	clk.Advance(11 * time.Second)
	if _, err := s.Extend(ctx, d2, time.Minute); err != nil {
		t.Fatalf("extend after the lease ended, before a new claim: %v", err)
	}
	pollNone(t, s)
	if err := s.Ack(ctx, d2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Extend(ctx, d2, time.Minute); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("extend after ack = %v, want ErrLeaseLost", err)
	}
}

func TestWake(t *testing.T) {
	// Without the watch, whose wakes after the stream's own commits would
	// blur the timing checked here.
	s := openTest(t, Config{WatchInterval: -1}, nil)
	ctx := context.Background()
	drain := func() {
		select {
		case <-s.Wake():
		default:
		}
	}
	waitWake := func(what string, within time.Duration) {
		t.Helper()
		select {
		case <-s.Wake():
		case <-time.After(within):
			t.Fatalf("no wake within %v after %s", within, what)
		}
	}
	drain()
	enqueue(t, s, task("a"))
	waitWake("an enqueue", time.Second)

	// A scheduled task wakes the processor when it falls due.
	start := time.Now()
	enqueue(t, s, &peonify.Task{ID: "b", Type: "test", RunAt: start.Add(100 * time.Millisecond)})
	drain()
	waitWake("a scheduled task fell due", 5*time.Second)
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Fatalf("woke after %v, before the task was due", el)
	}
	if ds := poll(t, s, 2); len(ds) != 2 {
		t.Fatalf("poll after wake returned %d tasks, want 2", len(ds))
	}

	// So does a nack's retry delay.
	enqueue(t, s, task("c"))
	d := pollOne(t, s)
	drain()
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	waitWake("a retry delay ended", 5*time.Second)
	if d := pollOne(t, s); d.Task.ID != "c" {
		t.Fatalf("polled %s, want c", d.Task.ID)
	}
}

func TestClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := Open(path, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	enqueue(t, s, task("a"))
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := s.Enqueue(ctx, task("b")); !errors.Is(err, peonify.ErrClosed) {
		t.Errorf("Enqueue after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Poll(ctx, 1); !errors.Is(err, peonify.ErrClosed) {
		t.Errorf("Poll after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Counts(ctx); !errors.Is(err, peonify.ErrClosed) {
		t.Errorf("Counts after Close = %v, want ErrClosed", err)
	}

	// The task survived.
	s = openFile(t, path, Config{}, nil)
	if d := pollOne(t, s); d.Task.ID != "a" {
		t.Fatalf("after reopening, polled %s, want a", d.Task.ID)
	}
}

func TestCancelledContext(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Poll(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Poll with a cancelled context = %v", err)
	}
	if err := s.Enqueue(ctx, task("a")); !errors.Is(err, context.Canceled) {
		t.Errorf("Enqueue with a cancelled context = %v", err)
	}
	wantCounts(t, s, nil)
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		path string
		cfg  Config
	}{
		{filepath.Join(dir, "a.db"), Config{Lease: -1}},
		{filepath.Join(dir, "a.db"), Config{KeepDone: -1}},
		{filepath.Join(dir, "a.db"), Config{KeepDead: -1}},
		{filepath.Join(dir, "a.db"), Config{BusyTimeout: -1}},
		{filepath.Join(dir, "a.db"), Config{MaxBatch: -1}},
		{filepath.Join(dir, "a.db"), Config{Synchronous: 7}},
		{"", Config{}},
		{":memory:", Config{}},
		{filepath.Join(dir, "a?.db"), Config{}},
		{filepath.Join(dir, "missing", "a.db"), Config{}},
	} {
		s, err := Open(tc.path, tc.cfg)
		if err == nil {
			s.Close(context.Background())
			t.Errorf("Open(%q, %+v) succeeded", tc.path, tc.cfg)
		}
	}
}

func TestSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := Open(path, Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Pretend a newer release wrote the file.
	if _, err := s.db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path, Config{}); err == nil {
		s.Close(context.Background())
		t.Fatal("Open of a file with a newer schema succeeded")
	}
}

func TestSynchronousNormal(t *testing.T) {
	s := openTest(t, Config{Synchronous: SynchronousNormal}, nil)
	var sync int
	if err := s.db.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if sync != 1 {
		t.Fatalf("synchronous = %d, want 1 (NORMAL)", sync)
	}
	var mode string
	if err := s.db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
}

// TestConcurrentExactlyOnce runs producers and consumers at once; with
// leases that never end, every task is delivered exactly once.
func TestConcurrentExactlyOnce(t *testing.T) {
	s := openTest(t, Config{Lease: time.Hour}, nil)
	ctx := context.Background()
	const producers, consumers = 4, 4
	perProducer := 250
	if raceEnabled {
		perProducer = 50
	}
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				if err := s.Enqueue(ctx, task(fmt.Sprintf("p%d-%d", p, i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var mu sync.Mutex
	seen := map[string]int{}
	done := make(chan struct{})
	for range consumers {
		wg.Go(func() {
			for {
				ds, err := s.Poll(ctx, 8)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, d := range ds {
					seen[d.Task.ID]++
				}
				n := len(seen)
				mu.Unlock()
				if err := s.Ack(ctx, ds...); err != nil {
					t.Error(err)
					return
				}
				if n == producers*perProducer {
					return
				}
				if len(ds) == 0 {
					select {
					case <-s.Wake():
					case <-done:
						return
					case <-time.After(10 * time.Millisecond):
					}
				}
			}
		})
	}
	wg.Wait()
	close(done)
	if len(seen) != producers*perProducer {
		t.Fatalf("delivered %d distinct tasks, want %d", len(seen), producers*perProducer)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("task %s delivered %d times", id, n)
		}
	}
	wantCounts(t, s, nil)
}

// TestTwoStreamsOneFile shares a file between two Streams, each with its
// own connections and writer, as two processes would.
func TestTwoStreamsOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	a := openFile(t, path, Config{Lease: time.Hour}, nil)
	b := openFile(t, path, Config{Lease: time.Hour}, nil)
	ctx := context.Background()
	n := 400
	if raceEnabled {
		n = 100
	}
	for i := 0; i < n; i += 50 {
		var batch []*peonify.Task
		for j := i; j < i+50; j++ {
			batch = append(batch, task(fmt.Sprint(j)))
		}
		target := a
		if i%100 == 0 {
			target = b
		}
		enqueue(t, target, batch...)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for _, s := range []*Stream{a, b, a, b} {
		wg.Go(func() {
			for {
				ds, err := s.Poll(ctx, 5)
				if err != nil {
					t.Error(err)
					return
				}
				if len(ds) == 0 {
					return
				}
				mu.Lock()
				for _, d := range ds {
					seen[d.Task.ID]++
				}
				mu.Unlock()
				if err := s.Ack(ctx, ds...); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("delivered %d distinct tasks, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("task %s delivered %d times", id, c)
		}
	}
	wantCounts(t, a, nil)
}

// TestGroupCommit checks that operations arriving while a transaction runs
// share the next one.
func TestGroupCommit(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx := context.Background()
	// Hold the writer in a transaction until every producer has started.
	var started sync.WaitGroup
	const producers = 40
	started.Add(producers)
	hold := make(chan struct{})
	go func() { started.Wait(); close(hold) }()
	holding := make(chan struct{})
	go func() {
		_ = s.w.do(ctx, func(*wtx) error { close(holding); <-hold; return nil })
	}()
	<-holding
	before := s.w.commits.Load()
	var wg sync.WaitGroup
	for i := range producers {
		wg.Go(func() {
			started.Done()
			if err := s.Enqueue(ctx, task(fmt.Sprint(i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	commits := s.w.commits.Load() - before
	if commits >= producers || s.w.largest.Load() < 2 {
		t.Fatalf("%d enqueues took %d transactions, at most %d in one; want them batched",
			producers, commits, s.w.largest.Load())
	}
	t.Logf("%d concurrent enqueues in %d transactions", producers, commits)
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: producers})
}

// TestOpenConcurrently opens one new file from several streams at once, as
// processes starting together would: one creates the schema, the others
// find it.
func TestOpenConcurrently(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	var wg sync.WaitGroup
	streams := make([]*Stream, 6)
	for i := range streams {
		wg.Go(func() {
			s, err := Open(path, Config{})
			if err != nil {
				t.Errorf("open %d: %v", i, err)
				return
			}
			streams[i] = s
		})
	}
	wg.Wait()
	for i, s := range streams {
		if s == nil {
			continue
		}
		enqueue(t, s, task(fmt.Sprint(i)))
		if err := s.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}
}

// TestBatchFailureIsolated checks that an operation failing inside a group
// commit fails alone: its writes are rolled back, and the operations that
// shared its transaction are committed.
func TestBatchFailureIsolated(t *testing.T) {
	s := openTest(t, Config{}, nil)
	ctx := context.Background()
	hold, holding := make(chan struct{}), make(chan struct{})
	go func() {
		_ = s.w.do(ctx, func(*wtx) error { close(holding); <-hold; return nil })
	}()
	<-holding
	var wg sync.WaitGroup
	var started sync.WaitGroup
	started.Add(11)
	errBoom := errors.New("boom")
	var failErr error
	wg.Go(func() {
		started.Done()
		failErr = s.w.do(ctx, func(tx *wtx) error {
			row, err := insertArgs(task("doomed"), tx.now)
			if err != nil {
				return err
			}
			if _, err := tx.exec(tx.st.insert, row...); err != nil {
				return err
			}
			return errBoom
		})
	})
	for i := range 10 {
		wg.Go(func() {
			started.Done()
			if err := s.Enqueue(ctx, task(fmt.Sprint(i))); err != nil {
				t.Error(err)
			}
		})
	}
	started.Wait()
	close(hold)
	wg.Wait()
	if !errors.Is(failErr, errBoom) {
		t.Fatalf("failing operation returned %v, want boom", failErr)
	}
	if _, err := s.Get(ctx, "doomed"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("the failed operation's insert was kept: %v", err)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 10})
}

func TestHeadersMustBeText(t *testing.T) {
	s := openTest(t, Config{}, nil)
	bad := &peonify.Task{ID: "bin", Type: "test", Headers: map[string]string{"sig": "\xff\xfe"}}
	var invalid *peonify.InvalidTaskError
	if err := s.Enqueue(context.Background(), bad); !errors.As(err, &invalid) {
		t.Fatalf("Enqueue with a binary header = %v, want *peonify.InvalidTaskError", err)
	}
	wantCounts(t, s, nil)
}

// TestWatchOtherProcess checks that a commit through another connection to
// the file, as another process makes, wakes the stream.
func TestWatchOtherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s := openFile(t, path, Config{WatchInterval: 10 * time.Millisecond}, nil)
	producer := openFile(t, path, Config{WatchInterval: -1}, nil)
	// settle drops wakes until none came for a while: the watch has read
	// the current data_version.
	settle := func() {
		for {
			select {
			case <-s.Wake():
				continue
			case <-time.After(50 * time.Millisecond):
			}
			return
		}
	}
	settle()
	enqueue(t, producer, task("from-afar"))
	select {
	case <-s.Wake():
	case <-time.After(5 * time.Second):
		t.Fatal("no wake within 5s after another connection enqueued")
	}
	if d := pollOne(t, s); d.Task.ID != "from-afar" {
		t.Fatalf("polled %s", d.Task.ID)
	}
	// An empty poll commits nothing, so it wakes no one.
	settle()
	pollNone(t, producer)
	select {
	case <-s.Wake():
		t.Fatal("an empty poll by another connection woke the stream")
	case <-time.After(100 * time.Millisecond):
	}
}

// TestName: the stream is named "sqlite:" and its file's base name, the
// kind:name form every stream uses, unless Config.Name says otherwise.
func TestName(t *testing.T) {
	if got := openTest(t, Config{}, nil).Name(); got != "sqlite:tasks.db" {
		t.Errorf("Name() = %q, want sqlite:tasks.db", got)
	}
	if got := openTest(t, Config{Name: "local"}, nil).Name(); got != "local" {
		t.Errorf("Name() with Config.Name = %q, want local", got)
	}
}
