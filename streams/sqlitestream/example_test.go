package sqlitestream_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// The embedded store feeding a processor: the tasks survive a restart of
// the program until they are done.
func Example() {
	dir, err := os.MkdirTemp("", "sqlitestream-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	s, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{})
	if err != nil {
		log.Fatal(err)
	}
	for _, to := range []string{"ada", "grace", "linus"} {
		payload := []byte(`{"to":"` + to + `"}`)
		if err := s.Enqueue(ctx, &peonify.Task{Type: "email", Payload: payload}); err != nil {
			log.Fatal(err)
		}
	}

	type email struct{ To string }
	sent := 0
	p, err := peonify.New(peonify.Config{Workers: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{
		"email": peonify.JSON(func(ctx context.Context, e email) error {
			fmt.Println("sending to", e.To)
			if sent++; sent == 3 {
				stop() // a real program runs until SIGTERM
			}
			return nil
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.AddStream(s); err != nil { // Run closes s when it returns
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// sending to ada
	// sending to grace
	// sending to linus
}

// A producer enqueues tasks durably; a consumer claims, runs and acks them.
// Usually the consumer is a peonify.Processor: see the package example.
func ExampleOpen() {
	dir, err := os.MkdirTemp("", "sqlitestream-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	s, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	err = s.Enqueue(ctx,
		&peonify.Task{ID: "welcome-42", Type: "email", Payload: []byte(`{"user":42}`)},
		&peonify.Task{ID: "invoice-7", Type: "pdf", Priority: 10},
	)
	if err != nil {
		log.Fatal(err)
	}

	ds, err := s.Poll(ctx, 10)
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range ds {
		fmt.Printf("run %s (%s), attempt %d\n", d.Task.ID, d.Task.Type, d.Task.Attempt)
	}
	if err := s.Ack(ctx, ds...); err != nil {
		log.Fatal(err)
	}
	// Output:
	// run invoice-7 (pdf), attempt 1
	// run welcome-42 (email), attempt 1
}

// An ID, or a UniqueKey while its task is live, is stored once.
func ExampleStream_Enqueue_duplicate() {
	dir, err := os.MkdirTemp("", "sqlitestream-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	s, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	report := &peonify.Task{Type: "report", UniqueKey: "daily-report/2030-01-02"}
	fmt.Println(s.Enqueue(ctx, report))
	again := &peonify.Task{ID: "second", Type: "report", UniqueKey: "daily-report/2030-01-02"}
	err = s.Enqueue(ctx, again)
	fmt.Println(errors.Is(err, peonify.ErrDuplicate), err)
	// Output:
	// <nil>
	// true peonify: task second already enqueued (same ID or UniqueKey); not stored again
}

// Operators inspect dead tasks and retry them.
func ExampleStream_Retry() {
	dir, err := os.MkdirTemp("", "sqlitestream-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	s, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	if err := s.Enqueue(ctx, &peonify.Task{ID: "resize-1", Type: "resize"}); err != nil {
		log.Fatal(err)
	}
	ds, err := s.Poll(ctx, 1)
	if err != nil {
		log.Fatal(err)
	}
	err = s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "image is corrupt"})
	if err != nil {
		log.Fatal(err)
	}

	dead, err := s.List(ctx, peonify.ListOptions{State: peonify.StateDead})
	if err != nil {
		log.Fatal(err)
	}
	for _, info := range dead {
		fmt.Printf("%s: %s after %d attempt(s)\n", info.Task.ID, info.LastError, info.Attempts)
	}
	n, err := s.Retry(ctx) // every dead task
	if err != nil {
		log.Fatal(err)
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("retried", n, "- pending:", counts[peonify.StatePending], "dead:", counts[peonify.StateDead])
	// Output:
	// resize-1: image is corrupt after 1 attempt(s)
	// retried 1 - pending: 1 dead: 0
}
