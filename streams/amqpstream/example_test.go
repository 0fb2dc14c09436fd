package amqpstream_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/amqpstream"
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
