package peonifyprom_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifyprom"
	"github.com/peonify/peonify/streams/memstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

// Metrics counts task outcomes from the processor's events and reads
// gauges from its stats when scraped.
func Example() {
	m, err := peonifyprom.New(peonifyprom.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan struct{})
	p, err := peonify.New(peonify.Config{
		Workers: 2,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		// Metrics first, then a hook of our own.
		OnEvent: func(e peonify.Event) { m.OnEvent(e); close(done) },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = p.AddTaskList(peonify.TaskList{
		"email": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error { return nil }),
	})
	store := memstream.New(memstream.Config{Name: "mail"})
	_ = p.AddStream(store)
	if err := m.Attach(p); err != nil {
		fmt.Println(err)
		return
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	// In a program: http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	_ = store.Enqueue(context.Background(), &peonify.Task{Type: "email"})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-done; cancel() }()
	_ = p.Run(ctx)

	text, _ := testutil.GatherAndFormat(reg, expfmt.TypeTextPlain, "peonify_tasks_succeeded_total", "peonify_workers")
	fmt.Print(string(text))
	// Output:
	// # HELP peonify_tasks_succeeded_total Tasks whose handler returned nil and that were acked.
	// # TYPE peonify_tasks_succeeded_total counter
	// peonify_tasks_succeeded_total{stream="mail",type="email"} 1
	// # HELP peonify_workers Size of the worker pool.
	// # TYPE peonify_workers gauge
	// peonify_workers 2
}

// Two processors in one program share a registry by telling their
// metrics apart with a constant label.
func ExampleConfig_constLabels() {
	reg := prometheus.NewRegistry()
	for _, name := range []string{"billing", "email"} {
		m, err := peonifyprom.New(peonifyprom.Config{ConstLabels: prometheus.Labels{"processor": name}})
		if err != nil {
			fmt.Println(err)
			return
		}
		p, _ := peonify.New(peonify.Config{Workers: 3, OnEvent: m.OnEvent})
		_ = m.Attach(p)
		if err := reg.Register(m); err != nil {
			fmt.Println(err)
			return
		}
	}
	text, _ := testutil.GatherAndFormat(reg, expfmt.TypeTextPlain, "peonify_workers")
	fmt.Print(string(text))
	_ = http.Handler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})) // serve it on /metrics
	// Output:
	// # HELP peonify_workers Size of the worker pool.
	// # TYPE peonify_workers gauge
	// peonify_workers{processor="billing"} 3
	// peonify_workers{processor="email"} 3
}

// A stream that enforces flow-control limits (a peonify.Limiter) exports
// each limit's running and waiting tasks. Here one email per tenant runs
// at a time: acme's first email runs, its other two wait.
func ExampleMetrics_AttachLimiter() {
	m, _ := peonifyprom.New(peonifyprom.Config{})
	p, _ := peonify.New(peonify.Config{OnEvent: m.OnEvent})
	store := memstream.New(memstream.Config{Name: "mail"})
	defer store.Close(context.Background())
	perTenant := peonify.Limit{Name: "email-per-tenant", Type: "email", PerKey: true, Concurrency: 1}
	if err := p.AddStream(store, peonify.Limits(perTenant)); err != nil {
		fmt.Println(err)
		return
	}
	_ = m.Attach(p)
	if l, ok := peonify.As[peonify.Limiter](store); ok {
		if err := m.AttachLimiter("mail", l); err != nil {
			fmt.Println(err)
			return
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)

	ctx := context.Background()
	for range 3 {
		_ = store.Enqueue(ctx, &peonify.Task{Type: "email", Key: "acme"})
	}
	_, _ = store.Poll(ctx, 10) // as a processor claims: one task of the key

	text, _ := testutil.GatherAndFormat(reg, expfmt.TypeTextPlain, "peonify_limit_in_use", "peonify_limit_waiting")
	fmt.Print(string(text))
	// Output:
	// # HELP peonify_limit_in_use Running tasks that count against a flow-control limit of the stream (every key's, for a per-key limit).
	// # TYPE peonify_limit_in_use gauge
	// peonify_limit_in_use{limit="email-per-tenant",stream="mail"} 1
	// # HELP peonify_limit_waiting Ready tasks a flow-control limit of the stream applies to that have not started.
	// # TYPE peonify_limit_waiting gauge
	// peonify_limit_waiting{limit="email-per-tenant",stream="mail"} 2
}
