package peonifyprom_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/testlimiter"
	"github.com/peonify/peonify/peonifyprom"
	"github.com/peonify/peonify/streams/memstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLimitGauges(t *testing.T) {
	m, err := peonifyprom.New(peonifyprom.Config{LimitTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p, err := peonify.New(peonify.Config{OnEvent: m.OnEvent})
	if err != nil {
		t.Fatal(err)
	}
	s := testlimiter.New(memstream.New(memstream.Config{Name: "mem"}))
	defer s.Close(context.Background())
	if err := p.AddStream(s, peonify.StreamName("orders"), peonify.Limits(
		peonify.Limit{Type: "email", PerKey: true, Concurrency: 1},
		peonify.Limit{Name: "api", Rate: 20, Burst: 5},
	)); err != nil {
		t.Fatal(err)
	}
	if limits := s.Limits(); len(limits) != 2 {
		t.Fatalf("the stream got limits %+v", limits)
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

	s.SetStats([]peonify.LimitStat{
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
	s.SetStats(nil, errors.New("connection refused"))
	if n := testutil.CollectAndCount(m, "peonify_limit_in_use"); n != 0 {
		t.Errorf("%d in-use gauges from a failing limiter", n)
	}
	if got := sample(t, reg, "peonify_limit_stats_errors_total", "stream", "orders"); got.GetCounter().GetValue() < 1 {
		t.Errorf("the error was not counted: %v", got)
	}

	// A store that does not answer: the scrape ends after LimitTimeout.
	block := make(chan struct{})
	s.Block(block)
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

// With memstream, which enforces limits in its claims, the gauges follow
// what really runs and waits.
func TestLimitGaugesOfMemstream(t *testing.T) {
	m, err := peonifyprom.New(peonifyprom.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := peonify.New(peonify.Config{Workers: 4, OnEvent: m.OnEvent})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	started := make(chan string, 10)
	if err := p.AddTaskList(peonify.TaskList{"email": peonify.HandlerFunc(func(ctx context.Context, task *peonify.Task) error {
		started <- task.Key
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})}); err != nil {
		t.Fatal(err)
	}
	mem := memstream.New(memstream.Config{Name: "mem"})
	if err := p.AddStream(mem, peonify.Limits(peonify.Limit{Type: "email", PerKey: true, Concurrency: 1})); err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(p); err != nil {
		t.Fatal(err)
	}
	if err := m.AttachLimiter("mem", mem); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	ctx := context.Background()
	if err := mem.Enqueue(ctx, &peonify.Task{Type: "email", Key: "acme"}, &peonify.Task{Type: "email", Key: "acme"},
		&peonify.Task{Type: "email", Key: "acme"}, &peonify.Task{Type: "email", Key: "globex"}); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() {
		close(release)
		cancel()
		<-done
	}()
	for range 2 {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("the first task of each key did not start")
		}
	}
	inUse := sample(t, reg, "peonify_limit_in_use", "stream", "mem", "limit", "email/key")
	waiting := sample(t, reg, "peonify_limit_waiting", "stream", "mem", "limit", "email/key")
	if inUse.GetGauge().GetValue() != 2 || waiting.GetGauge().GetValue() != 2 {
		t.Errorf("in use %v, waiting %v; want 2 running (one per key) and acme's other 2 waiting", inUse, waiting)
	}
}
