package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
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
with an http section, serves /metrics, /healthz and /readyz.

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
	args, err := c.parse(cmd, fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(args); err != nil {
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
	for _, typ := range sortedKeys(cfg.tasks) {
		tasks = append(tasks, typ+" ("+cfg.tasks[typ].common().Executor+")")
	}
	out := fmt.Sprintf("streams %s; task types %s", strings.Join(streams, ", "), strings.Join(tasks, ", "))
	if n := len(cfg.periodic); n > 0 {
		out += fmt.Sprintf("; %d periodic %s", n, plural(n, "task", "tasks"))
	}
	if cfg.http.Listen != "" {
		out += "; http on " + cfg.http.Listen
	}
	return out
}

// forgetsDone reports whether the store named name forgets the ID of a
// task as soon as the task is done, so that the same ID enqueued again is
// stored again: a SQLite or Postgres store with keep_done 0, or RabbitMQ,
// which has no duplicate detection. (Redis and NATS remember IDs for their
// dedup_window and duplicate_window.)
func (cfg *config) forgetsDone(name string) bool {
	switch s := cfg.stream(name).(type) {
	case *sqliteSpec:
		return s.KeepDone == nil || *s.KeepDone == 0
	case *postgresSpec:
		return s.KeepDone == 0
	case *amqpSpec:
		return true
	}
	return false
}

// syncWebhooks reports whether a webhook route of cfg answers with its
// task's result, which needs the processor's middleware.
func (cfg *config) syncWebhooks() bool {
	for _, s := range cfg.streams {
		if w, ok := s.(*webhookSpec); ok && w.sync() {
			return true
		}
	}
	return false
}

// serve runs the processor of cfg until ctx ends, then drains it.
func (c *cli) serve(ctx context.Context, cfg *config, log *slog.Logger) error {
	pcfg := cfg.processor
	pcfg.Logger = log
	pcfg.OnEvent = eventLogger(log)
	var metrics *peonifyprom.Metrics
	if cfg.http.Listen != "" {
		var err error
		if metrics, err = peonifyprom.New(peonifyprom.Config{}); err != nil {
			return err
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
		return err
	}

	tl := make(peonify.TaskList, len(cfg.tasks))
	for typ, spec := range cfg.tasks {
		h, closeFn, err := spec.handler(c.stdout)
		if err != nil {
			return &configError{cfg.path, err}
		}
		defer closeFn()
		tl[typ] = h
	}
	if err := p.AddTaskList(tl); err != nil {
		return err
	}

	r := newResources(log, true)
	defer r.close() // after Run has closed the streams
	defer func() {
		for _, closeFn := range w.closers {
			closeFn()
		}
	}()
	opened := make(map[string]peonify.Stream, len(cfg.streams))
	running := false
	defer func() {
		if !running { // Run closes the streams it ran
			for _, s := range opened {
				_ = s.Close(context.Background())
			}
		}
	}()
	var intakes []string
	for _, spec := range cfg.streams {
		sc := spec.common()
		store, ok := spec.(storeSpec)
		if !ok {
			intakes = append(intakes, sc.Name)
			continue
		}
		s, err := store.open(ctx, r)
		if err != nil {
			return err
		}
		opened[sc.Name] = s
		if err := p.AddStream(s, peonify.StreamName(sc.Name), peonify.Weight(sc.Weight)); err != nil {
			return err
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
			return &configError{cfg.path, errorf(spec.common().path+".store", "stream %q does not take enqueued tasks", store)}
		}
		if _, hook := spec.(*webhookSpec); hook && cfg.forgetsDone(store) {
			log.Warn("peonify: the store of a webhook intake forgets finished tasks at once, so a redelivery of a webhook whose task already ran runs it again; set keep_done on the store to keep them",
				"intake", spec.common().Name, "store", store)
		}
		intake, err := in.intake(enq, w)
		if err != nil {
			return err
		}
		if err := p.AddIntake(intake); err != nil {
			return err
		}
	}
	scheds, err := schedulers(cfg, opened, log)
	if err != nil {
		return err
	}
	if metrics != nil {
		if err := metrics.Attach(p); err != nil {
			return err
		}
		var stores []dashboard.Store
		for _, name := range cfg.storeNames() {
			if in, ok := inspectorOf(opened[name]); ok {
				stores = append(stores, dashboard.Store{Name: name, Inspector: in})
			}
		}
		admin, err := startAdmin(cfg.http, p, stores, metrics, w.ready, func() bool { return ctx.Err() != nil }, log)
		if err != nil {
			return err
		}
		defer admin.stop() // after Run: the drain can be watched
	}

	log.Info("peonify: running", "config", cfg.path, "streams", strings.Join(cfg.storeNames(), ","),
		"intakes", strings.Join(intakes, ","), "task_types", strings.Join(sortedKeys(cfg.tasks), ","),
		"workers", p.Stats().Workers, "periodic", len(cfg.periodic))

	// The schedulers stop first, so that none enqueues into a stream the
	// processor has closed.
	schedCtx, stopScheds := context.WithCancel(ctx)
	defer stopScheds()
	schedErr := make(chan error, 1)
	wg := runSchedulers(schedCtx, scheds, log, func(err error) {
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
	running = true
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
				return nil, &configError{cfg.path, errorf(fmt.Sprintf("periodic[%d].stream", i), "stream %q does not take enqueued tasks", pe.Stream)}
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
		Type: pe.Type, Payload: pe.Payload, Headers: pe.Headers, Priority: pe.Priority, MaxAttempts: pe.MaxAttempts}}
}

// periodicError names the field of periodic[i] that Scheduler.Add
// rejected.
func periodicError(i int, err error) error {
	path := fmt.Sprintf("periodic[%d]", i)
	var se *periodic.SpecError
	if errors.As(err, &se) {
		return errorf(path+".spec", "%v", se.Err)
	}
	var ce *peonify.ConfigError
	if errors.As(err, &ce) && ce.Field == "Job.Name" {
		return errorf(path+".name", "%s", ce.Reason)
	}
	return errorf(path, "%v", err)
}

// discardEnqueuer lets the config check build a scheduler that is never
// run, to validate periodic entries.
type discardEnqueuer struct{}

func (discardEnqueuer) Enqueue(context.Context, ...*peonify.Task) error { return nil }
