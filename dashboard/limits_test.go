package dashboard_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/internal/testlimiter"
	"github.com/peonify/peonify/streams/memstream"
)

func TestLimitsInTheSnapshot(t *testing.T) {
	mem := memstream.New(memstream.Config{})
	defer mem.Close(context.Background())
	stats := []peonify.LimitStat{
		{Name: "email/key", InUse: 2, Waiting: 130, Keys: []peonify.KeyStat{
			{Key: "acme", InUse: 1, Waiting: 100}, {Key: "<b>globex</b>", InUse: 1, Waiting: 30}}},
		{Name: "api", InUse: 0, Waiting: 4},
	}
	ls := testlimiter.New(mem, stats...)
	f := newFixture(t, dashboard.Config{Stores: []dashboard.Store{{Name: "mem", Inspector: ls}}})
	res, body := f.do("GET", "/api/stats", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var s dashboard.Snapshot
	decode(t, body, &s)
	lv := s.Stores[0].Limits
	if len(lv) != 2 || lv[0].Name != "email/key" || lv[0].InUse != 2 || lv[0].Waiting != 130 || len(lv[0].Keys) != 2 ||
		lv[0].Keys[0] != (dashboard.KeyView{Key: "acme", InUse: 1, Waiting: 100}) || lv[1].Name != "api" || lv[1].Waiting != 4 || lv[1].Keys == nil {
		t.Fatalf("limits in the snapshot: %s", body)
	}
	if strings.Contains(string(body), "<b>") {
		t.Errorf("a key is not JSON-escaped: %s", body)
	}

	// A store whose limits cannot be read still shows its counts.
	ls.SetStats(stats, errors.New("connection refused"))
	waitFor(t, "the error in a snapshot", 5*time.Second, func() bool { // after the shared snapshot ages

		_, body = f.do("GET", "/api/stats", nil, request{})
		decode(t, body, &s)
		return s.Stores[0].LimitsError != ""
	})
	if v := s.Stores[0]; !strings.Contains(v.LimitsError, "connection refused") || v.Error != "" || v.Counts == nil {
		t.Fatalf("a store whose limits fail: %s", body)
	}
}

// A store that is not a Limiter has no limits in the snapshot; an explicit
// Store.Limiter is used over the Inspector's.
func TestLimitsOnlyForLimiters(t *testing.T) {
	f := newFixture(t, dashboard.Config{})
	_, body := f.do("GET", "/api/stats", nil, request{})
	if strings.Contains(string(body), `"limits"`) {
		t.Errorf("a memstream without a Limiter shows limits: %s", body)
	}

	mem := memstream.New(memstream.Config{})
	defer mem.Close(context.Background())
	ls := testlimiter.New(memstream.New(memstream.Config{}), peonify.LimitStat{Name: "x", InUse: 1})
	defer ls.Close(context.Background())
	f = newFixture(t, dashboard.Config{Stores: []dashboard.Store{{Name: "mem", Inspector: mem, Limiter: ls}}})
	_, body = f.do("GET", "/api/stats", nil, request{})
	var s dashboard.Snapshot
	decode(t, body, &s)
	if len(s.Stores[0].Limits) != 1 || s.Stores[0].Limits[0].Name != "x" {
		t.Errorf("Store.Limiter is not shown: %s", body)
	}
}

// The task list filters by key, and each task shows its key.
func TestTasksOfAKey(t *testing.T) {
	mem := memstream.New(memstream.Config{})
	defer mem.Close(context.Background())
	ls := testlimiter.New(mem)
	f := newFixture(t, dashboard.Config{Stores: []dashboard.Store{{Name: "mem", Inspector: ls}}})
	deadLetter(t, mem, &peonify.Task{ID: "a", Type: "t", Key: "acme"}, "x")
	res, body := f.do("GET", "/api/stores/mem/tasks?state=dead&key=acme", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	lists := ls.Lists()
	last := lists[len(lists)-1]
	if last.Key != "acme" || last.State != peonify.StateDead {
		t.Errorf("the store was asked for %+v, want the tasks of key acme", last)
	}
	var page dashboard.TaskPage
	decode(t, body, &page)
	if len(page.Tasks) != 1 || page.Tasks[0].Key != "acme" {
		t.Errorf("tasks of key acme: %s", body)
	}
	res, body = f.do("GET", "/api/stores/mem/tasks/a", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	if !strings.Contains(string(body), `"key":"acme"`) {
		t.Errorf("one task does not show its key: %s", body)
	}
}

// With memstream, which enforces limits in its claims, the snapshot shows
// what really runs and waits, and a key lists its own tasks.
func TestLimitsOfMemstream(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, dashboard.Config{})
	if err := f.mem.SetLimits([]peonify.Limit{{Type: "email", PerKey: true, Concurrency: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := f.mem.Enqueue(ctx, &peonify.Task{ID: "a1", Type: "email", Key: "acme"}, &peonify.Task{ID: "a2", Type: "email", Key: "acme"},
		&peonify.Task{ID: "a3", Type: "email", Key: "acme"}, &peonify.Task{ID: "g1", Type: "email", Key: "globex"}); err != nil {
		t.Fatal(err)
	}
	if ds, err := f.mem.Poll(ctx, 10); err != nil || len(ds) != 2 {
		t.Fatalf("claimed %d tasks (%v), want one per key", len(ds), err)
	}
	_, body := f.do("GET", "/api/stats", nil, request{})
	var s dashboard.Snapshot
	decode(t, body, &s)
	want := []dashboard.LimitView{{Name: "email/key", InUse: 2, Waiting: 2, Keys: []dashboard.KeyView{
		{Key: "acme", InUse: 1, Waiting: 2}, {Key: "globex", InUse: 1, Waiting: 0}}}}
	if !reflect.DeepEqual(s.Stores[0].Limits, want) {
		t.Errorf("limits %+v, want %+v", s.Stores[0].Limits, want)
	}
	res, body := f.do("GET", "/api/stores/mem/tasks?state=pending&key=acme", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var page dashboard.TaskPage
	decode(t, body, &page)
	if len(page.Tasks) != 2 || page.Tasks[0].ID != "a2" || page.Tasks[1].ID != "a3" {
		t.Errorf("pending tasks of key acme: %s", body)
	}
}
