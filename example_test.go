package peonify_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// runUntilEvents runs p until n task events happened, then shuts it down.
// OnEvent must forward to events.
func runUntilEvents(p *peonify.Processor, events <-chan peonify.Event, n int) []peonify.Event {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	var got []peonify.Event
	for len(got) < n {
		got = append(got, <-events)
	}
	cancel()
	if err := <-done; err != nil {
		fmt.Println("run:", err)
	}
	return got
}

// The seed's Getting Started: a processor, a task list, a stream, Run.
func Example() {
	store := memstream.New(memstream.Config{})
	_ = store.Enqueue(context.Background(),
		&peonify.Task{ID: "1", Type: "email-task", Payload: []byte(`{"to":"ada@example.com"}`)})

	done := make(chan peonify.Event, 1)
	p, _ := peonify.New(peonify.Config{
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnEvent: func(e peonify.Event) { done <- e },
	})
	_ = p.AddTaskList(peonify.TaskList{
		"email-task": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			fmt.Printf("sending email %s: %s\n", t.ID, t.Payload)
			return nil
		}),
	})
	_ = p.AddStream(store)

	// In a program: ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-done; cancel() }()
	if err := p.Run(ctx); err != nil { // returns after a graceful drain
		fmt.Println(err)
	}
	fmt.Println("succeeded:", p.Stats().Succeeded)
	// Output:
	// sending email 1: {"to":"ada@example.com"}
	// succeeded: 1
}

type welcome struct {
	Name string `json:"name"`
}

// JSON decodes payloads into a typed struct; a payload that does not
// decode is dead at once with a reason, never retried.
func ExampleJSON() {
	store := memstream.New(memstream.Config{})
	_ = store.Enqueue(context.Background(),
		&peonify.Task{ID: "good", Type: "welcome", Payload: []byte(`{"name":"Ada"}`)},
		&peonify.Task{ID: "bad", Type: "welcome", Payload: []byte(`{"name":42}`)})

	events := make(chan peonify.Event, 2)
	p, _ := peonify.New(peonify.Config{Workers: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnEvent: func(e peonify.Event) { events <- e }})
	_ = p.AddTaskList(peonify.TaskList{
		"welcome": peonify.JSON(func(ctx context.Context, w welcome) error {
			fmt.Println("hello,", w.Name)
			return nil
		}),
	})
	_ = p.AddStream(store)
	for _, e := range runUntilEvents(p, events, 2) {
		fmt.Println(e.Task.ID, e.Kind, e.Err)
	}
	// Output:
	// hello, Ada
	// good succeeded <nil>
	// bad dead payload of "welcome" task does not decode as the handler's JSON: json: cannot unmarshal number into Go struct field welcome.name of type string
}

// Handlers steer retries by wrapping their errors.
func ExampleSkipRetry() {
	store := memstream.New(memstream.Config{})
	_ = store.Enqueue(context.Background(),
		&peonify.Task{ID: "permanent", Type: "charge"},
		&peonify.Task{ID: "rate-limited", Type: "charge"},
		&peonify.Task{ID: "not-ready", Type: "charge"})

	events := make(chan peonify.Event, 3)
	p, _ := peonify.New(peonify.Config{Workers: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnEvent: func(e peonify.Event) { events <- e }})
	_ = p.AddTaskList(peonify.TaskList{
		"charge": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			switch t.ID {
			case "permanent": // no retry can fix it: dead at once
				return peonify.SkipRetry(errors.New("card number is invalid"))
			case "rate-limited": // retry at a chosen time; the attempt counts
				return peonify.RetryAfter(time.Minute, errors.New("429 Too Many Requests"))
			default: // run later; the attempt does not count
				return peonify.Snooze(time.Hour)
			}
		}),
	})
	_ = p.AddStream(store)
	for _, e := range runUntilEvents(p, events, 3) {
		fmt.Printf("%s: %s (next attempt in %s)\n", e.Task.ID, e.Kind, e.Delay)
	}
	// Output:
	// permanent: dead (next attempt in 0s)
	// rate-limited: retried (next attempt in 1m0s)
	// not-ready: snoozed (next attempt in 1h0m0s)
}

// Middleware wraps every handler, for logging, tracing or metrics.
func ExampleMiddleware() {
	logTasks := func(next peonify.Handler) peonify.Handler {
		return peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			fmt.Println("start", t.Type, t.ID)
			err := next.Execute(ctx, t)
			fmt.Println("end", t.Type, t.ID, err)
			return err
		})
	}
	store := memstream.New(memstream.Config{})
	_ = store.Enqueue(context.Background(), &peonify.Task{ID: "7", Type: "resize"})

	events := make(chan peonify.Event, 1)
	p, _ := peonify.New(peonify.Config{
		Middleware: []peonify.Middleware{logTasks},
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnEvent:    func(e peonify.Event) { events <- e },
	})
	_ = p.AddTaskList(peonify.TaskList{"resize": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		fmt.Println("resizing")
		return nil
	})})
	_ = p.AddStream(store)
	runUntilEvents(p, events, 1)
	// Output:
	// start resize 7
	// resizing
	// end resize 7 <nil>
}

// Several streams feed one processor; weights share its capacity when
// more than one has work.
func ExampleProcessor_AddStream() {
	urgent := memstream.New(memstream.Config{Name: "urgent"})
	bulk := memstream.New(memstream.Config{Name: "bulk"})
	_ = urgent.Enqueue(context.Background(), &peonify.Task{Type: "job"})
	_ = bulk.Enqueue(context.Background(), &peonify.Task{Type: "job"})

	events := make(chan peonify.Event, 2)
	p, _ := peonify.New(peonify.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnEvent: func(e peonify.Event) { events <- e }})
	_ = p.AddTaskList(peonify.TaskList{"job": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil })})
	_ = p.AddStream(urgent, peonify.Weight(4))
	_ = p.AddStream(bulk)
	runUntilEvents(p, events, 2)
	for _, s := range p.Stats().Streams {
		fmt.Println(s.Name, "weight", s.Weight)
	}
	// Output:
	// urgent weight 4
	// bulk weight 1
}

// Limits hold back tasks in the store's claim until they may start: here
// each tenant (Task.Key) runs one task at a time, a paying tenant two,
// and a tenant on hold none, while every tenant's tasks are shared out
// fairly between them.
func ExampleLimits() {
	store := memstream.New(memstream.Config{})
	var tasks []*peonify.Task
	for tenant, n := range map[string]int{"ann": 3, "gold": 4, "held": 1} {
		for i := range n {
			tasks = append(tasks, &peonify.Task{ID: fmt.Sprintf("%s-%d", tenant, i), Type: "report", Key: tenant})
		}
	}
	_ = store.Enqueue(context.Background(), tasks...)

	var (
		mu      sync.Mutex
		running = map[string]int{} // per tenant, now
		most    = map[string]int{} // per tenant, at once
		done    = map[string]int{}
		paired  = make(chan struct{}) // closed once two of gold's run together
		pair    sync.Once
	)
	report := peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
		mu.Lock()
		running[t.Key]++
		most[t.Key] = max(most[t.Key], running[t.Key])
		if t.Key == "gold" && running[t.Key] == 2 {
			pair.Do(func() { close(paired) })
		}
		mu.Unlock()
		if t.Key == "gold" { // wait for the other one gold may run
			select {
			case <-paired:
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
		mu.Lock()
		running[t.Key]--
		done[t.Key]++
		mu.Unlock()
		return nil
	})

	events := make(chan peonify.Event, len(tasks))
	p, _ := peonify.New(peonify.Config{Workers: 8, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnEvent: func(e peonify.Event) { events <- e }})
	_ = p.AddTaskList(peonify.TaskList{"report": report})
	err := p.AddStream(store, peonify.Limits(peonify.Limit{
		Type:           "report",
		PerKey:         true,
		Concurrency:    1,
		KeyConcurrency: map[string]int{"gold": 2, "held": 0},
	}))
	if err != nil {
		fmt.Println(err)
		return
	}

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error)
	go func() { stopped <- p.Run(ctx) }()
	for range len(tasks) - 1 { // every task but held's
		<-events
	}
	held, _ := store.List(ctx, peonify.ListOptions{State: peonify.StatePending, Key: "held"})
	cancel()
	if err := <-stopped; err != nil {
		fmt.Println(err)
	}
	for _, tenant := range []string{"ann", "gold"} {
		fmt.Printf("%s: %d done, at most %d at a time\n", tenant, done[tenant], most[tenant])
	}
	fmt.Printf("held: %d waiting, %s\n", len(held), held[0].Task.ID)
	// Output:
	// ann: 3 done, at most 1 at a time
	// gold: 4 done, at most 2 at a time
	// held: 1 waiting, held-0
}

// KeyFrom gives tasks a Key derived from their payload when the producer
// set none, so that per-key limits see the tenant.
func ExampleKeyFrom() {
	ctx := context.Background()
	store := memstream.New(memstream.Config{})
	defer store.Close(ctx)
	producer := peonify.KeyFrom(store, peonify.JSONKey("tenant"))

	for i, tenant := range []string{"acme", "globex"} {
		task := &peonify.Task{ID: fmt.Sprint("report-", i), Type: "report", Payload: []byte(`{"tenant":"` + tenant + `"}`)}
		if err := producer.Enqueue(ctx, task); err != nil {
			fmt.Println(err)
			return
		}
	}
	ds, _ := store.Poll(ctx, 10)
	for _, d := range ds {
		fmt.Println(d.Task.ID, "key", d.Task.Key)
	}
	// Output:
	// report-0 key acme
	// report-1 key globex
}

// Forward moves tasks from a stream that cannot enforce limits into one
// that can, keeping their IDs and keys: a forward that runs twice stores
// the task once.
func ExampleForward() {
	ctx := context.Background()
	limited := memstream.New(memstream.Config{})
	defer limited.Close(ctx)
	forward := peonify.Forward(limited)

	task := &peonify.Task{ID: "t-1", Type: "report", Key: "acme"}
	for range 2 {
		if err := forward.Execute(ctx, task); err != nil {
			fmt.Println(err)
			return
		}
	}
	counts, _ := limited.Counts(ctx)
	fmt.Println("pending:", counts[peonify.StatePending])
	// Output:
	// pending: 1
}
