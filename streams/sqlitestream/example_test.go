package sqlitestream_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// The embedded store feeding a processor: the tasks survive a restart of
// the program until they are done.
func Example() {
	dir, err := os.MkdirTemp("", "sqlitestream-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	s, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{})
	if err != nil {
		log.Fatal(err)
	}
	for _, to := range []string{"ada", "grace", "linus"} {
		payload := []byte(`{"to":"` + to + `"}`)
		if err := s.Enqueue(ctx, &peonify.Task{Type: "email", Payload: payload}); err != nil {
			log.Fatal(err)
		}
	}

	type email struct{ To string }
	sent := 0
	p, err := peonify.New(peonify.Config{Workers: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{
		"email": peonify.JSON(func(ctx context.Context, e email) error {
			fmt.Println("sending to", e.To)
			if sent++; sent == 3 {
				stop() // a real program runs until SIGTERM
			}
			return nil
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.AddStream(s); err != nil { // Run closes s when it returns
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// sending to ada
	// sending to grace
	// sending to linus
}

// A producer enqueues tasks durably; a consumer claims, runs and acks them.
// Usually the consumer is a peonify.Processor: see the package example.
func ExampleOpen() {
	dir, err := os.MkdirTemp("", "sqlitestream-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	s, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	err = s.Enqueue(ctx,
		&peonify.Task{ID: "welcome-42", Type: "email", Payload: []byte(`{"user":42}`)},
		&peonify.Task{ID: "invoice-7", Type: "pdf", Priority: 10},
	)
	if err != nil {
		log.Fatal(err)
	}

	ds, err := s.Poll(ctx, 10)
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range ds {
		fmt.Printf("run %s (%s), attempt %d\n", d.Task.ID, d.Task.Type, d.Task.Attempt)
	}
	if err := s.Ack(ctx, ds...); err != nil {
		log.Fatal(err)
	}
	// Output:
	// run invoice-7 (pdf), attempt 1
	// run welcome-42 (email), attempt 1
}

// An ID, or a UniqueKey while its task is live, is stored once.
func ExampleStream_Enqueue_duplicate() {
	dir, err := os.MkdirTemp("", "sqlitestream-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	s, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	report := &peonify.Task{Type: "report", UniqueKey: "daily-report/2030-01-02"}
	fmt.Println(s.Enqueue(ctx, report))
	again := &peonify.Task{ID: "second", Type: "report", UniqueKey: "daily-report/2030-01-02"}
	err = s.Enqueue(ctx, again)
	fmt.Println(errors.Is(err, peonify.ErrDuplicate), err)
	// Output:
	// <nil>
	// true peonify: task second already enqueued (same ID or UniqueKey); not stored again
}

// Operators inspect dead tasks and retry them.
func ExampleStream_Retry() {
	dir, err := os.MkdirTemp("", "sqlitestream-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	s, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	if err := s.Enqueue(ctx, &peonify.Task{ID: "resize-1", Type: "resize"}); err != nil {
		log.Fatal(err)
	}
	ds, err := s.Poll(ctx, 1)
	if err != nil {
		log.Fatal(err)
	}
	err = s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "image is corrupt"})
	if err != nil {
		log.Fatal(err)
	}

	dead, err := s.List(ctx, peonify.ListOptions{State: peonify.StateDead})
	if err != nil {
		log.Fatal(err)
	}
	for _, info := range dead {
		fmt.Printf("%s: %s after %d attempt(s)\n", info.Task.ID, info.LastError, info.Attempts)
	}
	n, err := s.Retry(ctx) // every dead task
	if err != nil {
		log.Fatal(err)
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("retried", n, "- pending:", counts[peonify.StatePending], "dead:", counts[peonify.StateDead])
	// Output:
	// resize-1: image is corrupt after 1 attempt(s)
	// retried 1 - pending: 1 dead: 0
}

// Flow control: each tenant's exports run one at a time, in the order
// they were enqueued, and at most two exports run at once across every
// processor sharing the file.
func Example_flowControl() {
	dir, err := os.MkdirTemp("", "sqlitestream-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	s, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{})
	if err != nil {
		log.Fatal(err)
	}
	var tasks []*peonify.Task
	for i := 1; i <= 3; i++ {
		for _, tenant := range []string{"acme", "globex", "initech"} {
			tasks = append(tasks, &peonify.Task{Type: "export", Key: tenant, Payload: []byte(fmt.Sprint(i))})
		}
	}
	if err := s.Enqueue(ctx, tasks...); err != nil {
		log.Fatal(err)
	}

	var (
		mu      sync.Mutex
		ran     = map[string][]string{}
		running int
		most    int
	)
	p, err := peonify.New(peonify.Config{Workers: 8, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{
		"export": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			mu.Lock()
			running++
			most = max(most, running)
			ran[t.Key] = append(ran[t.Key], string(t.Payload))
			mu.Unlock()
			time.Sleep(10 * time.Millisecond) // the export
			mu.Lock()
			defer mu.Unlock()
			if running--; len(ran["acme"])+len(ran["globex"])+len(ran["initech"]) == len(tasks) && running == 0 {
				stop() // a real program runs until SIGTERM
			}
			return nil
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	err = p.AddStream(s, peonify.Limits(
		peonify.Limit{Type: "export", PerKey: true, Ordered: true},
		peonify.Limit{Type: "export", Concurrency: 2},
	))
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("acme:", ran["acme"])
	fmt.Println("globex:", ran["globex"])
	fmt.Println("initech:", ran["initech"])
	fmt.Println("at most 2 at once:", most <= 2)
	// Output:
	// acme: [1 2 3]
	// globex: [1 2 3]
	// initech: [1 2 3]
	// at most 2 at once: true
}

// A claim holds back what the limits do not admit, without touching it,
// and takes the keys in turn; LimitStats tells what each limit holds.
func ExampleStream_SetLimits() {
	dir, err := os.MkdirTemp("", "sqlitestream-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	s, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	// A processor calls SetLimits with the limits given to AddStream.
	err = s.SetLimits([]peonify.Limit{{PerKey: true, Concurrency: 1, KeyConcurrency: map[string]int{"acme": 2}}})
	if err != nil {
		log.Fatal(err)
	}
	err = s.Enqueue(ctx,
		&peonify.Task{ID: "a1", Type: "sync", Key: "acme"},
		&peonify.Task{ID: "a2", Type: "sync", Key: "acme"},
		&peonify.Task{ID: "a3", Type: "sync", Key: "acme"},
		&peonify.Task{ID: "g1", Type: "sync", Key: "globex"},
		&peonify.Task{ID: "g2", Type: "sync", Key: "globex"},
	)
	if err != nil {
		log.Fatal(err)
	}
	ds, err := s.Poll(ctx, 10)
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range ds {
		fmt.Println("run", d.Task.ID)
	}
	stats, err := s.LimitStats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, st := range stats {
		fmt.Printf("%s: %d in use, %d waiting\n", st.Name, st.InUse, st.Waiting)
		for _, k := range st.Keys {
			fmt.Printf("  %s: %d in use, %d waiting\n", k.Key, k.InUse, k.Waiting)
		}
	}
	// Output:
	// run a1
	// run g1
	// run a2
	// */key: 3 in use, 2 waiting
	//   acme: 2 in use, 1 waiting
	//   globex: 1 in use, 1 waiting
}

// A workflow in the embedded store: fetch, then resize and thumbnail
// from its result, then publish once both are done. The producer waits
// for the last task and reads its result; the store keeps it for
// Config.ResultRetention.
func ExampleStream_EnqueueWorkflow() {
	dir, err := os.MkdirTemp("", "sqlitestream-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	s, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{ResultRetention: time.Hour})
	if err != nil {
		log.Fatal(err)
	}

	// Each step's result is its name after its parents' results.
	step := func(name string) peonify.Handler {
		return peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			parents, err := peonify.ParentResults(ctx)
			if err != nil {
				return err
			}
			var in []string
			for _, id := range t.Parents { // in the order they were added
				in = append(in, string(parents[id]))
			}
			out := name
			switch len(in) {
			case 0:
			case 1:
				out = in[0] + " > " + name
			default:
				out = "(" + strings.Join(in, ", ") + ") > " + name
			}
			return peonify.SetResult(ctx, []byte(out))
		})
	}
	p, err := peonify.New(peonify.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{
		"fetch": step("fetch"), "resize": step("resize"), "thumbnail": step("thumbnail"), "publish": step("publish"),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.AddStream(s); err != nil { // Run closes s when it returns
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	w := &peonify.Workflow{ID: "image-42"}
	fetch := w.Add(&peonify.Task{Type: "fetch"})
	resize := w.Add(&peonify.Task{Type: "resize"}, fetch)
	thumb := w.Add(&peonify.Task{Type: "thumbnail"}, fetch)
	publish := w.Add(&peonify.Task{Type: "publish"}, resize, thumb)
	if err := s.EnqueueWorkflow(ctx, w); err != nil {
		log.Fatal(err)
	}
	info, err := s.Wait(ctx, publish.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.State, string(info.Result))
	wf, err := s.GetWorkflow(ctx, "image-42")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(wf.State, wf.Counts[peonify.StateDone], "tasks done")

	stop()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// done (fetch > resize, fetch > thumbnail) > publish
	// succeeded 4 tasks done
}
