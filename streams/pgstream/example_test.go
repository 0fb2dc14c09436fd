package pgstream_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/pgstream"
)

// A producer and a consumer of one queue. (Not run by go test: it needs a
// Postgres server in DATABASE_URL.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close() // the caller owns the pool

	if err := pgstream.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	stream, err := pgstream.New(pool, pgstream.Config{Queue: "emails"})
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Close(ctx)

	err = stream.Enqueue(ctx, &peonify.Task{Type: "email-task", Payload: []byte(`{"to":"a@example.com"}`)})
	if err != nil {
		log.Fatal(err)
	}

	// A processor does this for you; by hand, it is a claim and an ack.
	ds, err := stream.Poll(ctx, 10)
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range ds {
		fmt.Println(d.Task.Type, string(d.Task.Payload))
	}
	if err := stream.Ack(ctx, ds...); err != nil {
		log.Fatal(err)
	}
}

// Enqueue a task in the same transaction as the business change it
// belongs to: if the transaction rolls back, the task never existed.
func ExampleStream_EnqueueTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	stream, err := pgstream.New(pool, pgstream.Config{Queue: "orders"})
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Close(ctx)

	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance - 10 WHERE id = 1`); err != nil {
			return err
		}
		return stream.EnqueueTx(ctx, tx, &peonify.Task{Type: "send-receipt", Payload: []byte(`{"account":1}`)})
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Stop delivery from a queue on every processor, for maintenance.
func ExampleStream_Pause() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	stream, err := pgstream.New(pool, pgstream.Config{Queue: "reports"})
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Close(ctx)

	if err := stream.Pause(ctx); err != nil {
		log.Fatal(err)
	}
	// ... later
	if err := stream.Resume(ctx); err != nil {
		log.Fatal(err)
	}
}

// Flow control: each tenant (Task.Key) runs at most 2 tasks at once (a
// paying one 10, one on hold none), sends at most 5 emails a second with
// bursts of 10, and runs its invoices one at a time in the order they were
// enqueued. Every processor sharing the table enforces the same limits in
// its claims, so they hold across all of them. (Not run by go test: it
// needs a Postgres server in DATABASE_URL.)
func ExampleStream_SetLimits() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := pgstream.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	stream, err := pgstream.New(pool, pgstream.Config{Queue: "tenants"})
	if err != nil {
		log.Fatal(err)
	}

	p, err := peonify.New(peonify.Config{Workers: 50})
	if err != nil {
		log.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{
		"email":   peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error { return nil }),
		"invoice": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error { return nil }),
	})
	if err != nil {
		log.Fatal(err)
	}
	err = p.AddStream(stream, peonify.Limits(
		peonify.Limit{Name: "tenant", PerKey: true, Concurrency: 2,
			KeyConcurrency: map[string]int{"acme": 10, "on-hold": 0}},
		peonify.Limit{Type: "email", PerKey: true, Rate: 5, Period: time.Second, Burst: 10},
		peonify.Limit{Type: "invoice", PerKey: true, Ordered: true},
	))
	if err != nil {
		log.Fatal(err)
	}

	// Producers give each task its tenant.
	err = stream.Enqueue(ctx,
		&peonify.Task{Type: "invoice", Key: "acme", Payload: []byte(`{"invoice":1}`)},
		&peonify.Task{Type: "invoice", Key: "acme", Payload: []byte(`{"invoice":2}`)}, // after 1
		&peonify.Task{Type: "email", Key: "globex", Payload: []byte(`{"to":"a@example.com"}`)},
	)
	if err != nil {
		log.Fatal(err)
	}

	// What each limit holds and what waits, as the dashboard shows it.
	stats, err := stream.LimitStats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, st := range stats {
		fmt.Println(st.Name, st.InUse, st.Waiting)
	}

	log.Fatal(p.Run(ctx))
}

// A workflow: fetch, then resize and thumbnail side by side, then publish
// with both results; the producer waits for the last step. (Not run by go
// test: it needs a Postgres server in DATABASE_URL, and a processor
// running the four types.)
func ExampleStream_EnqueueWorkflow() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	stream, err := pgstream.New(pool, pgstream.Config{Queue: "images", ResultRetention: time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Close(ctx)

	w := &peonify.Workflow{}
	fetch := w.Add(&peonify.Task{Type: "fetch", Payload: []byte(`{"url":"https://example.com/a.png"}`)})
	resize := w.Add(&peonify.Task{Type: "resize"}, fetch)
	thumb := w.Add(&peonify.Task{Type: "thumbnail"}, fetch)
	publish := w.Add(&peonify.Task{Type: "publish"}, resize, thumb)
	if err := stream.EnqueueWorkflow(ctx, w); err != nil { // all four, or none
		log.Fatal(err)
	}

	// The handler of "publish" reads its parents' results with
	// peonify.ParentResults(ctx), and sets its own with peonify.SetResult.
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	info, err := stream.Wait(waitCtx, publish.ID) // woken by NOTIFY, not a tight poll
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.State, string(info.Result))

	wf, err := stream.GetWorkflow(ctx, w.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(wf.State, wf.Counts)
}

// Cancel a task, or a whole workflow: what has not run never runs, and a
// running task's context is cancelled (with cause peonify.ErrCancelled)
// within a third of its lease. (Not run by go test: it needs a Postgres
// server in DATABASE_URL.)
func ExampleStream_Cancel() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	stream, err := pgstream.New(pool, pgstream.Config{Queue: "reports"})
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Close(ctx)

	t := &peonify.Task{Type: "monthly-report"}
	if err := stream.Enqueue(ctx, t); err != nil {
		log.Fatal(err)
	}
	n, err := stream.Cancel(ctx, t.ID)
	if err != nil {
		log.Fatal(err)
	}
	info, err := stream.Get(ctx, t.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n, info.State, info.LastError) // 1 cancelled cancelled by request
}
