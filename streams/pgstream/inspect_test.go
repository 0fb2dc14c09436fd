package pgstream

import (
	"errors"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

func TestInspector(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)

	var tasks []*peonify.Task
	for i := range 5 {
		tk := task("a")
		if i%2 == 1 {
			tk.Type = "b"
		}
		tasks = append(tasks, tk)
	}
	later := task("later")
	later.RunAt = time.Now().Add(time.Hour)
	streamtest.Enqueue(t, s, append(tasks, later)...)

	running := streamtest.Poll(t, s, 2)
	dead := streamtest.Poll(t, s, 1)
	if err := s.Nack(ctx, dead[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "bad payload"}); err != nil {
		t.Fatal(err)
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[peonify.State]int{peonify.StatePending: 2, peonify.StateRunning: 2, peonify.StateDead: 1, peonify.StateScheduled: 1}
	for st, n := range want {
		if counts[st] != n {
			t.Fatalf("Counts = %v, want %v", counts, want)
		}
	}

	// List, with a type filter and paging by ID.
	all, err := s.List(ctx, peonify.ListOptions{State: peonify.StateRunning})
	if err != nil || len(all) != 2 || all[0].Task.ID >= all[1].Task.ID || all[0].LeaseUntil.IsZero() {
		t.Fatalf("List running = %+v, %v", all, err)
	}
	page, err := s.List(ctx, peonify.ListOptions{State: peonify.StateRunning, Limit: 1, After: all[0].Task.ID})
	if err != nil || len(page) != 1 || page[0].Task.ID != all[1].Task.ID {
		t.Fatalf("List page 2 = %+v, %v", page, err)
	}
	sched, err := s.List(ctx, peonify.ListOptions{State: peonify.StateScheduled})
	if err != nil || len(sched) != 1 || sched[0].Task.ID != later.ID || sched[0].State != peonify.StateScheduled {
		t.Fatalf("List scheduled = %+v, %v", sched, err)
	}
	pend, err := s.List(ctx, peonify.ListOptions{State: peonify.StatePending, Type: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pend {
		if p.Task.Type != "b" || p.State != peonify.StatePending {
			t.Fatalf("List pending of type b returned %+v", p)
		}
	}
	if _, err := s.List(ctx, peonify.ListOptions{State: "bogus"}); err == nil {
		t.Fatal("List of an unknown state succeeded")
	}

	// Get.
	info, err := s.Get(ctx, dead[0].Task.ID)
	if err != nil || info.State != peonify.StateDead || info.LastError != "bad payload" || info.Attempts != 1 {
		t.Fatalf("Get dead = %+v, %v", info, err)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("Get unknown = %v", err)
	}

	// Retry the dead task: pending again with a fresh attempt count.
	if n, err := s.Retry(ctx); err != nil || n != 1 {
		t.Fatalf("Retry = %d, %v", n, err)
	}
	if info, _ := s.Get(ctx, dead[0].Task.ID); info.State != peonify.StatePending || info.Attempts != 0 {
		t.Fatalf("after Retry: %+v", info)
	}

	// Delete leaves running tasks alone.
	n, err := s.Delete(ctx, running[0].Task.ID, later.ID, "nope")
	if err != nil || n != 1 {
		t.Fatalf("Delete = %d, %v; want only the scheduled task removed", n, err)
	}
	if _, err := s.Purge(ctx, peonify.StateRunning); err == nil {
		t.Fatal("Purge of running tasks succeeded")
	}
	if n, err := s.Purge(ctx, peonify.StatePending); err != nil || n != 3 {
		t.Fatalf("Purge pending = %d, %v; want 3", n, err)
	}
	if err := s.Ack(ctx, running...); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Counts(ctx); len(c) != 0 {
		t.Fatalf("queue not empty: %v", c)
	}
}

func TestRetryKeepsUniqueKeyUnique(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)
	first := task("u")
	first.UniqueKey = "k"
	streamtest.Enqueue(t, s, first)
	ds := streamtest.Poll(t, s, 1)
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead}); err != nil {
		t.Fatal(err)
	}
	second := task("u")
	second.UniqueKey = "k"
	streamtest.Enqueue(t, s, second) // the dead task is not live
	if n, err := s.Retry(ctx, first.ID); err != nil || n != 0 {
		t.Fatalf("Retry of a dead task whose key is live again = %d, %v; want 0, nil", n, err)
	}
}

func TestKeepDoneAndCleanup(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{KeepDone: time.Millisecond, KeepDead: time.Millisecond, CleanupInterval: time.Hour})
	ctx := streamtest.Context(t)
	a, b := task("a"), task("b")
	streamtest.Enqueue(t, s, a, b)
	ds := streamtest.Poll(t, s, 2)
	if err := s.Ack(ctx, ds[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.Nack(ctx, ds[1], peonify.NackOptions{Outcome: peonify.OutcomeDead}); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Counts(ctx); c[peonify.StateDone] != 1 || c[peonify.StateDead] != 1 {
		t.Fatalf("Counts = %v, want 1 done, 1 dead", c)
	}
	// A done task still blocks its ID.
	again := task("a")
	again.ID = ds[0].Task.ID
	if err := s.Enqueue(ctx, again); !isDup(err) {
		t.Fatalf("re-enqueue of a kept done task = %v, want ErrDuplicate", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	total := 0
	for total < 2 {
		n, err := s.cleanup(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if time.Now().After(deadline) {
			t.Fatalf("cleanup removed %d finished tasks, want 2", total)
		}
	}
	if c, _ := s.Counts(ctx); len(c) != 0 {
		t.Fatalf("Counts after cleanup = %v", c)
	}

	forever := newTestStream(t, pool, Config{KeepDead: -1})
	streamtest.Enqueue(t, forever, task("d"))
	d := streamtest.Poll(t, forever, 1)
	if err := forever.Nack(ctx, d[0], peonify.NackOptions{Outcome: peonify.OutcomeDead}); err != nil {
		t.Fatal(err)
	}
	if n, err := forever.cleanup(ctx); err != nil || n != 0 {
		t.Fatalf("cleanup with KeepDead<0 removed %d, %v", n, err)
	}
}
