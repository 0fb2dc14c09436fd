package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// BenchmarkSnapshot measures building and encoding one snapshot, which
// the dashboard does at most once per Interval however many pages are
// open: a processor running 64 tasks of 10 types, and a store of 10,000
// tasks.
func BenchmarkSnapshot(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mem := memstream.New(memstream.Config{})
	p, err := peonify.New(peonify.Config{Workers: 64, ShutdownGrace: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	started := make(chan struct{}, 64)
	block := peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	})
	tl := peonify.TaskList{}
	for i := range 10 {
		tl[fmt.Sprintf("type-%d", i)] = block
	}
	if err := p.AddTaskList(tl); err != nil {
		b.Fatal(err)
	}
	if err := p.AddStream(mem); err != nil {
		b.Fatal(err)
	}
	tasks := make([]*peonify.Task, 64)
	for i := range tasks {
		tasks[i] = &peonify.Task{Type: fmt.Sprintf("type-%d", i%10)}
	}
	if err := mem.Enqueue(ctx, tasks...); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for range 64 {
		<-started
	}
	// The rest wait in the store (nothing is free to run them).
	for i := 0; i < 10000; i += 1000 {
		more := make([]*peonify.Task, 1000)
		for j := range more {
			more[j] = &peonify.Task{Type: "type-0"}
		}
		if err := mem.Enqueue(ctx, more...); err != nil {
			b.Fatal(err)
		}
	}
	d, err := New(Config{Processor: p, Stores: []Store{{Name: "mem", Inspector: mem}}})
	if err != nil {
		b.Fatal(err)
	}
	var size int
	b.ReportAllocs()
	for b.Loop() {
		s, err := json.Marshal(d.snapshot(ctx))
		if err != nil {
			b.Fatal(err)
		}
		size = len(s)
	}
	b.ReportMetric(float64(size), "bytes/snapshot")
}

// BenchmarkTaskList measures GET api/stores/{name}/tasks for a page of 50
// dead tasks with 1 KiB payloads.
func BenchmarkTaskList(b *testing.B) {
	ctx := context.Background()
	mem := memstream.New(memstream.Config{})
	defer mem.Close(ctx)
	payload := make([]byte, 1024)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	for range 50 {
		if err := mem.Enqueue(ctx, &peonify.Task{Type: "t", Payload: payload}); err != nil {
			b.Fatal(err)
		}
	}
	ds, err := mem.Poll(ctx, 50)
	if err != nil {
		b.Fatal(err)
	}
	for _, dl := range ds {
		if err := mem.Nack(ctx, dl, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "boom"}); err != nil {
			b.Fatal(err)
		}
	}
	d, err := New(Config{Stores: []Store{{Name: "mem", Inspector: mem}}})
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/api/stores/mem/tasks?state=dead", nil)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		d.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code, w.Body.String())
		}
	}
}
