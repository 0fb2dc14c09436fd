package periodic_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/periodic"
	"github.com/peonify/peonify/streams/memstream"
)

func Example() {
	// Any stream that implements peonify.Enqueuer; processors on several
	// machines would share a durable one.
	stream := memstream.New(memstream.Config{})

	sched, err := periodic.New(stream, periodic.Config{})
	if err != nil {
		log.Fatal(err)
	}
	err = sched.Add(periodic.Job{
		Name: "hourly-report",
		Spec: "@hourly",
		Task: peonify.Task{Type: "report", Payload: []byte(`{"format":"pdf"}`)},
	})
	if err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sched.Run(ctx) }()

	// Run catches up the slot of the last full hour at once, then waits
	// for the next. A processor polling the stream would run it; here we
	// poll by hand.
	<-stream.Wake()
	ds, err := stream.Poll(ctx, 1)
	if err != nil || len(ds) != 1 {
		log.Fatal(ds, err)
	}
	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}

	t := ds[0].Task
	slot, _ := periodic.Slot(t)
	fmt.Println(t.Type, t.Headers[periodic.HeaderJob], string(t.Payload))
	fmt.Println("on the hour:", slot.Equal(slot.Truncate(time.Hour)))
	fmt.Println("one per slot:", t.ID == periodic.TaskID("hourly-report", slot), t.UniqueKey == periodic.UniqueKey("hourly-report", slot))
	// Output:
	// report hourly-report {"format":"pdf"}
	// on the hour: true
	// one per slot: true true
}

func ExampleUniqueKey() {
	slot := time.Date(2025, 3, 14, 3, 0, 0, 0, time.UTC)
	fmt.Println(periodic.UniqueKey("nightly-report", slot))
	fmt.Println(periodic.TaskID("nightly-report", slot))
	// Output:
	// periodic:nightly-report:2025-03-14T03:00:00Z
	// 01959298-2780-72f4-b18c-38305ab5a789
}

func ExampleScheduler_Add() {
	sched, err := periodic.New(memstream.New(memstream.Config{}), periodic.Config{})
	if err != nil {
		log.Fatal(err)
	}
	err = sched.Add(periodic.Job{Name: "cleanup", Spec: "every day at noon", Task: peonify.Task{Type: "cleanup"}})
	fmt.Println(err)
	// Output:
	// periodic: job "cleanup": invalid Spec "every day at noon": expected 5 to 6 fields, found 4: [every day at noon]; use a cron expression with 5 fields (minute hour day-of-month month day-of-week, e.g. "*/5 * * * *" every 5 minutes) or 6 with seconds first (e.g. "0 30 9 * * MON-FRI"), a descriptor ("@hourly", "@daily", "@weekly", "@monthly", "@yearly"), or an interval ("@every 10m"); prefix "CRON_TZ=Europe/Paris " to use a time zone
}
