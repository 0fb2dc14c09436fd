package peonify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// runWhile runs p until fn returns, then shuts it down.
func runWhile(p *peonify.Processor, fn func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	fn()
	cancel()
	if err := <-done; err != nil {
		fmt.Println("run:", err)
	}
}

func newQuietProcessor(tl peonify.TaskList, s peonify.Stream) *peonify.Processor {
	p, _ := peonify.New(peonify.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	_ = p.AddTaskList(tl)
	_ = p.AddStream(s)
	return p
}

// JSONResult keeps what a handler returns as the task's result, and a
// producer waits for it: Wait is woken when the task finishes.
func ExampleJSONResult() {
	store := memstream.New(memstream.Config{})
	type sum struct{ A, B int }
	p := newQuietProcessor(peonify.TaskList{
		"add": peonify.JSONResult(func(ctx context.Context, s sum) (int, error) { return s.A + s.B, nil }),
	}, store)

	ctx := context.Background()
	_ = store.Enqueue(ctx, &peonify.Task{ID: "sum-1", Type: "add", Payload: []byte(`{"A":2,"B":3}`)})
	runWhile(p, func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		info, err := store.Wait(wctx, "sum-1")
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(info.State, string(info.Result))
	})
	// Output:
	// done 5
}

// A workflow is enqueued atomically; each task starts when its parents
// have succeeded and reads their results.
func ExampleWorkflow() {
	store := memstream.New(memstream.Config{})
	p := newQuietProcessor(peonify.TaskList{
		"fetch": peonify.JSONResult(func(context.Context, struct{}) (string, error) { return "page", nil }),
		"count": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			parents, err := peonify.ParentResults(ctx)
			if err != nil {
				return err
			}
			for _, r := range parents {
				var page string
				_ = json.Unmarshal(r, &page)
				return peonify.SetResult(ctx, fmt.Appendf(nil, "%s of %s", t.Payload, page))
			}
			return nil
		}),
		"report": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			parents, _ := peonify.ParentResults(ctx)
			var lines []string
			for _, r := range parents {
				lines = append(lines, string(r))
			}
			sort.Strings(lines)
			return peonify.SetResult(ctx, fmt.Appendf(nil, "%q", lines))
		}),
	}, store)

	w := &peonify.Workflow{ID: "crawl-1"}
	fetch := w.Add(&peonify.Task{Type: "fetch"})
	words := w.Add(&peonify.Task{Type: "count", Payload: []byte("words")}, fetch)
	links := w.Add(&peonify.Task{Type: "count", Payload: []byte("links")}, fetch)
	report := w.Add(&peonify.Task{Type: "report"}, words, links)

	ctx := context.Background()
	if err := store.EnqueueWorkflow(ctx, w); err != nil {
		fmt.Println(err)
		return
	}
	runWhile(p, func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		info, _ := store.Wait(wctx, report.ID)
		fmt.Println("report:", string(info.Result))
		wf, _ := store.GetWorkflow(ctx, "crawl-1")
		fmt.Println(wf.State, wf.Counts[peonify.StateDone], "done")
	})
	// Output:
	// report: ["links of page" "words of page"]
	// succeeded 4 done
}

// A running task adds children to its workflow with Spawn; its
// dependents wait for all of them: a fan-out, then a fan-in.
func ExampleSpawn() {
	store := memstream.New(memstream.Config{})
	p := newQuietProcessor(peonify.TaskList{
		"split": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			var parts []*peonify.Task
			for i := 1; i <= 3; i++ {
				parts = append(parts, &peonify.Task{Type: "square", Payload: fmt.Append(nil, i)})
			}
			return peonify.Spawn(ctx, parts...) // IDs derived from t.ID: a second run spawns nothing new
		}),
		"square": peonify.JSONResult(func(_ context.Context, n int) (int, error) { return n * n, nil }),
		"sum": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			parents, _ := peonify.ParentResults(ctx) // split has no result; the squares have theirs
			total := 0
			for _, r := range parents {
				var n int
				_ = json.Unmarshal(r, &n)
				total += n
			}
			return peonify.SetResult(ctx, fmt.Append(nil, total))
		}),
	}, store)

	w := &peonify.Workflow{}
	split := w.Add(&peonify.Task{Type: "split"})
	sum := w.Add(&peonify.Task{Type: "sum"}, split)
	ctx := context.Background()
	_ = store.EnqueueWorkflow(ctx, w)
	runWhile(p, func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		info, _ := store.Wait(wctx, sum.ID)
		fmt.Println("sum of squares:", string(info.Result))
	})
	// Output:
	// sum of squares: 14
}

// A failed parent cancels its dependents, unless they allow failed
// parents: a batch callback runs once all of its parents have finished.
func ExampleTask_allowFailedParents() {
	store := memstream.New(memstream.Config{})
	p := newQuietProcessor(peonify.TaskList{
		"import": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			if string(t.Payload) == "bad.csv" {
				return peonify.SkipRetry(fmt.Errorf("%s: malformed", t.Payload))
			}
			return peonify.SetResult(ctx, []byte("imported "+string(t.Payload)))
		}),
		"index": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil }),
		"notify": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			parents, _ := peonify.ParentResults(ctx)
			fmt.Printf("batch finished: %d of %d imports succeeded\n", len(parents), len(t.Parents))
			return nil
		}),
	}, store)

	w := &peonify.Workflow{}
	good := w.Add(&peonify.Task{Type: "import", Payload: []byte("good.csv")})
	bad := w.Add(&peonify.Task{Type: "import", Payload: []byte("bad.csv")})
	index := w.Add(&peonify.Task{Type: "index"}, bad)
	notify := w.Add(&peonify.Task{Type: "notify", AllowFailedParents: true}, good, bad)
	ctx := context.Background()
	_ = store.EnqueueWorkflow(ctx, w)
	runWhile(p, func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, _ = store.Wait(wctx, notify.ID)
		info, _ := store.Wait(wctx, index.ID)
		fmt.Println("index:", info.State)
	})
	// Output:
	// batch finished: 1 of 2 imports succeeded
	// index: cancelled
}

// ReportProgress is cheap in a loop; the store sees the latest report at
// most once a second, and Cancel stops a running task: its context ends
// with cause ErrCancelled.
func ExampleReportProgress() {
	store := memstream.New(memstream.Config{Lease: 300 * time.Millisecond})
	reported := make(chan struct{})
	p := newQuietProcessor(peonify.TaskList{
		"export": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			for i := 1; i <= 1000; i++ {
				_ = peonify.ReportProgress(ctx, float64(i)/4000, fmt.Sprintf("row %d", i))
			}
			close(reported)
			<-ctx.Done()
			fmt.Println("export stopped:", context.Cause(ctx))
			return context.Cause(ctx)
		}),
	}, store)

	ctx := context.Background()
	_ = store.Enqueue(ctx, &peonify.Task{ID: "export-1", Type: "export"})
	runWhile(p, func() {
		<-reported
		for {
			if info, _ := store.Get(ctx, "export-1"); info.Progress.Message == "row 1000" {
				fmt.Printf("progress: %.0f%% (%s)\n", info.Progress.Fraction*100, info.Progress.Message)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		n, _ := store.Cancel(ctx, "export-1")
		fmt.Println("cancelled:", n)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		info, _ := store.Wait(wctx, "export-1")
		fmt.Println(info.State)
		time.Sleep(200 * time.Millisecond) // the processor learns of it within a third of the lease
	})
	// Output:
	// progress: 25% (row 1000)
	// cancelled: 1
	// cancelled
	// export stopped: peonify: task cancelled
}
