package browsertest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/streams/memstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testToken is the dashboard's bearer token in the test.
const testToken = "test-token-0123456789abcdef"

// runProcessor runs a processor with cfg over s with the handlers of tl
// until the test ends, and returns it.
func runProcessor(t *testing.T, cfg peonify.Config, s peonify.Stream, tl peonify.TaskList) *peonify.Processor {
	t.Helper()
	p, err := peonify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddTaskList(tl); err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(s); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	return p
}

// findChromium returns the path of Chromium, or skips the test (fails it
// under PEONIFY_REQUIRE_SERVICES=1) when it is not installed.
func findChromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err == nil {
		return path
	}
	msg := "needs Chromium on PATH (Debian: apt-get install chromium): " + err.Error()
	if os.Getenv("PEONIFY_REQUIRE_SERVICES") == "1" {
		t.Fatal(msg + "; PEONIFY_REQUIRE_SERVICES=1 makes a missing browser an error")
	}
	t.Skip(msg)
	return ""
}

// browserProblems collects what a page reports to its console: console.error
// calls, uncaught exceptions, and browser log errors such as failed loads
// and Content-Security-Policy violations.
type browserProblems struct {
	mu   sync.Mutex
	list []string
}

func (b *browserProblems) listen(ev any) {
	var p string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			p = "console." + string(ev.Type) + ": " + strings.Join(args, " ")
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		p = "exception: " + d.Text
		if d.Exception != nil {
			p += " " + d.Exception.Description
		}
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.EntryLevelError {
			p = "log: " + ev.Entry.Text + " " + ev.Entry.URL
		}
	}
	if p != "" {
		b.mu.Lock()
		b.list = append(b.list, p)
		b.mu.Unlock()
	}
}

func (b *browserProblems) get() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.list...)
}

// TestBrowser drives the dashboard in a real headless Chromium: it signs in
// from a token link, watches the numbers change while tasks run, checks that
// hostile task data stays text, and retries a dead task with its button.
func TestBrowser(t *testing.T) {
	chrome := findChromium(t)

	// A processor over a memstream. A "charge" task fails permanently on
	// its first run and succeeds once retried; an "evil" one dies with
	// HTML in its payload and error; "slow" ones keep the workers busy.
	mem := memstream.New(memstream.Config{Name: "mem"})
	var (
		mu   sync.Mutex
		runs = map[string]int{}
	)
	recovered := make(chan string, 1)
	dead := make(chan string, 10)
	p := runProcessor(t, peonify.Config{
		Workers: 2,
		Logger:  slog.New(slog.DiscardHandler),
		OnEvent: func(e peonify.Event) {
			if e.Kind == peonify.EventDead {
				dead <- e.Task.ID
			}
		},
	}, mem, peonify.TaskList{
		"slow": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			select {
			case <-time.After(100 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}),
		"charge": peonify.HandlerFunc(func(_ context.Context, task *peonify.Task) error {
			mu.Lock()
			runs[task.ID]++
			n := runs[task.ID]
			mu.Unlock()
			if n == 1 {
				return peonify.SkipRetry(errors.New("card declined"))
			}
			select {
			case recovered <- task.ID:
			default:
			}
			return nil
		}),
		"evil": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
			return peonify.SkipRetry(errors.New(`<img src=x onerror="window.__xss='error'">`))
		}),
	})
	ctx := context.Background()
	err := mem.Enqueue(ctx,
		&peonify.Task{ID: "charge-1", Type: "charge", Payload: []byte(`{"order":42,"cents":1999}`)},
		&peonify.Task{ID: "evil-1", Type: "evil",
			Payload: []byte(`<script>window.__xss='script'</script><img src=x onerror="window.__xss='payload'">`)})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case <-dead:
		case <-time.After(10 * time.Second):
			t.Fatal("the tasks did not die")
		}
	}

	srv, b := serveDashboard(t, ctx, chrome, dashboard.Config{Processor: p, Stores: []dashboard.Store{{Name: "mem", Inspector: mem}}})
	do, waitJS, evalJS := b.do, b.waitJS, b.evalJS

	// Sign in from the link an operator is given.
	do("loading the page", chromedp.Navigate(srv.URL+"/#token="+testToken))
	waitJS("waiting for live updates", `document.getElementById('status').dataset.state === 'live'`)
	if href := evalJS(`location.href`); strings.Contains(href, "token") {
		t.Errorf("the token stays in the address bar: %s", href)
	}

	// The dead tasks are listed; hostile data is shown as text and runs
	// nothing.
	retry := `button[data-action="retry"][data-id="charge-1"]`
	do("waiting for the dead task", chromedp.WaitVisible(chromedp.CSS(retry)))
	if got := evalJS(`document.querySelector('tr[data-id="evil-1"] td.payload').textContent`); !strings.Contains(got, `<script>window.__xss='script'</script>`) {
		t.Errorf("the hostile payload is not shown as text: %q", got)
	}
	if got := evalJS(`document.querySelector('tr[data-id="evil-1"] td.err').textContent`); !strings.HasPrefix(got, `<img src=x`) {
		t.Errorf("the hostile error is not shown as text: %q", got)
	}
	if got := evalJS(`String(window.__xss) + ' ' + document.querySelectorAll('script').length + ' ' + document.querySelectorAll('main img').length`); got != "undefined 1 0" {
		t.Errorf("task data became markup: window.__xss, scripts, images = %s", got)
	}

	// The numbers change while tasks run, without a reload.
	marker := evalJS(`(window.__marker = 'same page')`)
	before := evalJS(`document.getElementById('stat-succeeded').textContent`)
	slow := make([]*peonify.Task, 30)
	for i := range slow {
		slow[i] = &peonify.Task{Type: "slow", Payload: []byte(`{"n":` + strconv.Itoa(i) + `}`)}
	}
	if err := mem.Enqueue(ctx, slow...); err != nil {
		t.Fatal(err)
	}
	waitJS("waiting for running tasks to show", `document.querySelectorAll('#inflight tbody td.id').length > 0`)
	waitJS("waiting for the succeeded count to change",
		fmt.Sprintf(`document.getElementById('stat-succeeded').textContent !== %s`, strconv.Quote(before)))
	waitJS("waiting for a throughput", `Number(document.getElementById('stat-rate').textContent) > 0`)
	if evalJS(`window.__marker`) != marker {
		t.Error("the page reloaded")
	}

	// Retry the dead task with its button: it runs again and succeeds, and
	// the page shows it.
	do("clicking Retry", chromedp.Click(chromedp.CSS(retry)))
	select {
	case id := <-recovered:
		if id != "charge-1" {
			t.Fatalf("recovered %s", id)
		}
	case <-b.ctx.Done():
		t.Fatalf("the retried task did not run again; page problems: %q", b.problems.get())
	}
	waitJS("waiting for the retried task to leave the dead list",
		`!document.querySelector('tr[data-id="charge-1"]') && document.querySelector('[data-store="mem"] .count.dead .n').textContent === '1'`)
	if got := evalJS(`document.getElementById('notice').textContent`); got != "Retried 1 task in mem." {
		t.Errorf("notice after the retry: %q", got)
	}
	waitJS("waiting for the slow tasks", `document.getElementById('stat-succeeded').textContent === '31'`)

	b.finish("dashboard.png")
}

// TestBrowserWorkflow drives the views of a store that tracks its tasks and
// runs workflows: a running task's progress bar, a done task's result, a
// workflow's view reached from one of its tasks, a task's Cancel button
// (which stops it while it runs, and its dependent with it) and a Cancel
// workflow button.
func TestBrowserWorkflow(t *testing.T) {
	chrome := findChromium(t)

	// "fetch" succeeds with a JSON result; "resize" reports its progress
	// and runs until it is cancelled; "publish" depends on it.
	mem := memstream.New(memstream.Config{Name: "mem", Lease: 3 * time.Second})
	stopped := make(chan error, 1)
	step := make(chan struct{})
	p := runProcessor(t, peonify.Config{Workers: 2, Logger: slog.New(slog.DiscardHandler)}, mem, peonify.TaskList{
		"fetch": peonify.JSONResult(func(context.Context, struct{}) (map[string]int, error) {
			return map[string]int{"bytes": 1234}, nil
		}),
		"resize": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			if err := peonify.ReportProgress(ctx, 0.5, "resizing 1 of 2"); err != nil {
				return err
			}
			select {
			case <-step:
				if err := peonify.ReportProgress(ctx, 0.75, "resizing 2 of 2"); err != nil {
					return err
				}
			case <-ctx.Done():
			}
			<-ctx.Done()
			stopped <- context.Cause(ctx)
			return ctx.Err()
		}),
		"publish": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil }),
		"later":   peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil }),
	})
	ctx := context.Background()
	w := &peonify.Workflow{ID: "nightly"}
	fetch := w.Add(&peonify.Task{ID: "fetch", Type: "fetch"})
	resize := w.Add(&peonify.Task{ID: "resize", Type: "resize"}, fetch)
	w.Add(&peonify.Task{ID: "publish", Type: "publish"}, resize)
	if err := mem.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	// A second workflow waits for a task an hour ahead.
	w2 := &peonify.Workflow{ID: "weekly"}
	first := w2.Add(&peonify.Task{ID: "weekly-first", Type: "later", RunAt: time.Now().Add(time.Hour)})
	w2.Add(&peonify.Task{ID: "weekly-then", Type: "later"}, first)
	if err := mem.EnqueueWorkflow(ctx, w2); err != nil {
		t.Fatal(err)
	}

	srv, b := serveDashboard(t, ctx, chrome, dashboard.Config{Processor: p, Stores: []dashboard.Store{{Name: "mem", Inspector: mem}}})
	do, waitJS, evalJS := b.do, b.waitJS, b.evalJS
	do("loading the page", chromedp.Navigate(srv.URL+"/#token="+testToken))
	waitJS("waiting for live updates", `document.getElementById('status').dataset.state === 'live'`)
	evalJS(`(window.confirm = () => true, 'ok')`) // the buttons ask first
	store := `[data-store="mem"] `

	// The new states are counted.
	waitJS("waiting for the counts", `document.querySelector('`+store+`.count.waiting .n').textContent === '2' &&
		document.querySelector('`+store+`.count.running .n').textContent === '1' &&
		document.querySelector('`+store+`.count.done .n').textContent === '1'`)

	// The running task shows its progress bar and a Cancel button.
	do("opening the running tab", chromedp.Click(chromedp.CSS(store+`button.count.running`)))
	row := store + `tr[data-id="resize"] `
	waitJS("waiting for the progress bar", `(() => { const p = document.querySelector('`+row+`.progress progress');
		return p && p.value === 50 && document.querySelector('`+row+`.progress .msg').textContent === 'resizing 1 of 2'; })()`)
	do("waiting for the Cancel button", chromedp.WaitVisible(chromedp.CSS(row+`button[data-action="cancel"]`)))
	close(step) // the bar follows the task's next report, without a click
	waitJS("waiting for the progress bar to move", `(() => { const p = document.querySelector('`+row+`.progress progress');
		return p && p.value === 75 && document.querySelector('`+row+`.progress .msg').textContent === 'resizing 2 of 2'; })()`)

	// The done task shows its result, and links to its workflow.
	do("opening the done tab", chromedp.Click(chromedp.CSS(store+`button.count.done`)))
	do("opening the done task", chromedp.Click(chromedp.CSS(store+`tr[data-id="fetch"] td.id a`)))
	waitJS("waiting for the result", `(() => { const r = document.querySelector('dialog.task[data-id="fetch"] pre.result');
		return r && JSON.parse(r.textContent).bytes === 1234; })()`)
	do("opening the workflow from the task", chromedp.Click(chromedp.CSS(`dialog.task a.wflink[data-workflow="nightly"]`)))
	wf := `dialog.workflow[data-workflow="nightly"] `
	waitJS("waiting for the workflow view", `(() => { const d = document.querySelector('`+wf+`');
		return d && d.open && d.querySelector('.wfstate').textContent === 'running' &&
			d.querySelector('tr[data-id="fetch"]').dataset.state === 'done' &&
			d.querySelector('tr[data-id="resize"]').dataset.state === 'running' &&
			d.querySelector('tr[data-id="resize"] progress').value === 75 &&
			d.querySelector('tr[data-id="publish"]').dataset.state === 'waiting' &&
			d.querySelector('tr[data-id="publish"] td.parents').textContent === 'resize' &&
			!!d.querySelector('button[data-action="cancel-workflow"]'); })()`)
	do("closing the workflow view", chromedp.Click(chromedp.CSS(wf+`.dialog-actions button:not([data-action])`)))

	// Cancel the running task with its button: its handler is stopped with
	// ErrCancelled, and its dependent is cancelled with it.
	do("opening the running tab", chromedp.Click(chromedp.CSS(store+`button.count.running`)))
	do("clicking Cancel", chromedp.Click(chromedp.CSS(row+`button[data-action="cancel"]`)))
	select {
	case cause := <-stopped:
		if !errors.Is(cause, peonify.ErrCancelled) {
			t.Errorf("the running task was stopped with %v, want ErrCancelled", cause)
		}
	case <-b.ctx.Done():
		t.Fatalf("the cancelled task kept running; page problems: %q", b.problems.get())
	}
	waitJS("waiting for the cancelled counts", `document.querySelector('`+store+`.count.cancelled .n').textContent === '2' &&
		document.querySelector('`+store+`.count.running .n').textContent === '0'`)
	if got := evalJS(`document.getElementById('notice').textContent`); got != "Cancelled 1 task in mem." {
		t.Errorf("notice after the cancel: %q", got)
	}
	waitJS("waiting for the processor's cancelled count", `document.getElementById('stat-cancelled').textContent === '1'`)

	// Cancel a whole workflow from its view.
	do("opening the waiting tab", chromedp.Click(chromedp.CSS(store+`button.count.waiting`)))
	do("opening the workflow from the list", chromedp.Click(chromedp.CSS(store+`tr[data-id="weekly-then"] a.wflink`)))
	wf2 := `dialog.workflow[data-workflow="weekly"] `
	do("clicking Cancel workflow", chromedp.Click(chromedp.CSS(wf2+`button[data-action="cancel-workflow"]`)))
	waitJS("waiting for the workflow to be cancelled", `(() => { const d = document.querySelector('`+wf2+`');
		return d && d.open && d.querySelector('.wfstate').textContent === 'cancelled' &&
			!d.querySelector('button[data-action="cancel-workflow"]') &&
			d.querySelector('tr[data-id="weekly-then"]').dataset.state === 'cancelled'; })()`)
	if got := evalJS(`document.getElementById('notice').textContent`); got != "Cancelled 2 tasks of workflow weekly." {
		t.Errorf("notice after the workflow's cancel: %q", got)
	}
	waitJS("waiting for the counts", `document.querySelector('`+store+`.count.cancelled .n').textContent === '4' &&
		document.querySelector('`+store+`.count.waiting .n').textContent === '0'`)

	b.finish("dashboard-workflow.png")
}

// browser is a headless Chromium on one page, with the test's problems
// (console errors, failed requests) collected for failure messages.
type browser struct {
	t        *testing.T
	ctx      context.Context
	problems *browserProblems
}

// serveDashboard serves a dashboard of cfg, signed in with testToken and
// refreshed every 200ms, and returns its server and a browser for it.
func serveDashboard(t *testing.T, ctx context.Context, chrome string, cfg dashboard.Config) (*httptest.Server, *browser) {
	t.Helper()
	cfg.Auth = dashboard.Auth{Token: testToken}
	cfg.Interval = 200 * time.Millisecond
	d, err := dashboard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close) // after the browser, whose page holds an event stream open
	return srv, newBrowser(t, ctx, chrome)
}

// newBrowser starts Chromium at path chrome; it stops when the test ends.
func newBrowser(t *testing.T, ctx context.Context, chrome string) *browser {
	t.Helper()
	actx, acancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chrome),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), // /dev/shm is small in containers
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1100),
	)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	bctx, cancel := context.WithTimeout(bctx, 25*time.Second)
	t.Cleanup(cancel)
	b := &browser{t: t, ctx: bctx, problems: &browserProblems{}}
	if err := chromedp.Listen(bctx, b.problems.listen); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return b
}

// do runs actions, failing the test with what it was doing.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v; page problems: %q", what, err, b.problems.get())
	}
}

// waitJS waits until expr is true on the page.
func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	b.do(what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
}

// evalJS returns the value of expr on the page.
func (b *browser) evalJS(expr string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// finish saves a screenshot of the page as name, in PEONIFY_SCREENSHOT_DIR
// or else a temporary directory, and fails the test if the page reported
// problems.
func (b *browser) finish(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("PEONIFY_SCREENSHOT_DIR")
	if dir == "" {
		dir = b.t.TempDir()
	}
	shot := filepath.Join(dir, name)
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", shot)
	if ps := b.problems.get(); len(ps) > 0 {
		b.t.Errorf("the page reported problems:\n%s", strings.Join(ps, "\n"))
	}
}
