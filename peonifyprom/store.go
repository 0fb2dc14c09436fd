package peonifyprom

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/peonify/peonify"
	"github.com/prometheus/client_golang/prometheus"
)

// OldestPendingReporter is an optional capability of a store's Inspector
// that StoreMetrics uses for peonify_store_oldest_pending_seconds. A
// store implements it when it can answer with one cheap query (an index
// on the ready time); none does yet, and StoreMetrics falls back to a
// bounded scan of Inspector.List (see StoreConfig.OldestScan).
type OldestPendingReporter interface {
	// OldestPending returns when the pending task that has waited
	// longest became ready to run: the later of its EnqueuedAt and RunAt
	// (for a retried task, when its retry delay ended). ok is false when
	// no task is pending.
	OldestPending(ctx context.Context) (readySince time.Time, ok bool, err error)
}

// StoreConfig configures StoreMetrics. The zero value is valid.
type StoreConfig struct {
	// ConstLabels are added to every metric. Defaults to none.
	ConstLabels prometheus.Labels

	// Interval is how often the stores are queried: a scrape that finds
	// the figures older than Interval queries each store once, and every
	// other scrape is answered from the cache. Defaults to 15s.
	Interval time.Duration

	// Timeout bounds one store's query round; a store that does not
	// answer in time is left out until its next round. Defaults to 5s.
	Timeout time.Duration

	// OldestScan is how many pending tasks are listed, in one
	// Inspector.List call, to find the oldest one in a store that does not
	// implement OldestPendingReporter. Defaults to 100
	// (peonify.DefaultListLimit); a negative value turns the scan off, so
	// that only such stores report the age.
	OldestScan int
}

// Defaults of StoreConfig.
const (
	defaultStoreInterval = 15 * time.Second
	defaultStoreTimeout  = 5 * time.Second
)

// StoreMetrics exports what is in stores, for autoscaling on the backlog
// rather than on one processor's local queue. Register it on a registry
// and add the stores with AddStore:
//
//	sm, err := peonifyprom.NewStoreMetrics(peonifyprom.StoreConfig{})
//	if in, ok := peonify.As[peonify.Inspector](stream); ok {
//		err = sm.AddStore("orders", in)
//	}
//	reg.MustRegister(sm)
//
// Its metrics, labelled by store:
//
//	peonify_store_tasks{store,state}            tasks in each state (every peonify.State)
//	peonify_store_oldest_pending_seconds{store} queue latency: how long the pending task that
//	                                            has waited longest has been ready to run; 0 when
//	                                            none is pending
//	peonify_store_query_errors_total{store}     query rounds that failed or timed out
//
// A scrape never puts more load on a store than one query round per
// StoreConfig.Interval: the figures are cached, and refreshed by the first
// scrape after they are Interval old (concurrent scrapes wait for that
// one round). A round is Inspector.Counts and, when tasks are pending,
// one OldestPending or List call. A store whose round fails is left out
// of the scrapes until a round succeeds (its series disappear rather than
// show stale figures), and so is a store whose Counts is not supported
// (errors.ErrUnsupported), without counting an error. The figures are
// those of the last round: the age does not grow between rounds.
//
// The oldest pending age, in order of preference:
//
//   - from OldestPendingReporter, when the Inspector implements it: exact.
//   - from one Inspector.List of the first OldestScan pending tasks by ID:
//     the largest of now minus max(EnqueuedAt, RunAt) over them. When the
//     store holds at most OldestScan pending tasks this is exact. Beyond
//     that it looks only at the tasks with the smallest IDs; since IDs
//     made by Enqueue are UUIDv7s that sort by creation time, those are
//     the ones enqueued first, so the figure is right unless a task
//     further on is older by its ready time: one whose producer chose
//     its ID, or when the first tasks are retries that became ready again
//     recently while older first attempts wait behind them. It is then an
//     underestimate, never an overestimate. A store whose List cannot list
//     pending tasks (errors.ErrUnsupported, as amqpstream) reports no age.
//
// StoreMetrics is safe for concurrent use.
type StoreMetrics struct {
	cfg                  StoreConfig
	tasks, oldest, errsD *prometheus.Desc
	now                  func() time.Time // time.Now; tests set it

	mu        sync.Mutex
	stores    []*storeEntry
	refreshed time.Time // zero: never
}

// storeEntry is one store and its cached figures.
type storeEntry struct {
	name   string
	in     peonify.Inspector
	ok     bool // the last round succeeded
	counts map[peonify.State]int
	age    float64
	hasAge bool
	errs   float64
}

// NewStoreMetrics returns a StoreMetrics without stores.
func NewStoreMetrics(cfg StoreConfig) (*StoreMetrics, error) {
	switch {
	case cfg.Interval < 0:
		return nil, &peonify.ConfigError{Field: "peonifyprom.StoreConfig.Interval",
			Reason: fmt.Sprintf("is %s: use a positive duration, or 0 for %s", cfg.Interval, defaultStoreInterval)}
	case cfg.Timeout < 0:
		return nil, &peonify.ConfigError{Field: "peonifyprom.StoreConfig.Timeout",
			Reason: fmt.Sprintf("is %s: use a positive duration, or 0 for %s", cfg.Timeout, defaultStoreTimeout)}
	}
	for name := range cfg.ConstLabels {
		if name == "store" || name == "state" {
			return nil, &peonify.ConfigError{Field: "peonifyprom.StoreConfig.ConstLabels",
				Reason: fmt.Sprintf("label %q is one of the metrics' own labels: choose another name", name)}
		}
	}
	if cfg.Interval == 0 {
		cfg.Interval = defaultStoreInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultStoreTimeout
	}
	if cfg.OldestScan == 0 {
		cfg.OldestScan = peonify.DefaultListLimit
	}
	cl := cfg.ConstLabels
	return &StoreMetrics{
		cfg: cfg,
		now: time.Now,
		tasks: prometheus.NewDesc("peonify_store_tasks",
			"Tasks in a store, by state; refreshed at most once per interval.", []string{"store", "state"}, cl),
		oldest: prometheus.NewDesc("peonify_store_oldest_pending_seconds",
			"How long the pending task of a store that has waited longest has been ready to run (queue latency); 0 when none is pending.", []string{"store"}, cl),
		errsD: prometheus.NewDesc("peonify_store_query_errors_total",
			"Query rounds on a store that failed or timed out.", []string{"store"}, cl),
	}, nil
}

// AddStore adds a store under name, the value of its store label. Add
// each store once, before the first scrape counts on it.
func (m *StoreMetrics) AddStore(name string, in peonify.Inspector) error {
	if name == "" || in == nil {
		return errors.New("peonifyprom: AddStore needs a store name and its Inspector")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.stores {
		if s.name == name {
			return fmt.Errorf("peonifyprom: store %q was added twice: give each store its own name", name)
		}
	}
	m.stores = append(m.stores, &storeEntry{name: name, in: in})
	m.refreshed = time.Time{} // the new store is queried at the next scrape
	return nil
}

// Describe implements prometheus.Collector.
func (m *StoreMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.tasks
	ch <- m.oldest
	ch <- m.errsD
}

// Collect implements prometheus.Collector: it queries the stores if the
// cached figures are Interval old, and sends them.
func (m *StoreMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if now := m.now(); m.refreshed.IsZero() || now.Sub(m.refreshed) >= m.cfg.Interval {
		m.refresh(now)
		m.refreshed = now
	}
	for _, s := range m.stores {
		ch <- prometheus.MustNewConstMetric(m.errsD, prometheus.CounterValue, s.errs, s.name)
		if !s.ok {
			continue
		}
		for _, st := range peonify.States {
			if n, ok := s.counts[st]; ok {
				ch <- prometheus.MustNewConstMetric(m.tasks, prometheus.GaugeValue, float64(n), s.name, string(st))
			}
		}
		if s.hasAge {
			ch <- prometheus.MustNewConstMetric(m.oldest, prometheus.GaugeValue, s.age, s.name)
		}
	}
}

// refresh runs one query round on every store at once.
func (m *StoreMetrics) refresh(now time.Time) {
	var wg sync.WaitGroup
	for _, s := range m.stores {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
			defer cancel()
			if err := m.query(ctx, s, now); err != nil {
				s.ok = false
				s.errs++
			}
		})
	}
	wg.Wait()
}

// query runs one store's round.
func (m *StoreMetrics) query(ctx context.Context, s *storeEntry, now time.Time) error {
	counts, err := s.in.Counts(ctx)
	if errors.Is(err, errors.ErrUnsupported) {
		s.ok = false // not an error: the store cannot say
		return nil
	}
	if err != nil {
		return err
	}
	full := make(map[peonify.State]int, len(peonify.States))
	for _, st := range peonify.States {
		full[st] = counts[st] // a missing state has no tasks
	}
	s.counts, s.ok, s.hasAge, s.age = full, true, false, 0
	if full[peonify.StatePending] == 0 {
		s.hasAge = true
		return nil
	}
	var since time.Time
	if r, ok := s.in.(OldestPendingReporter); ok {
		t, any, err := r.OldestPending(ctx)
		if err != nil {
			return err
		}
		if !any {
			s.hasAge = true
			return nil
		}
		since = t
	} else {
		if m.cfg.OldestScan < 0 {
			return nil
		}
		infos, err := s.in.List(ctx, peonify.ListOptions{State: peonify.StatePending, Limit: m.cfg.OldestScan})
		if errors.Is(err, errors.ErrUnsupported) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, ti := range infos {
			ready := ti.Task.EnqueuedAt
			if ti.Task.RunAt.After(ready) {
				ready = ti.Task.RunAt
			}
			if !ready.IsZero() && (since.IsZero() || ready.Before(since)) {
				since = ready
			}
		}
		if since.IsZero() {
			s.hasAge = len(infos) == 0 // emptied since Counts; else the store keeps no times
			return nil
		}
	}
	s.hasAge, s.age = true, max(now.Sub(since).Seconds(), 0)
	return nil
}
