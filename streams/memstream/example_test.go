package memstream_test

import (
	"context"
	"fmt"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// A stream used by hand: enqueue, claim, and complete or retry.
func Example() {
	ctx := context.Background()
	s := memstream.New(memstream.Config{})
	defer s.Close(ctx)

	_ = s.Enqueue(ctx,
		&peonify.Task{ID: "t1", Type: "email", Payload: []byte(`{"to":"ann"}`)},
		&peonify.Task{ID: "t2", Type: "email", Payload: []byte(`{"to":"bob"}`), Priority: 10},
	)

	ds, _ := s.Poll(ctx, 10)
	for _, d := range ds {
		fmt.Printf("%s attempt %d: %s\n", d.Task.ID, d.Task.Attempt, d.Task.Payload)
	}
	_ = s.Ack(ctx, ds[0])
	_ = s.Nack(ctx, ds[1], peonify.NackOptions{Outcome: peonify.OutcomeFailed, Reason: "smtp timeout"})

	ds, _ = s.Poll(ctx, 10)
	fmt.Printf("%s attempt %d after %q\n", ds[0].Task.ID, ds[0].Task.Attempt, ds[0].Task.LastError)
	// Output:
	// t2 attempt 1: {"to":"bob"}
	// t1 attempt 1: {"to":"ann"}
	// t1 attempt 2 after "smtp timeout"
}

// Enqueue reports tasks it already holds, by ID or by UniqueKey, and
// stores the rest.
func ExampleStream_Enqueue_duplicates() {
	ctx := context.Background()
	s := memstream.New(memstream.Config{})
	defer s.Close(ctx)

	_ = s.Enqueue(ctx, &peonify.Task{ID: "report-1", Type: "report", UniqueKey: "report:2026-01-02"})
	err := s.Enqueue(ctx,
		&peonify.Task{ID: "report-2", Type: "report", UniqueKey: "report:2026-01-02"},
		&peonify.Task{ID: "report-3", Type: "report", UniqueKey: "report:2026-01-03"},
	)
	fmt.Println(err)
	counts, _ := s.Counts(ctx)
	fmt.Println(counts[peonify.StatePending], "pending")
	// Output:
	// peonify: task report-2 already enqueued (same ID or UniqueKey); not stored again
	// 2 pending
}

// Dead tasks stay inspectable until an operator retries or deletes them.
func ExampleStream_Retry() {
	ctx := context.Background()
	s := memstream.New(memstream.Config{})
	defer s.Close(ctx)

	_ = s.Enqueue(ctx, &peonify.Task{ID: "t1", Type: "resize"})
	ds, _ := s.Poll(ctx, 1)
	_ = s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "image is corrupt"})

	dead, _ := s.List(ctx, peonify.ListOptions{State: peonify.StateDead})
	fmt.Println(dead[0].Task.ID, dead[0].State, dead[0].LastError)

	n, _ := s.Retry(ctx)
	info, _ := s.Get(ctx, "t1")
	fmt.Println(n, "retried;", info.Task.ID, info.State)
	// Output:
	// t1 dead image is corrupt
	// 1 retried; t1 pending
}
