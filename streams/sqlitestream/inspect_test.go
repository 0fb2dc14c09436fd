package sqlitestream

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// fillStates stores tasks in every state: p1 p2 pending, s1 scheduled,
// r1 running, d1 d2 dead (d2 of type other), and returns the running
// delivery.
func fillStates(t *testing.T, s *Stream, clk *streamtest.Clock) peonify.Delivery {
	t.Helper()
	ctx := context.Background()
	enqueue(t, s, task("d1"), &peonify.Task{ID: "d2", Type: "other"})
	for range 2 {
		if err := s.Nack(ctx, pollOne(t, s), peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "bad"}); err != nil {
			t.Fatal(err)
		}
	}
	enqueue(t, s, task("r1"))
	r := pollOne(t, s)
	enqueue(t, s, task("p1"), task("p2"), &peonify.Task{ID: "s1", Type: "test", RunAt: clk.Now().Add(time.Hour)})
	return r
}

func ids(infos []peonify.TaskInfo) string {
	var out []string
	for _, i := range infos {
		out = append(out, i.Task.ID)
	}
	return fmt.Sprint(out)
}

func list(t *testing.T, s *Stream, opts peonify.ListOptions) []peonify.TaskInfo {
	t.Helper()
	infos, err := s.List(context.Background(), opts)
	if err != nil {
		t.Fatalf("list %+v: %v", opts, err)
	}
	return infos
}

func TestCountsAndList(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Minute}, clk)
	fillStates(t, s, clk)
	wantCounts(t, s, map[peonify.State]int{
		peonify.StatePending: 2, peonify.StateScheduled: 1, peonify.StateRunning: 1, peonify.StateDead: 2,
	})
	for state, want := range map[peonify.State]string{
		peonify.StatePending:   "[p1 p2]",
		peonify.StateScheduled: "[s1]",
		peonify.StateRunning:   "[r1]",
		peonify.StateDead:      "[d1 d2]",
		peonify.StateDone:      "[]",
	} {
		infos := list(t, s, peonify.ListOptions{State: state})
		if got := ids(infos); got != want {
			t.Errorf("List(%s) = %s, want %s", state, got, want)
		}
		for _, info := range infos {
			if info.State != state {
				t.Errorf("List(%s) returned %s in state %s", state, info.Task.ID, info.State)
			}
		}
	}
	if got := ids(list(t, s, peonify.ListOptions{State: peonify.StateDead, Type: "other"})); got != "[d2]" {
		t.Errorf("List(dead, type other) = %s, want [d2]", got)
	}
	// Paging.
	if got := ids(list(t, s, peonify.ListOptions{State: peonify.StateDead, Limit: 1})); got != "[d1]" {
		t.Errorf("first page = %s, want [d1]", got)
	}
	if got := ids(list(t, s, peonify.ListOptions{State: peonify.StateDead, Limit: 1, After: "d1"})); got != "[d2]" {
		t.Errorf("second page = %s, want [d2]", got)
	}
	if got := ids(list(t, s, peonify.ListOptions{State: peonify.StateDead, After: "d2"})); got != "[]" {
		t.Errorf("third page = %s, want []", got)
	}
	if _, err := s.List(context.Background(), peonify.ListOptions{State: "bogus"}); err == nil {
		t.Error("List of an unknown state succeeded")
	}
	if _, err := s.List(context.Background(), peonify.ListOptions{State: peonify.StateDead, Limit: -1}); err == nil {
		t.Error("List with a negative limit succeeded")
	}

	// Time passes: the scheduled task is due and the lease has ended, so
	// both are reported pending before any poll changes them.
	clk.Advance(time.Hour)
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 4, peonify.StateDead: 2})
	if got := ids(list(t, s, peonify.ListOptions{State: peonify.StatePending})); got != "[p1 p2 r1 s1]" {
		t.Errorf("List(pending) after an hour = %s, want [p1 p2 r1 s1]", got)
	}
	if info := get(t, s, "r1"); info.State != peonify.StatePending || !info.LeaseUntil.IsZero() || info.Attempts != 1 {
		t.Errorf("r1 after its lease ended: %+v; want pending, no lease, 1 attempt", info)
	}
}

func TestGet(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Minute}, clk)
	r := fillStates(t, s, clk)
	info := get(t, s, "r1")
	if info.State != peonify.StateRunning || !info.LeaseUntil.Equal(r.Deadline) || info.Attempts != 1 ||
		info.Task.Attempt != 1 || !info.UpdatedAt.Equal(clk.Now()) {
		t.Errorf("Get(r1) = %+v; want running until %v with 1 attempt", info, r.Deadline)
	}
	info = get(t, s, "d2")
	if info.State != peonify.StateDead || info.LastError != "bad" || info.Task.LastError != "bad" || info.Task.Type != "other" {
		t.Errorf("Get(d2) = %+v; want dead with reason bad", info)
	}
	if _, err := s.Get(context.Background(), "nope"); !errors.Is(err, peonify.ErrNotFound) {
		t.Errorf("Get of an unknown ID = %v, want ErrNotFound", err)
	}
}

func TestRetry(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{}, clk)
	ctx := context.Background()
	fillStates(t, s, clk)
	// Non-dead and unknown IDs are not retried.
	if n, err := s.Retry(ctx, "d1", "p1", "r1", "nope"); err != nil || n != 1 {
		t.Fatalf("Retry(d1, p1, r1, nope) = %d, %v; want 1", n, err)
	}
	info := get(t, s, "d1")
	if info.State != peonify.StatePending || info.Attempts != 0 || info.LastError != "bad" {
		t.Fatalf("retried task: %+v; want pending, 0 attempts, last error kept", info)
	}
	if n, err := s.Retry(ctx); err != nil || n != 1 {
		t.Fatalf("Retry() = %d, %v; want the 1 remaining dead task", n, err)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 4, peonify.StateScheduled: 1, peonify.StateRunning: 1})
	for _, d := range poll(t, s, 10) {
		if (d.Task.ID == "d1" || d.Task.ID == "d2") && d.Task.Attempt != 1 {
			t.Errorf("retried task %s delivered as attempt %d, want 1", d.Task.ID, d.Task.Attempt)
		}
	}
}

func TestDelete(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Minute}, clk)
	ctx := context.Background()
	r := fillStates(t, s, clk)
	n, err := s.Delete(ctx, "p1", "s1", "d1", "r1", "nope")
	if err != nil || n != 3 {
		t.Fatalf("Delete = %d, %v; want 3 (not the running task nor the unknown one)", n, err)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 1, peonify.StateRunning: 1, peonify.StateDead: 1})
	if n, err := s.Delete(ctx); err != nil || n != 0 {
		t.Fatalf("Delete() = %d, %v; want 0", n, err)
	}
	// Once its lease has ended, a running task can be deleted; its late
	// ack is then harmless.
	clk.Advance(time.Minute)
	if n, err := s.Delete(ctx, "r1"); err != nil || n != 1 {
		t.Fatalf("Delete of a task whose lease ended = %d, %v; want 1", n, err)
	}
	if err := s.Ack(ctx, r); err != nil {
		t.Fatal(err)
	}
}

func TestPurge(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{Lease: time.Minute, KeepDone: time.Hour}, clk)
	ctx := context.Background()
	r := fillStates(t, s, clk)
	if err := s.Ack(ctx, r); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		state peonify.State
		n     int
	}{{peonify.StateDead, 2}, {peonify.StateDone, 1}, {peonify.StateScheduled, 1}, {peonify.StatePending, 2}} {
		if n, err := s.Purge(ctx, tc.state); err != nil || n != tc.n {
			t.Fatalf("Purge(%s) = %d, %v; want %d", tc.state, n, err, tc.n)
		}
		if c := counts(t, s); c[tc.state] != 0 {
			t.Fatalf("after Purge(%s), counts = %v", tc.state, c)
		}
	}
	wantCounts(t, s, nil)
	if _, err := s.Purge(ctx, peonify.StateRunning); err == nil {
		t.Error("Purge(running) succeeded")
	}
	if _, err := s.Purge(ctx, "bogus"); err == nil {
		t.Error("Purge of an unknown state succeeded")
	}
}

func TestKeepDone(t *testing.T) {
	clk := newClock()
	s := openTest(t, Config{KeepDone: time.Hour, KeepDead: 2 * time.Hour}, clk)
	ctx := context.Background()
	enqueue(t, s, task("a"), task("b"))
	if err := s.Ack(ctx, pollOne(t, s)); err != nil {
		t.Fatal(err)
	}
	if err := s.Nack(ctx, pollOne(t, s), peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	info := get(t, s, "a")
	if info.State != peonify.StateDone || info.Attempts != 1 {
		t.Fatalf("acked task: %+v; want done with 1 attempt", info)
	}
	// A done task keeps its ID taken.
	if err := s.Enqueue(ctx, task("a")); !errors.Is(err, peonify.ErrDuplicate) {
		t.Fatalf("enqueue of a done task's ID = %v, want ErrDuplicate", err)
	}
	runCleanup := func() {
		t.Helper()
		if err := s.w.do(ctx, func(tx *wtx) error { _, err := cleanup(tx, s.cfg); return err }); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Hour - time.Second)
	runCleanup()
	wantCounts(t, s, map[peonify.State]int{peonify.StateDone: 1, peonify.StateDead: 1})
	clk.Advance(time.Second)
	runCleanup()
	wantCounts(t, s, map[peonify.State]int{peonify.StateDead: 1})
	clk.Advance(time.Hour)
	runCleanup()
	wantCounts(t, s, nil)
	enqueue(t, s, task("a"))
}

// TestCleanupRuns checks that the writer deletes expired finished tasks by
// itself, on the real clock.
func TestCleanupRuns(t *testing.T) {
	s := openTest(t, Config{KeepDone: time.Millisecond}, nil)
	ctx := context.Background()
	enqueue(t, s, task("a"))
	if err := s.Ack(ctx, pollOne(t, s)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for counts(t, s)[peonify.StateDone] != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the done task was not cleaned up within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCleanupInterval(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want time.Duration
	}{
		{Config{KeepDone: time.Millisecond}, time.Second},
		{Config{KeepDone: time.Minute}, 15 * time.Second},
		{Config{KeepDone: 24 * time.Hour}, time.Minute},
		{Config{KeepDone: 24 * time.Hour, KeepDead: 20 * time.Second}, 5 * time.Second},
	} {
		if got := cleanupInterval(tc.cfg); got != tc.want {
			t.Errorf("cleanupInterval(%+v) = %v, want %v", tc.cfg, got, tc.want)
		}
	}
}
