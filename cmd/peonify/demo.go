package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/streams/sqlitestream"
)

func demoCommand() *command {
	return &command{
		name:    "demo",
		summary: "run sample tasks on a local store and show what happens",
		usage:   "demo [--tasks N] [--workers N] [--store FILE] [--dashboard=false]",
		about: `Demo shows Peonify at work with nothing to set up. It enqueues sample tasks
into an embedded store (a temporary file unless --store names one) and runs
them: emails, image resizes, card charges that fail now and then (they are
retried after a short backoff, and some run out of attempts), and reports
whose payload is sometimes malformed (they are dead at once, since no retry
can fix them). A progress line shows the rate; a summary closes the run.

The web dashboard shows the run at a URL on 127.0.0.1 that the demo prints
(it carries a sign-in token: open it on this machine). On a terminal the
dashboard stays up after the summary, to look at the dead tasks and retry
them, until Ctrl-C. --dashboard=false turns it off.

With --store, the store stays afterwards, to look at with 'peonify tasks'.`,
		example: `peonify demo
peonify demo --tasks 50000 --workers 64
peonify demo --store demo.db && peonify tasks list --state dead --store demo.db`,
		run: (*cli).demo,
	}
}

// The demo's task types and their payloads.
type (
	demoEmail struct {
		To       string `json:"to"`
		Template string `json:"template"`
	}
	demoImage struct {
		Image string `json:"image"`
		Width int    `json:"width"`
	}
	demoCharge struct {
		Order int `json:"order"`
		Cents int `json:"cents"`
	}
	demoReport struct {
		Rows int `json:"rows"`
	}
)

// demoChargeFailRate is the share of card charges that fail: with three
// attempts, about 4% of them run out of attempts.
const demoChargeFailRate = 0.35

// demoTaskList is the demo's task list: each handler sleeps a little, as
// real work waits on the network.
func demoTaskList() peonify.TaskList {
	return peonify.TaskList{
		"send-email": peonify.JSON(func(ctx context.Context, a demoEmail) error {
			return pretendWork(ctx, time.Millisecond, 3*time.Millisecond)
		}),
		"resize-image": peonify.JSON(func(ctx context.Context, a demoImage) error {
			return pretendWork(ctx, 2*time.Millisecond, 6*time.Millisecond)
		}),
		"charge-card": peonify.JSON(func(ctx context.Context, a demoCharge) error {
			if err := pretendWork(ctx, time.Millisecond, 4*time.Millisecond); err != nil {
				return err
			}
			if rand.Float64() < demoChargeFailRate {
				return fmt.Errorf("payment gateway timed out for order %d (simulated)", a.Order)
			}
			return nil
		}),
		"build-report": peonify.JSON(func(ctx context.Context, a demoReport) error {
			return pretendWork(ctx, 3*time.Millisecond, 8*time.Millisecond)
		}),
	}
}

// pretendWork waits a random time in [lo, hi) or until ctx ends.
func pretendWork(ctx context.Context, lo, hi time.Duration) error {
	t := time.NewTimer(lo + rand.N(hi-lo))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// demoTask returns the i-th sample task: 45% emails, 30% resizes, 20%
// charges and 5% reports, one in five of which has a malformed payload.
func demoTask(i int, run string) *peonify.Task {
	t := &peonify.Task{ID: fmt.Sprintf("demo-%s-%06d", run, i), Headers: map[string]string{"demo-run": run}}
	switch k := i % 20; {
	case k < 9:
		t.Type, t.Payload = "send-email", fmt.Appendf(nil, `{"to":"user%d@example.com","template":"welcome"}`, i)
	case k < 15:
		t.Type, t.Payload = "resize-image", fmt.Appendf(nil, `{"image":"img-%d.png","width":640}`, i)
	case k < 19:
		t.Type, t.Payload = "charge-card", fmt.Appendf(nil, `{"order":%d,"cents":1999}`, i)
		t.MaxAttempts = 3
	case (i/20)%5 == 0:
		t.Type, t.Payload = "build-report", []byte(`{"rows":"all of them"}`) // rows must be a number
	default:
		t.Type, t.Payload = "build-report", fmt.Appendf(nil, `{"rows":%d}`, 100+i%900)
	}
	return t
}

func (c *cli) demo(cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	n := fs.Int("tasks", 10000, "how many tasks to enqueue and run")
	workers := fs.Int("workers", 64, "how many tasks run at once")
	storePath := fs.String("store", "", "keep the store in this `file` (default: a temporary file, deleted at the end)")
	withDashboard := fs.Bool("dashboard", true, "serve the web dashboard on 127.0.0.1 and print its URL")
	if err := c.parseFlags(cmd, fs, args); err != nil {
		return err
	}
	switch {
	case *n < 1 || *n > 10_000_000:
		return usagef("--tasks must be between 1 and 10000000")
	case *workers < 1 || *workers > 10_000:
		return usagef("--workers must be between 1 and 10000")
	}

	path := *storePath
	if path == "" {
		dir, err := os.MkdirTemp("", "peonify-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "demo.db")
	}
	// Errors only: the processor warns about every dead task, which the
	// summary counts instead.
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	stream, err := sqlitestream.Open(path, sqlitestream.Config{Name: "demo", WatchInterval: -1, Logger: log})
	if err != nil {
		return err
	}
	// The stream outlives Run, which closes only the wrapper, so that the
	// dashboard can still show the store after the run.
	defer stream.Close(context.Background())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	run := fmt.Sprintf("%04x", rand.N(1<<16))
	tr := newTracker(*n, run)
	p, err := peonify.New(peonify.Config{
		Workers:       *workers,
		TaskTimeout:   10 * time.Second,
		ShutdownGrace: 5 * time.Second,
		Retry:         peonify.RetryPolicy{MaxAttempts: 3, MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		OnEvent:       tr.event,
		Logger:        log,
	})
	if err != nil {
		return err
	}
	if err := p.AddTaskList(demoTaskList()); err != nil {
		return err
	}

	fmt.Fprintf(c.stdout, "Peonify demo: %s tasks, %d workers, store %s\n", thousands(*n), *workers, path)
	enqStart := time.Now()
	batch := make([]*peonify.Task, 0, enqueueBatch)
	for i := range *n {
		batch = append(batch, demoTask(i, run))
		if len(batch) == cap(batch) || i == *n-1 {
			if err := stream.Enqueue(ctx, batch...); err != nil {
				if ctx.Err() != nil {
					return errors.New("interrupted while enqueueing the sample tasks")
				}
				return fmt.Errorf("enqueue: %w", err)
			}
			batch = batch[:0]
		}
	}
	enqTook := time.Since(enqStart)

	if err := p.AddStream(keepOpen{stream}); err != nil {
		return err
	}
	var dashURL string
	if *withDashboard {
		dashCtx, stopDash := context.WithCancel(context.Background())
		var dashDone sync.WaitGroup
		defer func() { stopDash(); dashDone.Wait() }()
		if dashURL, err = serveDemoDashboard(dashCtx, &dashDone, p, stream, log); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "Dashboard: %s\n", dashURL)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr := &progress{w: c.stderr, tty: c.tty, total: *n, start: time.Now()}
	tr.start = pr.start
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(pr.interval())
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				pr.update(time.Now(), tr.counts())
			case <-tr.done:
				cancel()
				return
			case <-runCtx.Done():
				return
			}
		}
	})
	err = p.Run(runCtx)
	cancel()
	wg.Wait()
	end := tr.end()
	pr.finish(end, tr.counts())
	if err != nil {
		return err
	}
	interrupted := ctx.Err() != nil
	tr.summary(c.stdout, p.Stats(), end.Sub(pr.start), enqTook)
	switch {
	case interrupted && *storePath == "":
		fmt.Fprintln(c.stdout, "\nInterrupted.")
	case interrupted:
		fmt.Fprintln(c.stdout, "\nInterrupted: the unfinished tasks were handed back to the store.")
	case *storePath == "":
		fmt.Fprintln(c.stdout, "\nThe store was a temporary file. Keep one with --store demo.db, then look inside:\n  peonify tasks list --state dead --store demo.db")
	default:
		fmt.Fprintf(c.stdout, "\nLook inside the store:\n  peonify tasks stats --store %[1]s\n  peonify tasks list --state dead --store %[1]s\n", shellQuote(*storePath))
	}
	fmt.Fprintln(c.stdout, "Run your own tasks (HTTP endpoints, commands): peonify run --help")
	if dashURL != "" && c.tty && !interrupted {
		fmt.Fprintf(c.stdout, "\nThe dashboard stays up for a look at the tasks: %s\nPress Ctrl-C to exit.\n", dashURL)
		<-ctx.Done()
	}
	return nil
}

// keepOpen is a stream whose Close does nothing, for a stream that must
// outlive the processor's Run.
type keepOpen struct{ *sqlitestream.Stream }

// Close does nothing; the owner closes the stream.
func (keepOpen) Close(context.Context) error { return nil }

// serveDemoDashboard serves the dashboard of p and store on a free port of
// 127.0.0.1 until ctx ends, and returns its URL with a sign-in token.
func serveDemoDashboard(ctx context.Context, wg *sync.WaitGroup, p *peonify.Processor, store *sqlitestream.Stream, log *slog.Logger) (string, error) {
	dash, err := dashboard.New(dashboard.Config{
		Processor: p,
		Stores:    []dashboard.Store{{Name: "demo", Inspector: store}},
		Auth:      dashboard.Auth{Token: dashboard.NewToken()},
		Logger:    log,
	})
	if err != nil {
		return "", err
	}
	ln, err := dash.Listen("127.0.0.1:0")
	if err != nil {
		return "", err
	}
	wg.Go(func() {
		if err := dash.Serve(ctx, ln); err != nil {
			log.Error("peonify: dashboard", "err", err)
		}
	})
	return dash.TokenURL(ln.Addr()), nil
}

// tracker counts the outcomes of one demo run's tasks from the
// processor's events.
type tracker struct {
	total int
	run   string
	start time.Time

	succeeded, retried, dead atomic.Int64
	lastAt                   atomic.Int64 // unix nanos of the last settled task

	mu      sync.Mutex
	runs    []time.Duration // handler run times, every attempt
	latency []time.Duration // enqueue to settled (done or dead)
	types   map[string]*typeTally

	once sync.Once
	done chan struct{} // closed when every task is settled
}

type typeTally struct {
	succeeded, retried, dead int
	runs                     []time.Duration
}

func newTracker(total int, run string) *tracker {
	return &tracker{total: total, run: run, types: make(map[string]*typeTally), done: make(chan struct{}),
		runs: make([]time.Duration, 0, total), latency: make([]time.Duration, 0, total)}
}

func (tr *tracker) event(e peonify.Event) {
	if e.Task.Headers["demo-run"] != tr.run {
		return
	}
	switch e.Kind {
	case peonify.EventSucceeded, peonify.EventRetried, peonify.EventDead:
	default:
		return
	}
	now := time.Now()
	tr.mu.Lock()
	tt := tr.types[e.Task.Type]
	if tt == nil {
		tt = new(typeTally)
		tr.types[e.Task.Type] = tt
	}
	if e.Duration > 0 {
		tr.runs = append(tr.runs, e.Duration)
		tt.runs = append(tt.runs, e.Duration)
	}
	settled := e.Kind != peonify.EventRetried
	if settled {
		tr.latency = append(tr.latency, now.Sub(e.Task.EnqueuedAt))
	}
	switch e.Kind {
	case peonify.EventSucceeded:
		tt.succeeded++
		tr.succeeded.Add(1)
	case peonify.EventRetried:
		tt.retried++
		tr.retried.Add(1)
	case peonify.EventDead:
		tt.dead++
		tr.dead.Add(1)
	}
	tr.mu.Unlock()
	if settled {
		tr.lastAt.Store(now.UnixNano())
		if tr.succeeded.Load()+tr.dead.Load() >= int64(tr.total) {
			tr.once.Do(func() { close(tr.done) })
		}
	}
}

func (tr *tracker) counts() progressCounts {
	return progressCounts{
		done:    int(tr.succeeded.Load() + tr.dead.Load()),
		retried: int(tr.retried.Load()),
		dead:    int(tr.dead.Load()),
	}
}

// end is when the last task settled, or now if none did.
func (tr *tracker) end() time.Time {
	if n := tr.lastAt.Load(); n > 0 {
		return time.Unix(0, n)
	}
	return time.Now()
}

// summary prints the closing report of the run.
func (tr *tracker) summary(w io.Writer, st peonify.Stats, took, enqTook time.Duration) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	c := tr.counts()
	rate := 0.0
	if took > 0 {
		rate = float64(c.done) / took.Seconds()
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\n  enqueued\t%s\tin %s, in batches of %d, durably\n", thousands(tr.total), round(enqTook), enqueueBatch)
	fmt.Fprintf(tw, "  succeeded\t%s\tdone and acked\n", thousands(int(tr.succeeded.Load())))
	fmt.Fprintf(tw, "  retried\t%s\tfailed attempts, run again after a backoff\n", thousands(c.retried))
	fmt.Fprintf(tw, "  dead\t%s\tout of attempts, or a payload no retry can fix\n", thousands(c.dead))
	fmt.Fprintf(tw, "  throughput\t%s tasks/s\t%s tasks in %s, with %d workers\n", thousands(int(rate+0.5)), thousands(c.done), round(took), st.Workers)
	fmt.Fprintf(tw, "  run time\tp50 %s\tp99 %s  (one attempt of a handler)\n", round(quantile(tr.runs, 0.5)), round(quantile(tr.runs, 0.99)))
	fmt.Fprintf(tw, "  latency\tp50 %s\tp99 %s  (enqueued to done or dead, behind the backlog)\n", round(quantile(tr.latency, 0.5)), round(quantile(tr.latency, 0.99)))
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	width := len("type")
	for typ := range tr.types {
		width = max(width, len(typ))
	}
	fmt.Fprintf(tw, "  %-*s\tsucceeded\tretried\tdead\tp50\tp99\t\n", width, "type")
	for _, typ := range yamlfile.SortedKeys(tr.types) {
		tt := tr.types[typ]
		fmt.Fprintf(tw, "  %-*s\t%d\t%d\t%d\t%s\t%s\t\n", width, typ, tt.succeeded, tt.retried, tt.dead,
			round(quantile(tt.runs, 0.5)), round(quantile(tt.runs, 0.99)))
	}
	tw.Flush()
}

// quantile returns the q-quantile of ds (sorting ds).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q*float64(len(ds)) + 0.5)
	return ds[min(max(i-1, 0), len(ds)-1)]
}

// round shortens a duration for people: 2.4ms, 1.37s.
func round(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
