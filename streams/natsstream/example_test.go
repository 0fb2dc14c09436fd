package natsstream_test

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
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/natsstream"
	"github.com/peonify/peonify/streams/pgstream"
)

// A processor running tasks from a JetStream stream until SIGTERM.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	nc, err := nats.Connect(os.Getenv("NATS_URL"), nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close() // after the processor has closed the stream
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	cfg := natsstream.Config{Stream: "EMAILS", Subject: "tasks.emails"}
	if err := natsstream.Setup(ctx, js, cfg); err != nil {
		log.Fatal(err)
	}
	stream, err := natsstream.New(js, cfg)
	if err != nil {
		log.Fatal(err)
	}

	p, err := peonify.New(peonify.Config{})
	if err != nil {
		log.Fatal(err)
	}
	type email struct{ To string }
	err = p.AddTaskList(peonify.TaskList{
		"email-task": peonify.JSON(func(ctx context.Context, e email) error {
			fmt.Println("sending to", e.To)
			return nil
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.AddStream(stream); err != nil {
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// Enqueueing tasks: now, later, and with an ID that makes a repeated
// enqueue harmless.
func ExampleStream_Enqueue() {
	ctx := context.Background()
	nc, err := nats.Connect(os.Getenv("NATS_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	stream, err := natsstream.New(js, natsstream.Config{Stream: "EMAILS", Subject: "tasks.emails"})
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Close(ctx)

	err = stream.Enqueue(ctx,
		&peonify.Task{Type: "email-task", Payload: []byte(`{"To":"ada@example.com"}`)},
		&peonify.Task{Type: "email-task", Payload: []byte(`{"To":"bob@example.com"}`), RunAt: time.Now().Add(time.Hour)},
		&peonify.Task{ID: "welcome-42", Type: "email-task", Payload: []byte(`{"To":"new@example.com"}`)},
	)
	if errors.Is(err, peonify.ErrDuplicate) {
		fmt.Println("already enqueued:", err) // the others were stored
	} else if err != nil {
		log.Fatal(err)
	}
}

// A task message as any NATS client can build it, without Peonify: the
// payload is the body, the type and ID are headers, and every header not
// starting with Nats- or Peonify- becomes a task header. Publish it with
// JetStream (js.PublishMsg) to wait for the server's acknowledgement.
func Example_plainProducer() {
	m := nats.NewMsg("tasks.emails") // Config.Subject
	m.Header.Set(natsstream.HeaderMsgID, "welcome-42")
	m.Header.Set(natsstream.HeaderType, "email-task")
	m.Header.Set(natsstream.HeaderRunAt, time.Date(2030, 1, 2, 15, 4, 5, 0, time.UTC).Format(time.RFC3339))
	m.Header.Set(natsstream.HeaderKey, "customer-7") // Task.Key
	m.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	m.Data = []byte(`{"To":"new@example.com"}`)

	for _, k := range []string{natsstream.HeaderMsgID, natsstream.HeaderType, natsstream.HeaderRunAt, natsstream.HeaderKey, "traceparent"} {
		fmt.Printf("%s: %s\n", k, m.Header.Get(k))
	}
	fmt.Printf("%s\n", m.Data)
	// Output:
	// Nats-Msg-Id: welcome-42
	// Peonify-Type: email-task
	// Peonify-Run-At: 2030-01-02T15:04:05Z
	// peonify-key: customer-7
	// traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// {"To":"new@example.com"}
}

// Flow control for tasks that producers publish to NATS. JetStream
// cannot enforce limits in its claim, so AddStream refuses them rather
// than ignore them; a processor instead forwards (peonify.Forward) the limited task type,
// key included, into a store that enforces limits (here Postgres), whose
// processors run it under the limits. The NATS message is acknowledged
// only once the task is stored, and the forwarded task keeps its ID, so
// a repeated forward is a duplicate, not a second task.
func Example_flowControl() {
	ctx := context.Background()
	nc, err := nats.Connect(os.Getenv("NATS_URL"), nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	fromNATS, err := natsstream.New(js, natsstream.Config{Stream: "REPORTS", Subject: "tasks.reports"})
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
	err = forwarder.AddStream(fromNATS, peonify.Limits(perTenant))
	fmt.Println("limits on NATS unsupported:", errors.Is(err, errors.ErrUnsupported))

	if err := forwarder.AddTaskList(peonify.TaskList{"tenant-report": peonify.Forward(limited)}); err != nil {
		log.Fatal(err)
	}
	if err := forwarder.AddStream(fromNATS); err != nil {
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
