package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/peonifyotel"
	"github.com/peonify/peonify/peonifyprom"
	"github.com/peonify/peonify/periodic"
	"github.com/peonify/peonify/streams/webhookstream"
)

func runCommand() *command {
	return &command{
		name:    "run",
		summary: "run the processor configured by a peonify.yaml file",
		usage:   "run [-c peonify.yaml] [--check]",
		about: `Run is the standalone processor: it takes tasks from the streams of a config
file and runs each with the executor of its type (http: POST the payload to
a URL; exec: run a command with the payload on stdin), so that services in
any language can use Peonify. It also enqueues the file's periodic tasks,
serves the file's intakes (webhooks, a WebSocket endpoint, MQTT
subscriptions), which store what they receive before acknowledging it, and,
with an http section, serves /metrics, /healthz and /readyz, and with an
api section the HTTP API under /v1/.

SIGTERM or Ctrl-C stops it gracefully: it stops its intakes, stops taking
tasks, lets running ones finish within processor.shutdown_grace, hands back
the rest, and exits with status 0. A second Ctrl-C exits at once.

A bad config file is reported with the field at fault, and exit status 2.
The file format is described in the README of cmd/peonify. A minimal file:

  streams:
    - kind: sqlite
      path: peonify.db
  tasks:
    email:
      executor: http
      url: https://mailer.internal/send
    thumbnail:
      executor: exec
      command: ["./make-thumbnail.sh"]`,
		example: `peonify run -c peonify.yaml
peonify run -c peonify.yaml --check   # validate the file and exit
peonify enqueue --store peonify.db --type email --payload '{"to":"ada@example.com"}'`,
		run: (*cli).run,
	}
}

func (c *cli) run(cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	path := fs.String("c", "peonify.yaml", "the config `file`")
	check := fs.Bool("check", false, "validate the config file and exit")
	if err := c.parseFlags(cmd, fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, c.lookupEnv)
	if err != nil {
		return err
	}
	if *check {
		fmt.Fprintf(c.stdout, "%s is valid: %s\n", *path, cfg.summary())
		return nil
	}
	log := cfg.log.logger(c.stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal has its default effect: exit at once
	}()
	return c.serve(ctx, cfg, log)
}

// summary describes a config in one line.
func (cfg *config) summary() string {
	var streams, tasks []string
	for _, s := range cfg.streams {
		desc := s.common().Name + " (" + s.common().Kind
		if in, ok := s.(intakeSpec); ok {
			desc += " into " + *in.storeField()
		}
		streams = append(streams, desc+")")
	}
	for _, typ := range yamlfile.SortedKeys(cfg.tasks) {
		tasks = append(tasks, typ+" ("+cfg.tasks[typ].common().Executor+")")
	}
	out := fmt.Sprintf("streams %s; task types %s", strings.Join(streams, ", "), strings.Join(tasks, ", "))
	if n := len(cfg.periodic); n > 0 {
		out += fmt.Sprintf("; %d periodic %s", n, plural(n, "task", "tasks"))
	}
	if n := cfg.limitCount(); n > 0 {
		out += fmt.Sprintf("; %d %s", n, plural(n, "limit", "limits"))
	}
	if cfg.http.Listen != "" {
		out += "; http on " + cfg.http.Listen
	}
	out += cfg.api.summary()
	return out
}

// syncWebhooks reports whether a webhook route of cfg answers with its
// task's result, which needs the processor's middleware.
func (cfg *config) syncWebhooks() bool {
	for _, s := range cfg.streams {
		if w, ok := s.(syncIntake); ok && w.sync() {
			return true
		}
	}
	return false
}

// serve runs the processor of cfg until ctx ends, then drains it.
func (c *cli) serve(ctx context.Context, cfg *config, log *slog.Logger) error {
	d, err := newDaemon(ctx, cfg, log, c.stdout)
	if err != nil {
		return err
	}
	return d.run(ctx)
}

// daemon is the processor of a config file with what it runs: its
// streams, intakes, periodic schedulers and admin server. newDaemon builds
// it, opening the streams and starting the servers, so that a start-up
// error shows before anything runs; run runs it and closes it.
type daemon struct {
	cfg     *config
	log     *slog.Logger
	p       *peonify.Processor
	scheds  []*periodic.Scheduler
	intakes []string // the names of the intakes, for the log

	// stopping is set when the context of run ends: /readyz then reports
	// the drain.
	stopping atomic.Bool
	// ready lists the intakes' checks of /readyz.
	ready []readyCheck
	// running is set when the processor runs, which closes the streams
	// itself.
	running bool
	// cleanup undoes what newDaemon did, last first.
	cleanup []func()
}

// newDaemon builds the daemon of cfg, logging to log; exec tasks whose
// stdout is kept write to stdout. ctx bounds the start-up (connecting to
// the stores). On error, what was built is closed again.
func newDaemon(ctx context.Context, cfg *config, log *slog.Logger, stdout io.Writer) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	pcfg := cfg.processor
	pcfg.Logger = log
	pcfg.OnEvent = eventLogger(log)
	if cfg.tracing.on {
		tp, stop, err := cfg.tracing.start(ctx, log)
		if err != nil {
			return nil, err
		}
		d.cleanup = append(d.cleanup, stop) // last: after the drain
		pcfg.Middleware = append([]peonify.Middleware{peonifyotel.Middleware(tp)}, pcfg.Middleware...)
	}
	var metrics *peonifyprom.Metrics
	if cfg.http.Listen != "" {
		var err error
		if metrics, err = peonifyprom.New(peonifyprom.Config{}); err != nil {
			return nil, err
		}
		logEvent := pcfg.OnEvent
		pcfg.OnEvent = func(e peonify.Event) { metrics.OnEvent(e); logEvent(e) }
	}
	w := &wiring{log: log}
	if cfg.syncWebhooks() {
		w.results = webhookstream.NewResults()
		pcfg.Middleware = append(pcfg.Middleware, w.results.Middleware())
	}
	p, err := peonify.New(pcfg)
	if err != nil {
		return nil, err
	}
	d.p = p

	tl := make(peonify.TaskList, len(cfg.tasks))
	for typ, spec := range cfg.tasks {
		h, closeFn, err := spec.handler(stdout)
		if err != nil {
			return nil, &configError{cfg.path, err}
		}
		d.cleanup = append(d.cleanup, closeFn)
		tl[typ] = h
	}
	if err := p.AddTaskList(tl); err != nil {
		return nil, err
	}

	r := newResources(log, true)
	d.cleanup = append(d.cleanup, r.close) // after Run has closed the streams
	d.cleanup = append(d.cleanup, func() {
		for _, closeFn := range w.closers {
			closeFn()
		}
	})
	opened := make(map[string]peonify.Stream, len(cfg.streams))
	d.cleanup = append(d.cleanup, func() {
		if !d.running { // Run closes the streams it ran
			for _, s := range opened {
				_ = s.Close(context.Background())
			}
		}
	})
	for _, spec := range cfg.streams {
		sc := spec.common()
		store, ok := spec.(storeSpec)
		if !ok {
			d.intakes = append(d.intakes, sc.Name)
			continue
		}
		s, err := store.open(ctx, r)
		if err != nil {
			return nil, err
		}
		opened[sc.Name] = s
		opts := []peonify.StreamOption{peonify.StreamName(sc.Name), peonify.Weight(sc.Weight)}
		if limits := cfg.limits[sc.Name]; len(limits) > 0 {
			opts = append(opts, peonify.Limits(limits...))
		}
		if err := p.AddStream(s, opts...); err != nil {
			if errors.Is(err, errors.ErrUnsupported) {
				return nil, fmt.Errorf("%s: the limits section gives stream %q limits, but this build's %s store cannot enforce them: %w", cfg.path, sc.Name, sc.Kind, err)
			}
			return nil, err
		}
	}
	for _, spec := range cfg.streams {
		in, ok := spec.(intakeSpec)
		if !ok {
			continue
		}
		store := *in.storeField()
		enq, ok := peonify.As[peonify.Enqueuer](opened[store])
		if !ok {
			return nil, &configError{cfg.path, yamlfile.Errorf(spec.common().path+".store", "stream %q does not take enqueued tasks", store)}
		}
		if w, ok := spec.(storeWarner); ok {
			if msg := w.storeWarning(cfg.stream(store).(storeSpec)); msg != "" {
				log.Warn(msg, "intake", spec.common().Name, "store", store)
			}
		}
		if fn, _ := parseKeyFrom(in.keyFromField()); fn != nil { // checked with the file
			enq = peonify.KeyFrom(enq, fn)
		}
		intake, err := in.intake(enq, w)
		if err != nil {
			return nil, err
		}
		if err := p.AddIntake(intake); err != nil {
			return nil, err
		}
	}
	d.ready = w.ready
	if d.scheds, err = schedulers(cfg, opened, log); err != nil {
		return nil, err
	}
	if metrics != nil {
		if err := metrics.Attach(p); err != nil {
			return nil, err
		}
		var stores []dashboard.Store
		for _, name := range cfg.storeNames() {
			// A store's limits are exported and shown only when the file
			// gives it some: AddStream has then set them.
			var lim peonify.Limiter
			if len(cfg.limits[name]) > 0 {
				lim, _ = peonify.As[peonify.Limiter](opened[name])
			}
			if lim != nil {
				if err := metrics.AttachLimiter(name, lim); err != nil {
					return nil, err
				}
			}
			if in, ok := inspectorOf(opened[name]); ok {
				stores = append(stores, dashboard.Store{Name: name, Inspector: in, Limiter: lim})
			}
		}
		api, err := cfg.apiHandler(opened, log)
		if err != nil {
			return nil, err
		}
		admin, err := startAdmin(cfg.http, p, stores, metrics, w.ready, d.stopping.Load, log, api)
		if err != nil {
			return nil, err
		}
		d.cleanup = append(d.cleanup, admin.stop) // after Run: the drain can be watched
	}
	return d, nil
}

// close undoes newDaemon, last first: the admin server, the streams if
// the processor did not run them, the intakes' listeners, the shared
// clients, the executors.
func (d *daemon) close() {
	for i := len(d.cleanup) - 1; i >= 0; i-- {
		d.cleanup[i]()
	}
	d.cleanup = nil
}

// run runs the daemon until ctx ends or a periodic scheduler fails, then
// drains the processor and closes what the daemon holds. Call it once.
func (d *daemon) run(ctx context.Context) (err error) {
	defer d.close()
	stopWatch := context.AfterFunc(ctx, func() { d.stopping.Store(true) })
	defer stopWatch()
	defer d.notifySystemd(ctx)() // sdnotify.go
	cfg, log, p := d.cfg, d.log, d.p
	log.Info("peonify: running", "config", cfg.path, "streams", strings.Join(cfg.storeNames(), ","),
		"intakes", strings.Join(d.intakes, ","), "task_types", strings.Join(yamlfile.SortedKeys(cfg.tasks), ","),
		"workers", p.Stats().Workers, "periodic", len(cfg.periodic), "limits", cfg.limitCount())

	// The schedulers stop first, so that none enqueues into a stream the
	// processor has closed.
	schedCtx, stopScheds := context.WithCancel(ctx)
	defer stopScheds()
	schedErr := make(chan error, 1)
	wg := runSchedulers(schedCtx, d.scheds, log, func(err error) {
		select {
		case schedErr <- err:
		default:
		}
		stopScheds() // and so the processor: the daemon stops
	})
	procCtx, stopProc := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProc()
	go func() {
		<-schedCtx.Done()
		wg.Wait()
		stopProc()
	}()
	d.running = true
	err = p.Run(procCtx)
	stopScheds() // in case Run returned on its own
	wg.Wait()
	select {
	case e := <-schedErr:
		err = errors.Join(err, e)
	default:
	}
	st := p.Stats()
	log.Info("peonify: exiting", "succeeded", st.Succeeded, "retried", st.Retried, "dead", st.Dead, "released", st.Released)
	return err
}

// runSchedulers runs the periodic schedulers until ctx ends. A scheduler
// that cannot run is logged and passed to fail, which should stop the
// daemon: its periodic tasks would otherwise silently never be enqueued.
// (A scheduler logs its enqueue errors itself, and retries them.)
func runSchedulers(ctx context.Context, scheds []*periodic.Scheduler, log *slog.Logger, fail func(error)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, s := range scheds {
		wg.Go(func() {
			if err := s.Run(ctx); err != nil {
				err = fmt.Errorf("the periodic tasks cannot run: %w", err)
				log.Error("peonify: "+err.Error()+"; stopping", "jobs", len(s.Jobs()))
				fail(err)
			}
		})
	}
	return &wg
}

// eventLogger logs task outcomes: retries at info level, the others at
// debug level (the processor itself logs dead tasks as warnings).
func eventLogger(log *slog.Logger) func(peonify.Event) {
	debug := log.Enabled(context.Background(), slog.LevelDebug)
	return func(e peonify.Event) {
		switch {
		case e.Kind == peonify.EventRetried:
			log.Info("peonify: task failed; will retry", "task_id", e.Task.ID, "type", e.Task.Type,
				"attempt", e.Task.Attempt, "retry_in", e.Delay, "err", e.Err)
		case debug && e.Kind != peonify.EventDead:
			args := []any{"task_id", e.Task.ID, "type", e.Task.Type, "attempt", e.Task.Attempt, "took", e.Duration}
			if e.Err != nil {
				args = append(args, "err", e.Err)
			}
			log.Debug("peonify: task "+e.Kind.String(), args...)
		}
	}
}

// schedulers builds one periodic scheduler per stream that periodic tasks
// go to.
func schedulers(cfg *config, streams map[string]peonify.Stream, log *slog.Logger) ([]*periodic.Scheduler, error) {
	byStream := make(map[string]*periodic.Scheduler)
	var out []*periodic.Scheduler
	for i, pe := range cfg.periodic {
		s := byStream[pe.Stream]
		if s == nil {
			enq, ok := peonify.As[peonify.Enqueuer](streams[pe.Stream])
			if !ok {
				return nil, &configError{cfg.path, yamlfile.Errorf(fmt.Sprintf("periodic[%d].stream", i), "stream %q does not take enqueued tasks", pe.Stream)}
			}
			var err error
			if s, err = periodic.New(enq, periodic.Config{Logger: log}); err != nil {
				return nil, err
			}
			byStream[pe.Stream] = s
			out = append(out, s)
		}
		if err := s.Add(pe.job()); err != nil {
			return nil, &configError{cfg.path, periodicError(i, err)}
		}
	}
	return out, nil
}

// job returns the periodic.Job of an entry.
func (pe *periodicEntry) job() periodic.Job {
	return periodic.Job{Name: pe.Name, Spec: pe.Spec, Task: peonify.Task{
		Type: pe.Type, Payload: pe.Payload, Headers: pe.Headers, Priority: pe.Priority, MaxAttempts: pe.MaxAttempts, Key: pe.Key}}
}

// periodicError names the field of periodic[i] that Scheduler.Add
// rejected.
func periodicError(i int, err error) error {
	path := fmt.Sprintf("periodic[%d]", i)
	var se *periodic.SpecError
	if errors.As(err, &se) {
		return yamlfile.Errorf(path+".spec", "%v", se.Err)
	}
	var ce *peonify.ConfigError
	if errors.As(err, &ce) && ce.Field == "Job.Name" {
		return yamlfile.Errorf(path+".name", "%s", ce.Reason)
	}
	return yamlfile.Errorf(path, "%v", err)
}

// discardEnqueuer lets the config check build a scheduler that is never
// run, to validate periodic entries.
type discardEnqueuer struct{}

func (discardEnqueuer) Enqueue(context.Context, ...*peonify.Task) error { return nil }
