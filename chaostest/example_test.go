package chaostest_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/chaostest"
	"github.com/peonify/peonify/streams/memstream"
)

// A processor records each completed run in a ledger; the test reads it
// back and checks that every enqueued task completed, once.
func Example() {
	dir, err := os.MkdirTemp("", "chaostest-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ledger")

	ledger, err := chaostest.OpenLedger(path, chaostest.LedgerConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer ledger.Close()
	ctx, stop := context.WithCancel(context.Background())
	s := memstream.New(memstream.Config{})
	enqueued := []string{"a", "b", "c"}
	for _, id := range enqueued {
		if err := s.Enqueue(ctx, &peonify.Task{ID: id, Type: "work"}); err != nil {
			log.Fatal(err)
		}
	}

	p, err := peonify.New(peonify.Config{
		Middleware: []peonify.Middleware{ledger.Middleware()},
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	left := make(chan struct{}, len(enqueued))
	err = p.AddTaskList(peonify.TaskList{"work": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		left <- struct{}{}
		return nil
	})})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.AddStream(ledger.Wrap(s)); err != nil {
		log.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	for range enqueued {
		<-left
	}
	stop()
	if err := <-done; err != nil { // Run returns after every run is recorded
		log.Fatal(err)
	}

	h, err := chaostest.ReadLedger(path)
	if err != nil {
		log.Fatal(err)
	}
	v := h.Verify(enqueued)
	fmt.Println("tasks:", v.Tasks, "lost:", len(v.Lost), "duplicates:", v.Duplicates, "verdict:", v.Err())
	// Output: tasks: 3 lost: 0 duplicates: 0 verdict: <nil>
}

// A process claimed two tasks, completed one of them and died before it
// acked it. Both came back and ran elsewhere: one task ran twice, which the
// fault allows because the task was in flight.
func ExampleHistory_Verify() {
	dir, err := os.MkdirTemp("", "chaostest-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ledger")
	ledger, err := chaostest.OpenLedger(path, chaostest.LedgerConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer ledger.Close()
	ctx := context.Background()
	s := memstream.New(memstream.Config{})
	if err := s.Enqueue(ctx, &peonify.Task{ID: "a", Type: "work"}, &peonify.Task{ID: "b", Type: "work"}); err != nil {
		log.Fatal(err)
	}

	// The process that dies: it claims both and completes "a".
	ds, err := ledger.Wrap(s).Poll(ctx, 2)
	if err != nil {
		log.Fatal(err)
	}
	if err := ledger.Done(ds[0].Task); err != nil {
		log.Fatal(err)
	}
	h, err := chaostest.ReadLedger(path)
	if err != nil {
		log.Fatal(err)
	}
	inFlight := h.Held(os.Getpid()) // read right after the kill
	fmt.Println("in flight:", inFlight)

	// Another process runs both once their leases end.
	for _, d := range ds {
		if err := ledger.Done(d.Task); err != nil {
			log.Fatal(err)
		}
	}
	if err := h.Refresh(); err != nil {
		log.Fatal(err)
	}
	v := h.Verify([]string{"a", "b"}, inFlight)
	fmt.Println("duplicates:", v.Duplicates, "allowed:", v.Bound, "verdict:", v.Err())
	// Output:
	// in flight: [a b]
	// duplicates: 1 allowed: 2 verdict: <nil>
}
