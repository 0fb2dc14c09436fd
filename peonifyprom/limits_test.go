package peonifyprom_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifyprom"
	"github.com/peonify/peonify/streams/memstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// limitedStream is a real memstream with a stand-in Limiter, for testing
// the export before the stores enforce limits: it records the limits the
// processor gives it and reports the stats the test sets.
type limitedStream struct {
	*memstream.Stream

	mu     sync.Mutex
	limits []peonify.Limit
	stats  []peonify.LimitStat
	err    error
	block  chan struct{} // when set, LimitStats waits for it, ignoring ctx
}

func (s *limitedStream) Unwrap() peonify.Stream { return s.Stream }

func (s *limitedStream) SetLimits(limits []peonify.Limit) error {
	n, err := peonify.NormalizeLimits(limits)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits = n
	return nil
}

func (s *limitedStream) LimitStats(ctx context.Context) ([]peonify.LimitStat, error) {
	s.mu.Lock()
	block, stats, err := s.block, s.stats, s.err
	s.mu.Unlock()
	if block != nil {
		<-block
	}
	return stats, err
}

func (s *limitedStream) set(stats []peonify.LimitStat, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats, s.err = stats, err
}

func TestLimitGauges(t *testing.T) {
	m, err := peonifyprom.New(peonifyprom.Config{LimitTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p, err := peonify.New(peonify.Config{OnEvent: m.OnEvent})
	if err != nil {
		t.Fatal(err)
	}
	s := &limitedStream{Stream: memstream.New(memstream.Config{Name: "mem"})}
	defer s.Close(context.Background())
	if err := p.AddStream(s, peonify.StreamName("orders"), peonify.Limits(
		peonify.Limit{Type: "email", PerKey: true, Concurrency: 1},
		peonify.Limit{Name: "api", Rate: 20, Burst: 5},
	)); err != nil {
		t.Fatal(err)
	}
	if len(s.limits) != 2 {
		t.Fatalf("the stream got limits %+v", s.limits)
	}
	if err := m.Attach(p); err != nil {
		t.Fatal(err)
	}
	l, ok := peonify.As[peonify.Limiter](s)
	if !ok {
		t.Fatal("no Limiter found")
	}
	if err := m.AttachLimiter("orders", l); err != nil {
		t.Fatal(err)
	}
	if err := m.AttachLimiter("orders", l); err == nil {
		t.Error("a second Limiter for the same stream was attached")
	}
	if err := m.AttachLimiter("", l); err == nil {
		t.Error("a Limiter without a stream name was attached")
	}
	if err := m.AttachLimiter("x", nil); err == nil {
		t.Error("a nil Limiter was attached")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)

	s.set([]peonify.LimitStat{
		{Name: "email/key", InUse: 3, Waiting: 120, Keys: []peonify.KeyStat{{Key: "acme", InUse: 1, Waiting: 100}}},
		{Name: "api", InUse: 0, Waiting: 7},
	}, nil)
	for _, c := range []struct {
		metric, limit string
		want          float64
	}{
		{"peonify_limit_in_use", "email/key", 3},
		{"peonify_limit_waiting", "email/key", 120},
		{"peonify_limit_in_use", "api", 0},
		{"peonify_limit_waiting", "api", 7},
	} {
		got := sample(t, reg, c.metric, "stream", "orders", "limit", c.limit)
		if got == nil || got.GetGauge().GetValue() != c.want {
			t.Errorf("%s{limit=%q} = %v, want %v", c.metric, c.limit, got, c.want)
		}
	}
	if got := sample(t, reg, "peonify_limit_stats_errors_total", "stream", "orders"); got.GetCounter().GetValue() != 0 {
		t.Errorf("errors counted: %v", got)
	}

	// A failing store: no gauges this scrape, and an error counted.
	s.set(nil, errors.New("connection refused"))
	if n := testutil.CollectAndCount(m, "peonify_limit_in_use"); n != 0 {
		t.Errorf("%d in-use gauges from a failing limiter", n)
	}
	if got := sample(t, reg, "peonify_limit_stats_errors_total", "stream", "orders"); got.GetCounter().GetValue() < 1 {
		t.Errorf("the error was not counted: %v", got)
	}

	// A store that does not answer: the scrape ends after LimitTimeout.
	block := make(chan struct{})
	s.mu.Lock()
	s.block = block
	s.mu.Unlock()
	start := time.Now()
	n := testutil.CollectAndCount(m, "peonify_limit_in_use")
	took := time.Since(start)
	close(block)
	if n != 0 || took > 2*time.Second {
		t.Errorf("a limiter that does not answer gave %d gauges and held the scrape %s (timeout 100ms)", n, took)
	}
	problems, err := testutil.CollectAndLint(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

func TestLimitTimeoutConfig(t *testing.T) {
	if _, err := peonifyprom.New(peonifyprom.Config{LimitTimeout: -time.Second}); err == nil {
		t.Error("a negative LimitTimeout was taken")
	}
	if _, err := peonifyprom.New(peonifyprom.Config{ConstLabels: prometheus.Labels{"limit": "x"}}); err == nil {
		t.Error("the limit label was taken as a constant label")
	}
}
