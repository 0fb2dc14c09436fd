package pgstream_test

import (
	"context"
	"fmt"
	"log"
	"os"

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
