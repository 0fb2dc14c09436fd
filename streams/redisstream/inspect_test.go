package redisstream

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestInspectorStates walks tasks through every state and checks Counts,
// Get and List with their filters and paging.
func TestInspectorStates(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{Lease: time.Hour})
	ctx := streamtest.Context(t)
	ids := func(infos []peonify.TaskInfo) []string {
		out := make([]string, 0, len(infos))
		for _, i := range infos {
			out = append(out, i.Task.ID)
		}
		return out
	}
	list := func(opts peonify.ListOptions) []string {
		t.Helper()
		infos, err := s.List(ctx, opts)
		if err != nil {
			t.Fatalf("List(%+v): %v", opts, err)
		}
		for _, i := range infos {
			if i.State != opts.State {
				t.Errorf("List(%s) returned task %s in state %s", opts.State, i.Task.ID, i.State)
			}
		}
		return ids(infos)
	}

	// IDs out of enqueue order: List sorts by ID, not by stream position.
	streamtest.Enqueue(t, s,
		&peonify.Task{ID: "p3", Type: "a"}, &peonify.Task{ID: "p1", Type: "b"}, &peonify.Task{ID: "p2", Type: "a"},
		&peonify.Task{ID: "s2", Type: "a", RunAt: time.Now().Add(time.Hour)},
		&peonify.Task{ID: "s1", Type: "b", RunAt: time.Now().Add(2 * time.Hour)},
		&peonify.Task{ID: "r1", Type: "a"}, &peonify.Task{ID: "d1", Type: "a"}, &peonify.Task{ID: "d2", Type: "b"},
	)
	// Claim p3, p1, p2, r1, d1, d2 in stream order, then put the p* back.
	ds := streamtest.Poll(t, s, 6)
	if len(ds) != 6 {
		t.Fatalf("Poll returned %d tasks", len(ds))
	}
	for _, d := range ds {
		var err error
		switch d.Task.ID[0] {
		case 'p':
			err = s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeReleased})
		case 'd':
			err = s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "poison " + d.Task.ID})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 3, peonify.StateScheduled: 2, peonify.StateRunning: 1, peonify.StateDead: 2})

	for _, tc := range []struct {
		opts peonify.ListOptions
		want []string
	}{
		{peonify.ListOptions{State: peonify.StatePending}, []string{"p1", "p2", "p3"}},
		{peonify.ListOptions{State: peonify.StatePending, Type: "a"}, []string{"p2", "p3"}},
		{peonify.ListOptions{State: peonify.StatePending, Limit: 1, After: "p1"}, []string{"p2"}},
		{peonify.ListOptions{State: peonify.StateScheduled}, []string{"s1", "s2"}},
		{peonify.ListOptions{State: peonify.StateScheduled, Type: "a"}, []string{"s2"}},
		{peonify.ListOptions{State: peonify.StateRunning}, []string{"r1"}},
		{peonify.ListOptions{State: peonify.StateDead}, []string{"d1", "d2"}},
		{peonify.ListOptions{State: peonify.StateDead, After: "d1"}, []string{"d2"}},
		{peonify.ListOptions{State: peonify.StateDone}, nil},
	} {
		if got := list(tc.opts); !slices.Equal(got, tc.want) {
			t.Errorf("List(%+v) = %v, want %v", tc.opts, got, tc.want)
		}
	}
	if _, err := s.List(ctx, peonify.ListOptions{State: "nonsense"}); err == nil {
		t.Error("List of an unknown state returned no error")
	}

	for id, want := range map[string]peonify.State{"p1": peonify.StatePending, "s1": peonify.StateScheduled, "r1": peonify.StateRunning, "d2": peonify.StateDead} {
		info, err := s.Get(ctx, id)
		if err != nil || info.State != want || info.Task.ID != id {
			t.Errorf("Get(%s) = %s %s, %v; want state %s", id, info.Task.ID, info.State, err, want)
		}
	}
	if info, _ := s.Get(ctx, "p1"); info.Attempts != 0 {
		t.Errorf("a released task shows %d attempts, want 0", info.Attempts)
	}
	if info, _ := s.Get(ctx, "r1"); info.Attempts != 1 || info.Task.Attempt != 1 || time.Until(info.LeaseUntil) < 50*time.Minute {
		t.Errorf("Get(r1) = %+v; want attempt 1 leased for about an hour", info)
	}
	if info, _ := s.Get(ctx, "d2"); info.LastError != "poison d2" || info.Attempts != 1 || info.UpdatedAt.IsZero() {
		t.Errorf("Get(d2) = %+v; want the dead reason, 1 attempt and when it died", info)
	}
	if info, _ := s.Get(ctx, "s1"); time.Until(info.Task.RunAt) < time.Hour {
		t.Errorf("Get(s1).Task.RunAt = %s, want about 2h from now", info.Task.RunAt)
	}
	for _, id := range []string{"nope", "0-1", ""} {
		if _, err := s.Get(ctx, id); !errors.Is(err, peonify.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

// TestInspectorRepair checks Retry, Delete and Purge.
func TestInspectorRepair(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{Lease: time.Hour})
	ctx := streamtest.Context(t)
	kill := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			streamtest.Enqueue(t, s, &peonify.Task{ID: id, Type: "x", UniqueKey: "u-" + id})
			d := streamtest.Poll(t, s, 1)[0]
			if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "poison"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	kill("d1", "d2", "d3")
	if n, err := s.Retry(ctx, "d2", "nope"); n != 1 || err != nil {
		t.Fatalf("Retry(d2, nope) = %d, %v; want 1", n, err)
	}
	d := streamtest.Poll(t, s, 5)
	if len(d) != 1 || d[0].Task.ID != "d2" || d[0].Task.Attempt != 1 || d[0].Task.LastError != "poison" {
		t.Fatalf("after Retry, Poll returned %v; want d2 as attempt 1 with its last error", d)
	}
	if err := s.Enqueue(ctx, &peonify.Task{Type: "x", UniqueKey: "u-d2"}); !isDup(err) {
		t.Errorf("a retried task does not hold its unique key again: %v", err)
	}
	if n, err := s.Delete(ctx, "d2"); n != 0 || err != nil {
		t.Errorf("Delete of a running task = %d, %v; want 0", n, err)
	}
	if err := s.Ack(ctx, d...); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Retry(ctx); n != 2 || err != nil {
		t.Fatalf("Retry() = %d, %v; want the 2 dead tasks", n, err)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 2})

	streamtest.Enqueue(t, s, &peonify.Task{ID: "later", Type: "x", RunAt: time.Now().Add(time.Hour), UniqueKey: "u-later"})
	if n, err := s.Delete(ctx, "d1", "later", "nope"); n != 2 || err != nil {
		t.Fatalf("Delete(d1, later, nope) = %d, %v; want 2", n, err)
	}
	streamtest.Enqueue(t, s, &peonify.Task{Type: "x", UniqueKey: "u-later"}) // Delete freed the key
	kill("d4", "d5")
	wantCounts(t, s, map[peonify.State]int{peonify.StatePending: 2, peonify.StateDead: 2})
	streamtest.Enqueue(t, s, &peonify.Task{ID: "s1", Type: "x", RunAt: time.Now().Add(time.Hour)})

	if _, err := s.Purge(ctx, peonify.StateRunning); err == nil {
		t.Error("Purge(running) returned no error")
	}
	for _, tc := range []struct {
		state peonify.State
		want  int
	}{{peonify.StateDead, 2}, {peonify.StateScheduled, 1}, {peonify.StatePending, 2}, {peonify.StateDone, 0}} {
		if n, err := s.Purge(ctx, tc.state); n != tc.want || err != nil {
			t.Errorf("Purge(%s) = %d, %v; want %d", tc.state, n, err, tc.want)
		}
	}
	wantCounts(t, s, map[peonify.State]int{})
	if n := c.HLen(ctx, s.Keys().Tasks).Val(); n != 0 {
		t.Errorf("the tasks hash holds %d IDs after every task was purged", n)
	}
	if keys := c.Keys(ctx, s.cfg.Prefix+":*unique*").Val(); len(keys) != 0 {
		t.Errorf("unique keys left after every task was purged: %v", keys)
	}
}

// TestPurgeKeepsRunning checks that Purge(pending) leaves running tasks
// alone, over more than one page.
func TestPurgeKeepsRunning(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{Lease: time.Hour})
	ctx := streamtest.Context(t)
	tasks := streamtest.Tasks(1200, "x")
	streamtest.Enqueue(t, s, tasks...)
	running := streamtest.Poll(t, s, 700)
	if n, err := s.Purge(ctx, peonify.StatePending); n != 500 || err != nil {
		t.Fatalf("Purge(pending) = %d, %v; want 500", n, err)
	}
	wantCounts(t, s, map[peonify.State]int{peonify.StateRunning: 700})
	if err := s.Ack(ctx, running...); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, s, map[peonify.State]int{})
}
