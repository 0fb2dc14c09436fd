package redisstream_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/redisstream"
	"github.com/redis/go-redis/v9"
)

// A processor that runs the tasks of the "emails" queue, whoever enqueued
// them, until SIGTERM.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	client := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer client.Close() // the stream never closes the client

	stream, err := redisstream.New(client, redisstream.Config{Queue: "emails"})
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
	if err := p.AddStream(stream); err != nil { // Run closes the stream when it returns
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// Producers enqueue from Go with Enqueue; a task with an ID is stored
// once, and one with a RunAt waits in the schedule.
func ExampleStream_Enqueue() {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer client.Close()
	stream, err := redisstream.New(client, redisstream.Config{Queue: "emails"})
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Close(ctx)

	err = stream.Enqueue(ctx, &peonify.Task{
		ID:      "welcome-42", // a second Enqueue of this ID reports peonify.ErrDuplicate
		Type:    "email-task",
		Payload: []byte(`{"To":"ada@example.com"}`),
	})
	if err != nil && !errors.Is(err, peonify.ErrDuplicate) {
		log.Fatal(err)
	}
}

// Keys names the queue's Redis keys, for producers in other languages and
// for operators with redis-cli. New does no I/O.
func ExampleStream_Keys() {
	client := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer client.Close()
	stream, err := redisstream.New(client, redisstream.Config{Queue: "emails"})
	if err != nil {
		log.Fatal(err)
	}
	k := stream.Keys()
	fmt.Println("XADD", k.Stream, "* type email-task payload '{\"To\":\"ada@example.com\"}'")
	fmt.Println("scheduled:", k.Schedule)
	fmt.Println("dead:", k.Dead)
	fmt.Println("group:", redisstream.Group)
	// Output:
	// XADD peonify:{emails}:stream * type email-task payload '{"To":"ada@example.com"}'
	// scheduled: peonify:{emails}:schedule
	// dead: peonify:{emails}:dead
	// group: peonify
}

// Flow control: each tenant's tasks run one at a time (a paying tenant's
// ten at a time), the queue's report-task tasks at most 3 at once across
// every processor, and at most 20 a second start to call a partner's API,
// with bursts of 5. Producers set the tenant in Task.Key (or, from other
// languages, the entry's key field).
func Example_flowControl() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	client := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer client.Close()
	stream, err := redisstream.New(client, redisstream.Config{Queue: "jobs"})
	if err != nil {
		log.Fatal(err)
	}

	// A producer, anywhere:
	err = stream.Enqueue(ctx, &peonify.Task{Type: "report-task", Key: "tenant-42", Payload: []byte(`{}`)})
	if err != nil {
		log.Fatal(err)
	}

	p, err := peonify.New(peonify.Config{Workers: 50})
	if err != nil {
		log.Fatal(err)
	}
	noop := peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil })
	if err := p.AddTaskList(peonify.TaskList{"report-task": noop, "partner-call": noop}); err != nil {
		log.Fatal(err)
	}
	err = p.AddStream(stream, peonify.Limits(
		peonify.Limit{PerKey: true, Concurrency: 1, KeyConcurrency: map[string]int{"tenant-paying": 10}},
		peonify.Limit{Type: "report-task", Concurrency: 3},
		peonify.Limit{Type: "partner-call", Rate: 20, Period: time.Second, Burst: 5},
	))
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// SetLimits checks the limits without I/O; the processor calls it from
// AddStream with the limits given by peonify.Limits.
func ExampleStream_SetLimits() {
	client := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer client.Close()
	stream, err := redisstream.New(client, redisstream.Config{Queue: "jobs"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(stream.SetLimits([]peonify.Limit{{Type: "report-task", Ordered: true}}))
	fmt.Println(stream.SetLimits([]peonify.Limit{{PerKey: true, Ordered: true}}))
	fmt.Println(stream.MaxPoll())
	// Output:
	// peonify: invalid Limit report-task: Ordered is set without PerKey: ordering is per key, so set PerKey
	// <nil>
	// 1000
}
