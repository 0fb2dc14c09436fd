package memstream_test

import (
	"context"
	"fmt"
	"strings"
	"time"

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

// Limits decide what a Poll claims: one task at a time per tenant (a
// paying tenant two, a tenant on hold none), with tenants taking turns,
// so a tenant's backlog does not delay another.
func ExampleStream_SetLimits() {
	ctx := context.Background()
	s := memstream.New(memstream.Config{})
	defer s.Close(ctx)
	_ = s.SetLimits([]peonify.Limit{{
		PerKey:         true,
		Concurrency:    1,
		KeyConcurrency: map[string]int{"gold": 2, "held": 0},
	}})
	for _, id := range []string{"ann-1", "ann-2", "ann-3", "gold-1", "gold-2", "gold-3", "held-1", "bob-1"} {
		tenant, _, _ := strings.Cut(id, "-")
		_ = s.Enqueue(ctx, &peonify.Task{ID: id, Type: "report", Key: tenant})
	}

	ds, _ := s.Poll(ctx, 10)
	fmt.Println(claimed(ds))
	_ = s.Ack(ctx, ds[0]) // ann-1 is done: ann may run its next
	ds, _ = s.Poll(ctx, 10)
	fmt.Println(claimed(ds))

	stats, _ := s.LimitStats(ctx)
	for _, k := range stats[0].Keys {
		fmt.Printf("%s: %d running, %d waiting\n", k.Key, k.InUse, k.Waiting)
	}
	// Output:
	// [ann-1 gold-1 bob-1 gold-2]
	// [ann-2]
	// gold: 2 running, 1 waiting
	// ann: 1 running, 1 waiting
	// bob: 1 running, 0 waiting
	// held: 0 running, 1 waiting
}

// An ordered key runs its tasks one at a time in enqueue order; a failed
// task keeps its place, and a dead one releases the key.
func ExampleStream_SetLimits_ordered() {
	ctx := context.Background()
	s := memstream.New(memstream.Config{})
	defer s.Close(ctx)
	_ = s.SetLimits([]peonify.Limit{{Type: "sync", PerKey: true, Ordered: true}})
	for _, id := range []string{"v1", "v2", "v3"} {
		_ = s.Enqueue(ctx, &peonify.Task{ID: id, Type: "sync", Key: "account-7"})
	}

	ds, _ := s.Poll(ctx, 10)
	fmt.Println(claimed(ds))
	_ = s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeFailed})
	ds, _ = s.Poll(ctx, 10)
	fmt.Println(claimed(ds), "attempt", ds[0].Task.Attempt)
	_ = s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "bad data"})
	ds, _ = s.Poll(ctx, 10)
	fmt.Println(claimed(ds))
	// Output:
	// [v1]
	// [v1] attempt 2
	// [v2]
}

// A rate limit lets a burst start at once, then one task per token.
func ExampleStream_SetLimits_rate() {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := memstream.New(memstream.Config{Now: func() time.Time { return now }})
	defer s.Close(ctx)
	_ = s.SetLimits([]peonify.Limit{{Type: "sms", Rate: 2, Period: time.Second, Burst: 3}})
	for i := range 10 {
		_ = s.Enqueue(ctx, &peonify.Task{ID: fmt.Sprint("sms-", i), Type: "sms"})
	}
	for _, wait := range []time.Duration{0, 100 * time.Millisecond, 400 * time.Millisecond, time.Second} {
		now = now.Add(wait)
		ds, _ := s.Poll(ctx, 10)
		fmt.Printf("after %s more: %d started\n", wait, len(ds))
	}
	// Output:
	// after 0s more: 3 started
	// after 100ms more: 0 started
	// after 400ms more: 1 started
	// after 1s more: 2 started
}

// claimed lists the IDs of the claimed tasks.
func claimed(ds []peonify.Delivery) []string {
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.Task.ID
	}
	return ids
}
