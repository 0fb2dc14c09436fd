package memstream_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

func listIDs(t *testing.T, s interface {
	List(context.Context, peonify.ListOptions) ([]peonify.TaskInfo, error)
}, opts peonify.ListOptions) []string {
	t.Helper()
	infos, err := s.List(context.Background(), opts)
	if err != nil {
		t.Fatalf("List(%+v): %v", opts, err)
	}
	out := make([]string, len(infos))
	for i, ti := range infos {
		if ti.State != opts.State {
			t.Errorf("List(%s) returned %s in state %s", opts.State, ti.Task.ID, ti.State)
		}
		out[i] = ti.Task.ID
	}
	return out
}

func TestListPaging(t *testing.T) {
	s, _ := newStream(t)
	var want []string
	for i := 25; i > 0; i-- { // enqueued out of ID order
		typ := "even"
		if i%2 == 1 {
			typ = "odd"
		}
		enqueue(t, s, &peonify.Task{ID: fmt.Sprintf("t%02d", i), Type: typ, Priority: i % 4})
	}
	for i := 1; i <= 25; i++ {
		want = append(want, fmt.Sprintf("t%02d", i))
	}
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		page := listIDs(t, s, peonify.ListOptions{State: peonify.StatePending, Limit: 10, After: after})
		if len(page) == 0 {
			if pages != 3 {
				t.Errorf("paged in %d pages, want 3", pages)
			}
			break
		}
		got = append(got, page...)
		after = page[len(page)-1]
	}
	if !slices.Equal(got, want) {
		t.Errorf("paged IDs %v, want %v", got, want)
	}
	odd := listIDs(t, s, peonify.ListOptions{State: peonify.StatePending, Type: "odd", Limit: 3, After: "t04"})
	if w := []string{"t05", "t07", "t09"}; !slices.Equal(odd, w) {
		t.Errorf("odd page %v, want %v", odd, w)
	}
	if got := listIDs(t, s, peonify.ListOptions{State: peonify.StatePending}); len(got) != 25 {
		t.Errorf("default limit listed %d, want all 25", len(got))
	}
	for _, st := range []peonify.State{peonify.StateScheduled, peonify.StateRunning, peonify.StateDead, peonify.StateDone} {
		if got := listIDs(t, s, peonify.ListOptions{State: st}); len(got) != 0 {
			t.Errorf("List(%s) = %v, want none", st, got)
		}
	}
}

func TestListEachState(t *testing.T) {
	s, c := newStream(t)
	enqueue(t, s,
		&peonify.Task{ID: "run", Type: "x", Priority: 9, Payload: []byte("p")},
		&peonify.Task{ID: "dead", Type: "x", Priority: 8},
		&peonify.Task{ID: "wait", Type: "x", RunAt: c.Now().Add(time.Hour)},
		&peonify.Task{ID: "ready", Type: "x"},
	)
	ds := poll(t, s, 2)
	if err := s.Nack(context.Background(), ds[1], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "bad"}); err != nil {
		t.Fatal(err)
	}
	for st, want := range map[peonify.State]string{
		peonify.StatePending: "ready", peonify.StateScheduled: "wait", peonify.StateRunning: "run", peonify.StateDead: "dead",
	} {
		if got := listIDs(t, s, peonify.ListOptions{State: st}); !slices.Equal(got, []string{want}) {
			t.Errorf("List(%s) = %v, want [%s]", st, got, want)
		}
	}
	infos, _ := s.List(context.Background(), peonify.ListOptions{State: peonify.StateRunning})
	ti := infos[0]
	if ti.Attempts != 1 || ti.Task.Attempt != 1 || !ti.LeaseUntil.Equal(ds[0].Deadline) || !ti.UpdatedAt.Equal(c.Now()) {
		t.Errorf("running info %+v: want 1 attempt, lease until %v, updated now", ti, ds[0].Deadline)
	}
	// The info is a copy: changing it does not change the stored task.
	ti.Task.Payload[0] = 'X'
	if string(ds[0].Task.Payload) != "p" {
		t.Error("List shares the stored payload")
	}
	if dead := get(t, s, "dead"); dead.LastError != "bad" || !dead.LeaseUntil.IsZero() {
		t.Errorf("dead info: error %q lease %v; want bad and no lease", dead.LastError, dead.LeaseUntil)
	}
}

func TestListBadOptions(t *testing.T) {
	s, _ := newStream(t)
	for _, opts := range []peonify.ListOptions{
		{},
		{State: "finished"},
		{State: peonify.StatePending, Limit: -1},
	} {
		if _, err := s.List(context.Background(), opts); err == nil {
			t.Errorf("List(%+v) returned no error", opts)
		}
	}
}

func TestGetNotFound(t *testing.T) {
	s, _ := newStream(t)
	_, err := s.Get(context.Background(), "nope")
	if !errors.Is(err, peonify.ErrNotFound) {
		t.Errorf("Get(nope): %v, want ErrNotFound", err)
	}
}

func TestRetryDead(t *testing.T) {
	s, _ := newStream(t)
	for _, id := range []string{"a", "b", "c"} {
		enqueue(t, s, &peonify.Task{ID: id, Type: "x"})
		d := pollOne(t, s)
		if err := s.Nack(context.Background(), d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "bad " + id}); err != nil {
			t.Fatal(err)
		}
	}
	enqueue(t, s, &peonify.Task{ID: "live", Type: "x"})
	n, err := s.Retry(context.Background(), "b", "live", "missing", "b")
	if err != nil || n != 1 {
		t.Fatalf("Retry(b, live, missing, b) = %d, %v; want 1", n, err)
	}
	if ti := get(t, s, "b"); ti.State != peonify.StatePending || ti.Attempts != 0 || ti.LastError != "" {
		t.Errorf("retried task: %s, attempts %d, error %q; want pending, 0, none", ti.State, ti.Attempts, ti.LastError)
	}
	wantCounts(t, s, 2, 0, 0, 2)
	n, err = s.Retry(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("Retry() = %d, %v; want 2", n, err)
	}
	wantCounts(t, s, 4, 0, 0, 0)
	for _, d := range poll(t, s, 10) {
		if d.Task.Attempt != 1 || d.Task.LastError != "" {
			t.Errorf("%s delivered as attempt %d with error %q; a retried task starts afresh", d.Task.ID, d.Task.Attempt, d.Task.LastError)
		}
	}
}

func TestRetryKeepsUniqueKeyOfNewerTask(t *testing.T) {
	s, _ := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "old", Type: "x", UniqueKey: "k"})
	if err := s.Nack(context.Background(), pollOne(t, s), peonify.NackOptions{Outcome: peonify.OutcomeDead}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, s, &peonify.Task{ID: "new", Type: "x", UniqueKey: "k"})
	if n, err := s.Retry(context.Background(), "old"); err != nil || n != 1 {
		t.Fatalf("Retry = %d, %v; want 1", n, err)
	}
	// Acking the retried task must not free the key held by "new".
	for _, d := range poll(t, s, 10) {
		if d.Task.ID == "old" {
			if err := s.Ack(context.Background(), d); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Enqueue(context.Background(), &peonify.Task{ID: "third", Type: "x", UniqueKey: "k"}); !errors.Is(err, peonify.ErrDuplicate) {
		t.Errorf("Enqueue while new holds the key: %v, want ErrDuplicate", err)
	}
}

func TestDelete(t *testing.T) {
	s, c := newStream(t)
	enqueue(t, s,
		&peonify.Task{ID: "run", Type: "x", Priority: 1},
		&peonify.Task{ID: "ready", Type: "x", UniqueKey: "k"},
		&peonify.Task{ID: "wait", Type: "x", RunAt: c.Now().Add(time.Hour)},
		&peonify.Task{ID: "dead", Type: "x", Priority: 1},
	)
	ds := poll(t, s, 2)
	if err := s.Nack(context.Background(), ds[1], peonify.NackOptions{Outcome: peonify.OutcomeDead}); err != nil {
		t.Fatal(err)
	}
	n, err := s.Delete(context.Background(), "run", "ready", "wait", "dead", "missing")
	if err != nil || n != 3 {
		t.Fatalf("Delete = %d, %v; want 3 (all but the running task)", n, err)
	}
	wantCounts(t, s, 0, 0, 1, 0)
	enqueue(t, s, &peonify.Task{ID: "ready", Type: "x", UniqueKey: "k"}) // ID and key are free
	if err := s.Ack(context.Background(), ds[0]); err != nil {
		t.Errorf("Ack of the running task: %v", err)
	}
}

func TestPurge(t *testing.T) {
	s, c := newStream(t)
	ctx := context.Background()
	enqueue(t, s,
		&peonify.Task{ID: "d1", Type: "x", Priority: 2},
		&peonify.Task{ID: "d2", Type: "x", Priority: 2},
		&peonify.Task{ID: "run", Type: "x", Priority: 1},
		&peonify.Task{ID: "p1", Type: "x"},
		&peonify.Task{ID: "p2", Type: "x", UniqueKey: "k"},
		&peonify.Task{ID: "s1", Type: "x", RunAt: c.Now().Add(time.Hour)},
	)
	for _, d := range poll(t, s, 2) {
		if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead}); err != nil {
			t.Fatal(err)
		}
	}
	run := pollOne(t, s)
	if _, err := s.Purge(ctx, peonify.StateRunning); err == nil {
		t.Error("Purge(running) returned no error")
	}
	if _, err := s.Purge(ctx, ""); err == nil {
		t.Error("Purge(\"\") returned no error")
	}
	for _, tc := range []struct {
		st   peonify.State
		want int
	}{{peonify.StateDead, 2}, {peonify.StatePending, 2}, {peonify.StateScheduled, 1}, {peonify.StateDone, 0}, {peonify.StateDead, 0}} {
		if n, err := s.Purge(ctx, tc.st); err != nil || n != tc.want {
			t.Errorf("Purge(%s) = %d, %v; want %d", tc.st, n, err, tc.want)
		}
	}
	wantCounts(t, s, 0, 0, 1, 0)
	enqueue(t, s, &peonify.Task{ID: "p2", Type: "x", UniqueKey: "k"}, &peonify.Task{ID: "d1", Type: "x"})
	if got := ids(poll(t, s, 10)); !slices.Equal(got, []string{"p2", "d1"}) {
		t.Errorf("after purge and re-enqueue, polled %v, want [p2 d1]", got)
	}
	if err := s.Ack(ctx, run); err != nil {
		t.Errorf("Ack of the running task after purges: %v", err)
	}
}

func TestInspectorSeesExpiry(t *testing.T) {
	s, c := newStream(t)
	enqueue(t, s, &peonify.Task{ID: "a", Type: "x"}, &peonify.Task{ID: "b", Type: "x", RunAt: c.Now().Add(time.Second)})
	pollOne(t, s)
	wantCounts(t, s, 0, 1, 1, 0)
	c.Advance(lease)
	wantCounts(t, s, 2, 0, 0, 0)
	if ti := get(t, s, "a"); ti.State != peonify.StatePending || ti.Attempts != 1 || ti.LastError == "" {
		t.Errorf("expired task: %s, attempts %d, error %q; want pending, 1, a reason", ti.State, ti.Attempts, ti.LastError)
	}
}
