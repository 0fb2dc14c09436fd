package amqpstream_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/amqpstream"
	"github.com/peonify/peonify/streams/pgstream"
)

// A processor that runs the tasks of a RabbitMQ queue until SIGTERM, and a
// producer. (Not run by go test: it needs a broker at AMQP_URL.)
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	stream, err := amqpstream.New(os.Getenv("AMQP_URL"), amqpstream.Config{Queue: "emails"})
	if err != nil {
		log.Fatal(err)
	}
	if err := stream.Connect(ctx); err != nil { // optional: fail fast on a wrong address
		log.Fatal(err)
	}
	err = stream.Enqueue(ctx, &peonify.Task{Type: "email-task", Payload: []byte(`{"to":"a@example.com"}`)})
	if err != nil {
		log.Fatal(err)
	}

	p, err := peonify.New(peonify.Config{})
	if err != nil {
		log.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{"email-task": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
		fmt.Printf("sending %s\n", t.Payload)
		return nil
	})})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.AddStream(stream); err != nil { // the processor closes the stream
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// The message that stores a task: what Enqueue publishes, and what a
// producer on its own AMQP channel (or in another language) publishes to
// the work queue. New does not connect, so this runs without a broker.
func ExampleStream_Publishing() {
	stream, err := amqpstream.New("amqp://guest:guest@localhost:5672/", amqpstream.Config{Queue: "emails"})
	if err != nil {
		log.Fatal(err)
	}
	msg, err := stream.Publishing(&peonify.Task{
		ID:          "order-42-confirmation",
		Type:        "email-task",
		Payload:     []byte(`{"to":"a@example.com"}`),
		Headers:     map[string]string{"tenant": "acme"},
		MaxAttempts: 5,
		EnqueuedAt:  time.Unix(1700000000, 0),
		RunAt:       time.UnixMilli(1700000060000),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("routing key:", stream.Queue())
	fmt.Println("message_id:", msg.MessageId)
	fmt.Println("type:", msg.Type)
	fmt.Println("body:", string(msg.Body))
	fmt.Println("persistent:", msg.DeliveryMode == 2)
	fmt.Println("timestamp:", msg.Timestamp.Unix())
	for _, k := range []string{"tenant", "x-peonify-max-attempts", "x-peonify-run-at"} {
		fmt.Printf("header %s: %v\n", k, msg.Headers[k])
	}
	// Output:
	// routing key: emails
	// message_id: order-42-confirmation
	// type: email-task
	// body: {"to":"a@example.com"}
	// persistent: true
	// timestamp: 1700000000
	// header tenant: acme
	// header x-peonify-max-attempts: 5
	// header x-peonify-run-at: 1700000060000
}

// Dead tasks, as the broker can show them: counts of every state, and the
// dead-letter queue's tasks with their reasons. (Not run by go test: it
// needs a broker at AMQP_URL.)
func ExampleStream_inspect() {
	ctx := context.Background()
	stream, err := amqpstream.New(os.Getenv("AMQP_URL"), amqpstream.Config{Queue: "emails"})
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Close(ctx)
	var in peonify.Inspector = stream
	counts, err := in.Counts(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("pending", counts[peonify.StatePending], "scheduled", counts[peonify.StateScheduled], "dead", counts[peonify.StateDead])
	dead, err := in.List(ctx, peonify.ListOptions{State: peonify.StateDead, Limit: 10})
	if err != nil {
		log.Fatal(err)
	}
	for _, ti := range dead {
		fmt.Println(ti.Task.ID, ti.Task.Type, ti.LastError)
	}
	if _, err := in.Retry(ctx); err != nil { // every dead task, back to the queue
		log.Fatal(err)
	}
}

// Flow control for tasks that producers publish to RabbitMQ. The broker
// cannot enforce limits in its claim, so AddStream refuses them rather than
// ignore them; a processor instead forwards (peonify.Forward) the limited task type, key
// included, into a store that enforces limits (here Postgres), whose
// processors run it under the limits. The RabbitMQ message is acknowledged
// only once the task is stored; the forwarded task keeps its ID, so a
// repeated forward is a duplicate, not a second task. (Not run by go
// test: it needs a broker at AMQP_URL and Postgres at DATABASE_URL.)
func Example_flowControl() {
	ctx := context.Background()
	fromRabbit, err := amqpstream.New(os.Getenv("AMQP_URL"), amqpstream.Config{Queue: "reports"})
	if err != nil {
		log.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := pgstream.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	limited, err := pgstream.New(pool, pgstream.Config{Queue: "reports"})
	if err != nil {
		log.Fatal(err)
	}
	perTenant := peonify.Limit{Type: "tenant-report", PerKey: true, Concurrency: 2}

	forwarder, err := peonify.New(peonify.Config{})
	if err != nil {
		log.Fatal(err)
	}
	err = forwarder.AddStream(fromRabbit, peonify.Limits(perTenant))
	fmt.Println("limits on RabbitMQ unsupported:", errors.Is(err, errors.ErrUnsupported))

	if err := forwarder.AddTaskList(peonify.TaskList{"tenant-report": peonify.Forward(limited)}); err != nil {
		log.Fatal(err)
	}
	if err := forwarder.AddStream(fromRabbit); err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(forwarder.Run(ctx)) }()

	// The processors that run the reports, on any number of machines, read
	// limited with the same limits: at most 2 reports per tenant at once.
	runner, err := peonify.New(peonify.Config{Workers: 20})
	if err != nil {
		log.Fatal(err)
	}
	if err := runner.AddStream(limited, peonify.Limits(perTenant)); err != nil {
		log.Fatal(err)
	}
	// ... runner.AddTaskList with the "tenant-report" handler, then:
	log.Fatal(runner.Run(ctx))
}
