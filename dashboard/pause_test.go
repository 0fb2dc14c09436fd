package dashboard_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/streams/memstream"
	"github.com/peonify/peonify/streams/pgstream"
)

func TestPauseAndResumeAPostgresQueue(t *testing.T) {
	s := pgQueue(t, "dashboard-pause-")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var _ dashboard.Pauser = s // pgstream's Stream is found to pause by type assertion

	f := newFixture(t, dashboard.Config{Stores: []dashboard.Store{{Name: "pg", Inspector: s}}, Auth: dashboard.Auth{Token: testToken}})
	f.signIn(request{})
	storeView := func() dashboard.StoreView {
		t.Helper()
		res, body := f.do("GET", "/api/stats", nil, request{})
		wantStatus(t, res, body, http.StatusOK, "")
		var snap dashboard.Snapshot
		decode(t, body, &snap)
		return snap.Stores[0]
	}
	if v := storeView(); !v.Pausable || v.Paused || v.Error != "" {
		t.Fatalf("store before pausing: %+v", v)
	}

	res, body := f.do("POST", "/api/stores/pg/pause", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	if paused, err := s.Paused(ctx); err != nil || !paused {
		t.Fatalf("Paused after the pause request: %v, %v", paused, err)
	}
	if v := storeView(); !v.Paused {
		t.Fatalf("store after pausing: %+v", v)
	}
	if err := s.Enqueue(ctx, &peonify.Task{Type: "email"}); err != nil {
		t.Fatal(err)
	}
	if ds, err := s.Poll(ctx, 1); err != nil || len(ds) != 0 {
		t.Fatalf("Poll of a paused queue: %d deliveries, %v", len(ds), err)
	}

	res, body = f.do("POST", "/api/stores/pg/resume", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	if v := storeView(); v.Paused || v.Counts[peonify.StatePending] != 1 {
		t.Fatalf("store after resuming: %+v", v)
	}
	ds, err := s.Poll(ctx, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Poll of a resumed queue: %d deliveries, %v", len(ds), err)
	}
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}
}

// inspecting wraps a stream and intercepts its Inspector, as a wrapper that
// measures inspection would; Unwrap leads to the stream.
type inspecting struct {
	peonify.Stream
	peonify.Inspector
}

func (w inspecting) Unwrap() peonify.Stream { return w.Stream }

// A store whose Inspector is a wrapper of a pgstream is pausable: the
// dashboard finds Pause through the wrapper with peonify.As.
func TestPauserFoundThroughWrapper(t *testing.T) {
	s := pgQueue(t, "dashboard-wrapped-")

	f := newFixture(t, dashboard.Config{Stores: []dashboard.Store{{Name: "pg", Inspector: inspecting{s, s}}}, Auth: dashboard.Auth{Token: testToken}})
	f.signIn(request{})
	res, body := f.do("GET", "/api/stats", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var snap dashboard.Snapshot
	decode(t, body, &snap)
	if v := snap.Stores[0]; !v.Pausable {
		t.Fatalf("a wrapped pgstream is not pausable: %+v", v)
	}
}

// A store whose Inspector is a wrapper of a memstream shows the results,
// workflows and limits of the memstream, which the dashboard finds through
// the wrapper with peonify.As, and no pause, which the memstream lacks;
// through a wrapper of a stream that has none of them, none is shown.
func TestCapabilitiesFoundThroughWrapper(t *testing.T) {
	mem := memstream.New(memstream.Config{})
	defer mem.Close(context.Background())
	if err := mem.SetLimits([]peonify.Limit{{Name: "one", Concurrency: 1}}); err != nil {
		t.Fatal(err)
	}
	bare := struct{ peonify.Stream }{mem}
	f := newFixture(t, dashboard.Config{Stores: []dashboard.Store{
		{Name: "wrapped", Inspector: inspecting{mem, mem}},
		{Name: "bare", Inspector: inspecting{bare, struct{ peonify.Inspector }{mem}}},
	}, Auth: dashboard.Auth{Token: testToken}})
	f.signIn(request{})
	res, body := f.do("GET", "/api/stats", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var snap dashboard.Snapshot
	decode(t, body, &snap)
	views := map[string]dashboard.StoreView{}
	for _, v := range snap.Stores {
		views[v.Name] = v
	}
	if v := views["wrapped"]; !v.Tracks || !v.Workflows || len(v.Limits) != 1 || v.Pausable {
		t.Errorf("a wrapped memstream shows tracks %t, workflows %t, %d limits, pausable %t; want true, true, 1, false",
			v.Tracks, v.Workflows, len(v.Limits), v.Pausable)
	}
	if v := views["bare"]; v.Tracks || v.Workflows || len(v.Limits) != 0 || v.Pausable {
		t.Errorf("a wrapped stream without capabilities shows tracks %t, workflows %t, %d limits, pausable %t; want none",
			v.Tracks, v.Workflows, len(v.Limits), v.Pausable)
	}
}

// pgQueue returns a pgstream on a new queue whose name starts with prefix,
// closed when the test ends.
func pgQueue(t *testing.T, prefix string) *pgstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, testenv.URL(t, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := pgstream.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	s, err := pgstream.New(pool, pgstream.Config{Queue: prefix + hex.EncodeToString(suffix[:]), NoListen: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}
