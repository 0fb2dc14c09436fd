package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// The message-broker backends (-backend redis, nats, amqp) compare Peonify
// with another task processor on the same server (asynq on Redis) and with
// the raw ceiling: a consume-and-ack loop written directly on the broker's
// client, with no library and no handler.

// brokerBackends are the -backend values that this file runs.
var brokerBackends = []string{"redis", "nats", "amqp"}

func isBroker(backend string) bool { return slices.Contains(brokerBackends, backend) }

// System names of the broker backends, besides "peonify".
const (
	rawSystem = "raw" // the raw ceiling of every broker
)

// brokerSystems lists the systems each broker backend can run, in the
// order -systems defaults to.
var brokerSystems = map[string][]string{
	"redis": {"peonify", asynqTuned.Label, asynqDefault.Label, rawSystem},
	"nats":  {"peonify", rawSystem},
	"amqp":  {"peonify", rawSystem},
}

// brokerPeonifyDefaults is Peonify's configuration on each broker when
// -workers and -queue-size are not given, chosen by measuring drains with
// -sweep (see README.md).
var brokerPeonifyDefaults = map[string]peonifyConfig{
	"redis": {Workers: 50, QueueSize: 1000},
	"nats":  {Workers: 50, QueueSize: 2000},
	"amqp":  {Workers: 50, QueueSize: 2000},
}

// brokerOptions are the flags of the broker backends.
type brokerOptions struct {
	redisURL string
	natsURL  string
	amqpURL  string
	// prefetch is the AMQP prefetch count of both Peonify's stream and the
	// raw loop, and the fetch size of the raw NATS loop; 0 derives it from
	// Peonify's configuration (see fetchSize).
	prefetch int
}

// envOr returns the environment variable name, or def when it is unset.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// addBrokerFlags defines the flags of the broker backends on fs.
func addBrokerFlags(fs *flag.FlagSet, b *brokerOptions) {
	fs.StringVar(&b.redisURL, "redis-url", envOr("PEONIFY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
		"Redis URL for -backend redis, $PEONIFY_TEST_REDIS_URL when set; "+
			"every run uses keys of its own and deletes them afterwards")
	fs.StringVar(&b.natsURL, "nats-url", envOr("PEONIFY_TEST_NATS_URL", "nats://127.0.0.1:4222"),
		"NATS URL with JetStream for -backend nats, $PEONIFY_TEST_NATS_URL when set")
	fs.StringVar(&b.amqpURL, "amqp-url", envOr("PEONIFY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
		"RabbitMQ URL for -backend amqp, $PEONIFY_TEST_AMQP_URL when set")
	fs.IntVar(&b.prefetch, "prefetch", 0,
		"amqp: prefetch count of Peonify's stream and of the raw loop; nats: fetch size of the raw loop "+
			"(default: derived from -workers and -queue-size)")
}

// checkBrokerFlags checks the flags that depend on the backend, after
// parsing: the systems each backend can run, and Peonify's configuration
// on a broker when -workers and -queue-size were not given.
func checkBrokerFlags(o *options, fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if !isBroker(o.backend) {
		for name := range o.systems {
			if name != "peonify" && name != riverTuned.Label && name != riverDefault.Label {
				return fmt.Errorf("-systems: %s does not run on %s: use peonify, %s, %s",
					name, o.backend, riverTuned.Label, riverDefault.Label)
			}
		}
		if given["prefetch"] {
			return errors.New("-prefetch applies to -backend nats and amqp only")
		}
		return nil
	}
	allowed := brokerSystems[o.backend]
	if !given["systems"] {
		o.systems = map[string]bool{}
		for _, name := range allowed {
			o.systems[name] = true
		}
	}
	for name := range o.systems {
		if !slices.Contains(allowed, name) {
			return fmt.Errorf("-systems: %s does not run on %s: use %s", name, o.backend, strings.Join(allowed, ", "))
		}
	}
	def := brokerPeonifyDefaults[o.backend]
	if !given["workers"] {
		o.workers = def.Workers
	}
	if !given["queue-size"] {
		o.queueSize = def.QueueSize
	}
	switch {
	case o.splitPoll > 1:
		return errors.New("-split-poll is an experiment of the SQL backends only")
	case o.prefetch < 0 || o.prefetch > 65535:
		return errors.New("-prefetch must be between 0 (derived) and 65535")
	case o.prefetch > 0 && o.backend == "redis":
		return errors.New("-prefetch applies to -backend nats and amqp only")
	}
	return nil
}

// broker is one message broker with what the benchmark runs on it.
type broker interface {
	// describe says which server the runs use, in one line.
	describe() string
	// peonify returns the constructor of Peonify systems on the broker.
	peonify(cfg peonifyConfig) contender
	// peers returns the other task processors to compare with (drained
	// count times, interleaved with Peonify) and the ones to drain once.
	peers(systems map[string]bool) (tuned, once []contender)
	// raw drains n tasks with the raw ceiling loop, fetching as Peonify
	// with cfg does where the broker allows.
	raw(ctx context.Context, n int, cfg peonifyConfig) (result, error)
	// fetchNote says how Peonify and the raw loop fetch, for the report.
	fetchNote(cfg peonifyConfig) string
	close()
}

// dialBroker connects to the broker of o.backend.
func dialBroker(ctx context.Context, o options, log *slog.Logger) (broker, error) {
	switch o.backend {
	case "redis":
		return dialRedis(ctx, o.redisURL, log)
	case "nats":
		return dialNATS(ctx, o.natsURL, log, o.prefetch)
	case "amqp":
		return dialAMQP(ctx, o.amqpURL, log, o.prefetch)
	}
	return nil, fmt.Errorf("unknown broker %q", o.backend)
}

// runBroker runs the benchmark on a message broker and writes the report
// to w.
func runBroker(ctx context.Context, o options, w io.Writer) error {
	level := slog.LevelError
	if o.verbose {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	b, err := dialBroker(ctx, o, log)
	if err != nil {
		return err
	}
	defer b.close()
	e := &env{backend: o.backend, log: log}
	r := &runner{env: e, batch: o.batch, producers: o.producers, idleTasks: o.idleTasks,
		idleEvery: o.idleEvery, timeout: o.timeout, profileDir: o.profileDir}

	fmt.Fprintf(w, "peonify bench: backend=%s tasks=%d %s/%s GOMAXPROCS=%d %s\n",
		o.backend, o.tasks, runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Fprintln(w, b.describe())
	if la := loadAverage(); la != "" {
		fmt.Fprintf(w, "load average before: %s (other processes on this machine skew the figures)\n", la)
	}
	if o.sweep != nil {
		return brokerSweep(ctx, r, b, o.sweep, o.tasks, o.count, w)
	}
	pcfg := peonifyConfig{Workers: o.workers, QueueSize: o.queueSize}
	fmt.Fprintln(w, b.fetchNote(pcfg))

	var chosen []contender // drained count times, interleaved
	if o.systems["peonify"] {
		chosen = append(chosen, b.peonify(pcfg))
	}
	tuned, once := b.peers(o.systems)
	chosen = append(chosen, tuned...)
	// Each run adds the server CPU time its system measured.
	drain := func(c contender) func() (result, error) {
		wt := &watched{}
		c = wt.contender(c)
		return func() (result, error) { return wt.add(r.drain(ctx, c, o.tasks)) }
	}
	insert := func(c contender) func() (result, error) {
		wt := &watched{}
		c = wt.contender(c)
		return func() (result, error) { return wt.add(r.insertWhileWorking(ctx, c, o.tasks)) }
	}
	idle := func(c contender) func() (result, error) {
		wt := &watched{}
		c = wt.contender(c)
		return func() (result, error) { return wt.add(r.idle(ctx, c, false)) }
	}

	rep := report{w: w, verbose: o.verbose, byKey: map[string]result{}}
	rep.header()
	if o.modes["drain"] || o.modes["raw"] {
		var runs []func() (result, error)
		if o.modes["drain"] {
			for _, c := range chosen {
				runs = append(runs, drain(c))
			}
		}
		if o.systems[rawSystem] {
			runs = append(runs, func() (result, error) { return b.raw(ctx, o.tasks, pcfg) })
		}
		if err := rep.add(repeat(o.count, runs...)); err != nil {
			return err
		}
		if o.modes["drain"] {
			for _, c := range once {
				if err := rep.add(repeat(1, drain(c))); err != nil {
					return err
				}
			}
		}
	}
	if o.modes["insert"] {
		var runs []func() (result, error)
		for _, c := range chosen {
			runs = append(runs, insert(c))
		}
		if err := rep.add(repeat(o.count, runs...)); err != nil {
			return err
		}
	}
	if o.modes["idle"] {
		var runs []func() (result, error)
		for _, c := range chosen {
			runs = append(runs, idle(c))
		}
		if err := rep.add(repeat(1, runs...)); err != nil {
			return err
		}
	}
	if o.modes[limitsMode] {
		drain := func(c contender) func() (result, error) {
			wt := &watched{}
			c = wt.contender(c)
			return func() (result, error) { return wt.add(r.drainAs(ctx, limitsMode, c, o.tasks)) }
		}
		if err := runLimits(&rep, o.backend, o.keys, pcfg, b.peonify, drain, o.count); err != nil {
			return err
		}
	}
	if o.modes[workflowMode] {
		if err := runWorkflow(ctx, &rep, r, o.backend, pcfg, b.peonify, o.workflowOptions, o.count); err != nil {
			return err
		}
	}
	if o.modes[apiMode] {
		if err := runAPI(ctx, &rep, r, pcfg, b.peonify, o.apiOptions, o.count); err != nil {
			return err
		}
	}
	rep.configurations()
	if la := loadAverage(); la != "" {
		fmt.Fprintf(w, "load average after: %s\n", la)
	}
	brokerGoals(&rep, o.backend)
	return nil
}

// brokerGoals says whether Peonify meets the project's goals on a broker,
// and ends with the RESULT line when Peonify's and the peer's drains ran:
// asynq (Concurrency 100) on Redis, the raw ceiling on NATS and RabbitMQ.
func brokerGoals(r *report, backend string) {
	check := r.goalChecker()
	peon, okPeon := r.get("drain", "peonify")
	raw, okRaw := r.get("drain", rawLabel(backend))
	peerName, peerSystem, goal := rawSystem, rawLabel(backend), 0.7
	if backend == "redis" {
		peerName, peerSystem, goal = "asynq", asynqTuned.Label, 8
	}
	peer, okPeer := r.get("drain", peerSystem)
	if okPeon && okPeer {
		ratio := peon.jobsPerSec() / peer.jobsPerSec()
		check(fmt.Sprintf("drain ratio peonify/%s >= %g", peerName, goal), ratio >= goal, fmt.Sprintf("%.2f", ratio))
	}
	if backend == "redis" && okPeon && okRaw {
		fmt.Fprintf(r.w, "  %-40s %-7s %.0f%% of %s\n", "drain share of the raw ceiling", "info",
			100*peon.jobsPerSec()/raw.jobsPerSec(), raw.system)
	}
	if idle, ok := r.get("idle-pickup", "peonify"); ok {
		if backend == "redis" {
			check("idle-pickup p50 <= 1ms", idle.p50 <= time.Millisecond, fmtDur(idle.p50))
			check("idle-pickup p99 <= 5ms", idle.p99 <= 5*time.Millisecond, fmtDur(idle.p99))
		} else {
			fmt.Fprintf(r.w, "  %-40s %-7s p50 %s, p99 %s\n", "idle-pickup", "info", fmtDur(idle.p50), fmtDur(idle.p99))
		}
	}
	r.limitsGoals(check)
	r.workflowGoals(check)
	r.apiGoals(check)
	if okPeon && okPeer {
		fmt.Fprintln(r.w, resultLine(backend, peerName, peon.jobsPerSec(), peer.jobsPerSec()))
	}
	r.limitsResult(backend)
	r.workflowResult(backend)
	r.apiResult(backend)
}

// rawLabel is the report's name of a broker's raw ceiling.
func rawLabel(backend string) string { return "raw-" + backend }

// brokerSweep drains with Peonify on the broker in each configuration,
// the runs of all of them interleaved, and reports which was fastest.
func brokerSweep(ctx context.Context, r *runner, b broker, cfgs []peonifyConfig, n, count int, w io.Writer) error {
	printHeader(w)
	var runs []func() (result, error)
	for _, cfg := range cfgs {
		wt := &watched{}
		c := wt.contender(b.peonify(cfg))
		c.name = fmt.Sprintf("peonify %d/%d", cfg.Workers, cfg.QueueSize)
		runs = append(runs, func() (result, error) { return wt.add(r.drain(ctx, c, n)) })
	}
	rs, err := repeat(count, runs...)
	if err != nil {
		return err
	}
	for _, res := range rs {
		printResult(w, res)
		if res.detail != "" {
			fmt.Fprintf(w, "  %s\n", res.detail)
		}
	}
	printFastest(w, rs)
	return nil
}

// brokerStream is what the benchmark needs of a Peonify stream on a
// broker: the contract, the producer side and the wake-up.
type brokerStream interface {
	peonify.Stream
	peonify.Enqueuer
	peonify.Waker
}

// ackCounter reports every successful Ack to the recorder, so that a task
// counts as done only once the stream's Ack returned, and counts the
// processor's Poll and Ack calls. It intercepts nothing else: Unwrap
// leads the processor (peonify.As) to the stream's Start, Extend and
// MaxPoll.
type ackCounter struct {
	brokerStream
	rec   *recorder
	calls *streamCalls
}

func (s ackCounter) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	return s.calls.poll(ctx, s.brokerStream, limit)
}

func (s ackCounter) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	return s.calls.ack(ctx, s.brokerStream, s.rec, ds)
}

// Unwrap returns the counted stream.
func (s ackCounter) Unwrap() peonify.Stream { return s.brokerStream }

// counted wraps st in an ackCounter.
func counted(st brokerStream, rec *recorder, calls *streamCalls) peonify.Stream {
	return ackCounter{st, rec, calls}
}

// brokerPeonify is a Peonify processor on a broker stream.
type brokerPeonify struct {
	stream  brokerStream
	keys    int // peonifyConfig.Keys
	calls   streamCalls
	verify  func(ctx context.Context, n int) error // checks the broker after the run
	cleanup func()                                 // deletes the queue's keys, streams or queues
	watch   *serverWatch
	run     procRun
}

// newBrokerPeonify builds a processor with cfg and a no-op handler on st.
// It takes over cleanup: on an error it runs it.
func newBrokerPeonify(cfg peonifyConfig, e *env, rec *recorder, st brokerStream, meter cpuMeter,
	verify func(context.Context, int) error, cleanup func()) (*brokerPeonify, error) {
	s := &brokerPeonify{stream: st, keys: cfg.Keys, verify: verify, cleanup: cleanup, watch: newServerWatch(meter, rec)}
	p, err := newBenchProcessor(cfg, e, rec)
	if err != nil {
		s.Close()
		return nil, err
	}
	if err := p.AddStream(counted(st, rec, &s.calls), peonify.Limits(cfg.Limits...)); err != nil {
		s.Close()
		return nil, err
	}
	s.run.proc = p
	return s, nil
}

func (s *brokerPeonify) Insert(ctx context.Context, first, count int) error {
	s.watch.inserted()
	return enqueue(ctx, s.stream, first, count, s.keys)
}

// enqueueAndClose enqueues n tasks on producer, 1000 at a time, for a raw
// drain, then closes it.
func enqueueAndClose(ctx context.Context, producer interface {
	peonify.Enqueuer
	Close(context.Context) error
}, n int) error {
	for first := 0; first < n; first += 1000 {
		if err := enqueue(ctx, producer, first, min(1000, n-first), 0); err != nil {
			_ = producer.Close(ctx)
			return fmt.Errorf("raw: enqueue: %w", err)
		}
	}
	return producer.Close(ctx)
}

func (s *brokerPeonify) Start(ctx context.Context) error {
	s.watch.start()
	s.run.start(ctx)
	return nil
}

func (s *brokerPeonify) Stop(ctx context.Context) error {
	if s.run.cancel == nil {
		return nil
	}
	defer s.watch.stop()
	return s.run.stop(ctx)
}

func (s *brokerPeonify) Verify(ctx context.Context, n int) error { return s.verify(ctx, n) }

// Detail reports how the processor used its stream.
func (s *brokerPeonify) Detail() string { return s.calls.String() }

// peonifyStream returns the stream the processor runs on, for what the
// benchmark asks of it besides (peonify.As).
func (s *brokerPeonify) peonifyStream() peonify.Stream { return s.stream }

// streamCalls returns the counts of the processor's calls of its stream.
func (s *brokerPeonify) streamCalls() *streamCalls { return &s.calls }

func (s *brokerPeonify) serverCPU() (time.Duration, bool) { return s.watch.result() }

func (s *brokerPeonify) Close() {
	s.run.close()
	s.watch.stop()
	if !s.run.ran && s.stream != nil {
		_ = s.stream.Close(context.Background())
	}
	if s.cleanup != nil {
		s.cleanup()
	}
}

// cpuMeter reads the CPU time the broker's server has used so far, and
// false when it cannot tell (a server on another machine).
type cpuMeter func(ctx context.Context) (time.Duration, bool)

// serverWatch measures a broker server's CPU time over a run's measured
// part: from Start when tasks were inserted before it (a drain), or else
// from the first Insert after Start (insert-while-working, idle pickup),
// until the recorder has every completion. The figure covers the whole
// server, so other clients of a shared server add to it.
type serverWatch struct {
	meter cpuMeter
	rec   *recorder

	mu         sync.Mutex
	before     bool // an Insert came before Start
	started    bool
	begun      bool
	waiting    bool // the background wait runs
	begin, end time.Duration
	ok         bool // begin and end were read
	quit, done chan struct{}
	stopped    atomic.Bool
}

func newServerWatch(meter cpuMeter, rec *recorder) *serverWatch {
	return &serverWatch{meter: meter, rec: rec, quit: make(chan struct{}), done: make(chan struct{})}
}

// inserted is called before every Insert.
func (w *serverWatch) inserted() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started {
		w.before = true
		return
	}
	w.beginLocked()
}

// start is called at the start of Start.
func (w *serverWatch) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.started = true
	if w.before {
		w.beginLocked()
	}
}

// beginLocked reads the server's CPU time once and then waits, in the
// background, for the last completion to read it again.
func (w *serverWatch) beginLocked() {
	if w.begun || w.meter == nil {
		return
	}
	w.begun = true
	begin, ok := w.meter(context.Background())
	if !ok {
		return
	}
	w.begin, w.waiting = begin, true
	go func() {
		defer close(w.done)
		select {
		case <-w.rec.done:
		case <-w.quit:
		}
		select {
		case <-w.rec.done:
			end, ok := w.meter(context.Background())
			w.mu.Lock()
			w.end, w.ok = end, ok
			w.mu.Unlock()
		default:
		}
	}()
}

// stop ends the background wait; it is idempotent.
func (w *serverWatch) stop() {
	if w.stopped.Swap(true) {
		return
	}
	close(w.quit)
	w.mu.Lock()
	waiting := w.waiting
	w.mu.Unlock()
	if waiting {
		select {
		case <-w.done:
		case <-time.After(10 * time.Second): // the meter hangs: give up on the figure
		}
	}
}

// result returns the server's CPU time over the run, and false if it
// could not be read.
func (w *serverWatch) result() (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.end - w.begin, w.ok
}

// watched remembers the last system that a contender made, so that the
// broker server's CPU time that the system measured can be added to the
// run's result.
type watched struct{ last system }

// contender returns c with its constructor wrapped to remember the
// system it makes.
func (wt *watched) contender(c contender) contender {
	mk := c.make
	c.make = func(ctx context.Context, e *env, rec *recorder) (system, error) {
		sys, err := mk(ctx, e, rec)
		wt.last = sys
		return sys, err
	}
	return c
}

// add fills res with the server CPU time of the last system made.
func (wt *watched) add(res result, err error) (result, error) {
	if err != nil || wt.last == nil {
		return res, err
	}
	if s, ok := wt.last.(interface{ serverCPU() (time.Duration, bool) }); ok {
		res.dbCPU, res.hasDBCPU = s.serverCPU()
	}
	wt.last = nil
	return res, nil
}

// procCPUByName returns a meter of the local processes whose command name
// is comm (as in /proc/<pid>/comm), or nil if there are none, as when the
// server runs on another machine.
func procCPUByName(comm string) cpuMeter {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err == nil && strings.TrimSpace(string(b)) == comm {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return nil
	}
	return func(context.Context) (time.Duration, bool) {
		var sum time.Duration
		for _, pid := range pids {
			d, ok := streamtest.ProcessCPU(pid)
			if !ok {
				return 0, false
			}
			sum += d
		}
		return sum, true
	}
}

// seenSet checks that a raw loop saw each of n sequence numbers exactly
// once.
type seenSet struct {
	seen         []bool
	count, dups  int
	outside, bad int
}

func newSeenSet(n int) *seenSet { return &seenSet{seen: make([]bool, n)} }

// add records the payload of one message. It decodes the payload with
// encoding/json, as every handler in the benchmark does (Peonify's
// peonify.JSON, asynq's handler, River's args), so that the raw ceiling
// does the same work per task as the systems, minus the library.
func (s *seenSet) add(body []byte) {
	var a benchArgs
	seq, ok := -1, json.Unmarshal(body, &a) == nil
	if ok {
		seq = a.Seq
	}
	switch {
	case !ok:
		s.bad++
	case seq < 0 || seq >= len(s.seen):
		s.outside++
	case s.seen[seq]:
		s.dups++
	default:
		s.seen[seq] = true
		s.count++
	}
}

func (s *seenSet) check() error {
	if s.count != len(s.seen) || s.dups != 0 || s.outside != 0 || s.bad != 0 {
		return fmt.Errorf("the raw loop got %d of %d distinct tasks, %d twice, %d unknown, %d unreadable",
			s.count, len(s.seen), s.dups, s.outside, s.bad)
	}
	return nil
}
