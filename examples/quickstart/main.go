// Command quickstart is the seed's Getting Started in Go: a processor with an
// "email-task" implementation and a stream that generates tasks, running
// until SIGTERM or Ctrl-C, then draining gracefully.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/peonify/peonify"
)

// EmailTask is the seed's EmailTask: the implementation of one task type.
type EmailTask struct{}

// emailArgs is the payload of an email-task.
type emailArgs struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
}

// Execute sends the email. A real implementation would call a mail API
// with the task ID as the idempotency key, because a task may run twice.
func (EmailTask) Execute(ctx context.Context, t *peonify.Task) error {
	var args emailArgs
	if err := json.Unmarshal(t.Payload, &args); err != nil {
		return peonify.SkipRetry(fmt.Errorf("bad email payload: %w", err))
	}
	select {
	case <-time.After(50 * time.Millisecond): // the time it takes to send
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	fmt.Printf("sent %q to %s (task %s)\n", args.Subject, args.To, t.ID)
	return nil
}

// TaskGenerator is the seed's simple task generator: a Stream that makes
// one email task every interval. Poll returns the tasks that are due and
// Ack is the seed's notifyComplete.
type TaskGenerator struct {
	interval time.Duration

	mu       sync.Mutex
	n        int
	next     time.Time
	returned []*peonify.Task // handed back by Nack, delivered again first
}

// Poll returns up to limit tasks: those handed back, then a new one if due.
func (g *TaskGenerator) Poll(_ context.Context, limit int) ([]peonify.Delivery, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var ds []peonify.Delivery
	for len(ds) < limit && len(g.returned) > 0 {
		ds = append(ds, peonify.Delivery{Task: g.returned[0]})
		g.returned = g.returned[1:]
	}
	if len(ds) < limit && !time.Now().Before(g.next) {
		g.n++
		g.next = time.Now().Add(g.interval)
		payload, _ := json.Marshal(emailArgs{To: fmt.Sprintf("user%d@example.com", g.n), Subject: "Welcome"})
		ds = append(ds, peonify.Delivery{Task: &peonify.Task{
			ID: peonify.NewID(), Type: "email-task", Payload: payload, Attempt: 1,
		}})
	}
	return ds, nil
}

// Ack is the seed's notifyComplete.
func (g *TaskGenerator) Ack(_ context.Context, ds ...peonify.Delivery) error {
	for _, d := range ds {
		fmt.Printf("completed task %s\n", d.Task.ID)
	}
	return nil
}

// Nack keeps a released or failed task to deliver it again. (A generator
// has nowhere durable to put it; real streams do.)
func (g *TaskGenerator) Nack(_ context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	fmt.Printf("handed back task %s (%s)\n", d.Task.ID, opts.Outcome)
	if opts.Outcome != peonify.OutcomeDead {
		g.mu.Lock()
		g.returned = append(g.returned, d.Task)
		g.mu.Unlock()
	}
	return nil
}

// Close is called once when the processor stops.
func (g *TaskGenerator) Close(context.Context) error { return nil }

func main() {
	// 1. Create the processor: the seed's "new Peonify()".
	p, err := peonify.New(peonify.Config{
		Workers: 4,
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		log.Fatal(err)
	}
	// 2. Add a task list.
	if err := p.AddTaskList(peonify.TaskList{"email-task": EmailTask{}}); err != nil {
		log.Fatal(err)
	}
	// 3. Add a stream so that tasks flow into the queue.
	if err := p.AddStream(&TaskGenerator{interval: 200 * time.Millisecond}); err != nil {
		log.Fatal(err)
	}
	// 4. Run until SIGTERM or Ctrl-C, then drain.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fmt.Println("processing; press Ctrl-C or send SIGTERM to stop")
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
	s := p.Stats()
	fmt.Printf("drained: %d succeeded, %d handed back\n", s.Succeeded, s.Released)
}
