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
