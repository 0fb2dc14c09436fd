package peonifyprom

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// countingInspector counts the queries that reach a real store.
type countingInspector struct {
	peonify.Inspector
	counts, lists atomic.Int64
}

func (c *countingInspector) Counts(ctx context.Context) (map[peonify.State]int, error) {
	c.counts.Add(1)
	return c.Inspector.Counts(ctx)
}

func (c *countingInspector) List(ctx context.Context, o peonify.ListOptions) ([]peonify.TaskInfo, error) {
	c.lists.Add(1)
	return c.Inspector.List(ctx, o)
}

// fakeClock is the StoreMetrics clock of a test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newStoreMetrics(t *testing.T, cfg StoreConfig, clock *fakeClock, stores map[string]peonify.Inspector) *StoreMetrics {
	t.Helper()
	m, err := NewStoreMetrics(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.now = clock.now
	for name, in := range stores {
		if err := m.AddStore(name, in); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// 100 scrapes, in a row or at once, make one query round per interval.
func TestStoreMetricsQueryOncePerInterval(t *testing.T) {
	s := memstream.New(memstream.Config{})
	defer s.Close(context.Background())
	if err := s.Enqueue(context.Background(), &peonify.Task{Type: "a"}, &peonify.Task{Type: "a"}); err != nil {
		t.Fatal(err)
	}
	in := &countingInspector{Inspector: s}
	clock := &fakeClock{t: time.Now()}
	m := newStoreMetrics(t, StoreConfig{Interval: 15 * time.Second}, clock, map[string]peonify.Inspector{"orders": in})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)

	for range 100 {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
		clock.add(100 * time.Millisecond) // 10s in all: within one interval
	}
	if n, l := in.counts.Load(), in.lists.Load(); n != 1 || l != 1 {
		t.Fatalf("100 scrapes within an interval made %d Counts and %d List calls, want 1 and 1", n, l)
	}
	clock.add(5 * time.Second)
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := in.counts.Load(); n != 2 {
		t.Fatalf("100 concurrent scrapes in the next interval brought the Counts calls to %d, want 2", n)
	}
	if got := testutil.ToFloat64(gaugeOf(t, reg, "peonify_store_tasks", "pending")); got != 2 {
		t.Errorf("peonify_store_tasks{state=pending} = %g, want 2", got)
	}
}

// The oldest pending task is the one that has been ready longest by its
// EnqueuedAt or RunAt, not the first by ID.
func TestStoreMetricsOldestPending(t *testing.T) {
	s := memstream.New(memstream.Config{})
	defer s.Close(context.Background())
	now := time.Now()
	clock := &fakeClock{t: now}
	err := s.Enqueue(context.Background(),
		&peonify.Task{ID: "a-first-by-id", Type: "a", EnqueuedAt: now.Add(-10 * time.Second)},
		&peonify.Task{ID: "z-last-by-id", Type: "a", EnqueuedAt: now.Add(-30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	m := newStoreMetrics(t, StoreConfig{}, clock, map[string]peonify.Inspector{"orders": s})
	got := testutil.ToFloat64(collectorGauge(t, m, "peonify_store_oldest_pending_seconds"))
	if got < 29 || got > 31 {
		t.Errorf("peonify_store_oldest_pending_seconds = %g, want 30", got)
	}

	empty := memstream.New(memstream.Config{})
	defer empty.Close(context.Background())
	m = newStoreMetrics(t, StoreConfig{}, clock, map[string]peonify.Inspector{"empty": empty})
	if got := testutil.ToFloat64(collectorGauge(t, m, "peonify_store_oldest_pending_seconds")); got != 0 {
		t.Errorf("an empty store's oldest pending age is %g, want 0", got)
	}
}

// A store that implements OldestPendingReporter answers with it, and
// is not listed.
type reporting struct {
	countingInspector
	since time.Time
}

func (r *reporting) OldestPending(context.Context) (time.Time, bool, error) {
	return r.since, true, nil
}

func TestStoreMetricsUsesOldestPendingReporter(t *testing.T) {
	s := memstream.New(memstream.Config{})
	defer s.Close(context.Background())
	if err := s.Enqueue(context.Background(), &peonify.Task{Type: "a"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r := &reporting{countingInspector: countingInspector{Inspector: s}, since: now.Add(-time.Minute)}
	m := newStoreMetrics(t, StoreConfig{}, &fakeClock{t: now}, map[string]peonify.Inspector{"orders": r})
	if got := testutil.ToFloat64(collectorGauge(t, m, "peonify_store_oldest_pending_seconds")); got != 60 {
		t.Errorf("peonify_store_oldest_pending_seconds = %g, want 60 from OldestPending", got)
	}
	if l := r.lists.Load(); l != 0 {
		t.Errorf("the store was listed %d times, though it reports its oldest pending task", l)
	}
}

func TestNewStoreMetricsRejectsBadConfig(t *testing.T) {
	for _, cfg := range []StoreConfig{{Interval: -1}, {Timeout: -1}, {ConstLabels: prometheus.Labels{"store": "x"}}} {
		if _, err := NewStoreMetrics(cfg); err == nil || !strings.Contains(err.Error(), "peonifyprom.StoreConfig.") {
			t.Errorf("NewStoreMetrics(%+v) = %v, want an error naming the field", cfg, err)
		}
	}
}

// collectorGauge registers c alone and returns the one series of name.
func collectorGauge(t *testing.T, c prometheus.Collector, name string) prometheus.Collector {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	return gaugeOf(t, reg, name, "")
}

// gaugeOf returns the value of the series of name (with state, when
// given) as a collector for testutil.ToFloat64.
func gaugeOf(t *testing.T, reg *prometheus.Registry, name, state string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			match := state == ""
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "state" && lp.GetValue() == state {
					match = true
				}
			}
			if match {
				return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "v", Help: "v"}, func() float64 { return mt.GetGauge().GetValue() })
			}
		}
	}
	t.Fatalf("no series %s{state=%q}", name, state)
	return nil
}
