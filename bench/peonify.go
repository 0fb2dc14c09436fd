package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/pgstream"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// peonifyConfig is the processor configuration the benchmark runs Peonify
// with; see -workers and -queue-size.
type peonifyConfig struct {
	Workers   int
	QueueSize int
	SplitPoll int // experiment: split each Poll into this many concurrent claims when above 1

	// Keys, when above 0, gives the tasks keys: task i gets key
	// "k<i mod Keys>", so each key has every Keys-th task (-modes limits).
	Keys int
	// Limits are given to the stream with peonify.Limits.
	Limits []peonify.Limit
	// Handlers, when set, returns handlers of more task types than
	// "bench", reporting to rec (-modes workflow).
	Handlers func(rec *recorder) peonify.TaskList
}

func (c peonifyConfig) String() string {
	s := fmt.Sprintf("Workers %d, QueueSize %d", c.Workers, c.QueueSize)
	if c.SplitPoll > 1 {
		s += fmt.Sprintf(", experiment: each Poll split into %d concurrent claims", c.SplitPoll)
	}
	if c.Keys > 0 {
		s += fmt.Sprintf(", tasks over %d keys", c.Keys)
	}
	for _, l := range c.Limits {
		s += ", limit " + describeLimit(l)
	}
	return s
}

// describeLimit says what a limit of the benchmark is, in a few words.
func describeLimit(l peonify.Limit) string {
	var parts []string
	if l.PerKey {
		parts = append(parts, "PerKey")
	}
	if l.Concurrency > 0 {
		parts = append(parts, fmt.Sprintf("Concurrency %d", l.Concurrency))
	}
	if l.Rate > 0 {
		parts = append(parts, fmt.Sprintf("Rate %d", l.Rate))
	}
	if l.Ordered {
		parts = append(parts, "Ordered")
	}
	if l.Fair {
		parts = append(parts, "Fair")
	}
	return strings.Join(parts, " ")
}

// durableStream is what the benchmark needs of a Peonify stream: the
// contract plus the producer side, the wake-up and lease extension.
type durableStream interface {
	peonify.Stream
	peonify.Enqueuer
	peonify.Waker
	peonify.Extender
	peonify.Inspector
}

// countingStream reports every successful Ack to the recorder, so that a
// task counts as done only once its completion is stored, and counts the
// processor's calls of Poll and Ack with the time they took. The processor
// finds the stream's other capabilities (Start among them) through Unwrap.
type countingStream struct {
	durableStream
	rec   *recorder
	calls *streamCalls
}

// Unwrap returns the counted stream.
func (c countingStream) Unwrap() peonify.Stream { return c.durableStream }

// streamCalls counts a processor's calls of its stream.
type streamCalls struct {
	polls, polled, pollNanos atomic.Int64
	acks, acked, ackNanos    atomic.Int64

	// onAck, when set before the processor starts, is called after
	// every Ack that returned nil, with the acked deliveries and when
	// the call began and returned (recorder time): -modes workflow
	// times its chains with it.
	onAck func(ds []peonify.Delivery, began, returned int64)
}

func (c *streamCalls) String() string {
	per := func(n, d int64) float64 {
		if d == 0 {
			return 0
		}
		return float64(n) / float64(d)
	}
	return fmt.Sprintf("%d polls of %.0f tasks, %.2fms each; %d acks of %.0f tasks, %.2fms each",
		c.polls.Load(), per(c.polled.Load(), c.polls.Load()), per(c.pollNanos.Load(), c.polls.Load())/1e6,
		c.acks.Load(), per(c.acked.Load(), c.acks.Load()), per(c.ackNanos.Load(), c.acks.Load())/1e6)
}

// poll calls s.Poll and counts it.
func (c *streamCalls) poll(ctx context.Context, s peonify.Stream, limit int) ([]peonify.Delivery, error) {
	t0 := time.Now()
	ds, err := s.Poll(ctx, limit)
	c.pollNanos.Add(int64(time.Since(t0)))
	c.polls.Add(1)
	c.polled.Add(int64(len(ds)))
	return ds, err
}

// ack calls s.Ack, counts it, and reports the acked tasks to rec as
// completed.
func (c *streamCalls) ack(ctx context.Context, s peonify.Stream, rec *recorder, ds []peonify.Delivery) error {
	began := rec.now()
	t0 := time.Now()
	err := s.Ack(ctx, ds...)
	c.ackNanos.Add(int64(time.Since(t0)))
	c.acks.Add(1)
	c.acked.Add(int64(len(ds)))
	if err == nil {
		if c.onAck != nil {
			c.onAck(ds, began, rec.now())
		}
		rec.completedN(len(ds))
	}
	return err
}

func (s countingStream) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	return s.calls.poll(ctx, s.durableStream, limit)
}

func (s countingStream) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	return s.calls.ack(ctx, s.durableStream, s.rec, ds)
}

// peonifySystem is a Peonify processor on a sqlitestream or pgstream.
type peonifySystem struct {
	cfg     peonifyConfig
	rec     *recorder
	stream  durableStream
	calls   streamCalls
	reopen  func(ctx context.Context) (durableStream, error) // a second stream on the same queue, for Verify
	cleanup func()
	sc      *freshSchema  // on postgres
	remote  durableStream // producer-only stream on postgres, made by the first RemoteInsert

	run procRun
}

// newPeonify returns the constructor of Peonify systems with cfg.
func newPeonify(cfg peonifyConfig) newSystemFunc {
	return func(ctx context.Context, e *env, rec *recorder) (system, error) {
		s := &peonifySystem{cfg: cfg, rec: rec}
		switch e.backend {
		case "sqlite":
			path := e.sqliteFile("peonify")
			open := func(context.Context) (durableStream, error) {
				// SynchronousFull, the default, syncs every commit.
				return sqlitestream.Open(path, sqlitestream.Config{Logger: e.log})
			}
			st, err := open(ctx)
			if err != nil {
				return nil, err
			}
			s.stream, s.reopen, s.cleanup = st, open, func() { removeSQLite(path) }
		case "postgres":
			sc, err := e.newSchema(ctx)
			if err != nil {
				return nil, err
			}
			if err := pgstream.MigrateSchema(ctx, sc.pool, sc.name); err != nil {
				sc.drop()
				return nil, err
			}
			pcfg := pgstream.Config{Queue: randName("bench_"), Schema: sc.name, Logger: e.log}
			open := func(context.Context) (durableStream, error) { return pgstream.New(sc.pool, pcfg) }
			st, err := open(ctx)
			if err != nil {
				sc.drop()
				return nil, err
			}
			s.stream, s.reopen, s.cleanup, s.sc = st, open, sc.drop, sc
		default:
			return nil, fmt.Errorf("unknown backend %q", e.backend)
		}

		p, err := newBenchProcessor(cfg, e, rec)
		if err != nil {
			s.Close()
			return nil, err
		}
		var st durableStream = countingStream{s.stream, rec, &s.calls}
		if cfg.SplitPoll > 1 {
			st = splitStream{st, cfg.SplitPoll}
		}
		if err := p.AddStream(st, peonify.Limits(cfg.Limits...)); err != nil {
			s.Close()
			return nil, err
		}
		s.run.proc = p
		return s, nil
	}
}

func (s *peonifySystem) schema() *freshSchema { return s.sc }

// peonifyStream returns the stream the processor runs on, for what the
// benchmark asks of it besides (peonify.As).
func (s *peonifySystem) peonifyStream() peonify.Stream { return s.stream }

// streamCalls returns the counts of the processor's calls of its stream.
func (s *peonifySystem) streamCalls() *streamCalls { return &s.calls }

// RemoteInsert enqueues through a second, producer-only stream on the same
// queue, so the processor hears of the tasks through LISTEN/NOTIFY as it
// would from another process.
func (s *peonifySystem) RemoteInsert(ctx context.Context, first, count int) error {
	if s.sc == nil {
		return errors.New("peonify: a remote producer needs postgres")
	}
	if s.remote == nil {
		st, err := s.reopen(ctx)
		if err != nil {
			return err
		}
		s.remote = st
	}
	return enqueue(ctx, s.remote, first, count, s.cfg.Keys)
}

// enqueue stores tasks first..first+count-1 through st, over keys keys
// when keys is above 0.
func enqueue(ctx context.Context, st peonify.Enqueuer, first, count, keys int) error {
	tasks := make([]*peonify.Task, count)
	for i := range tasks {
		tasks[i] = &peonify.Task{Type: "bench", Payload: payload(first + i), Key: taskKey(first+i, keys)}
	}
	return st.Enqueue(ctx, tasks...)
}

// taskKey returns the key of task seq among keys keys: "k" and seq modulo
// keys, or "" when keys is 0.
func taskKey(seq, keys int) string {
	if keys <= 0 {
		return ""
	}
	return "k" + strconv.Itoa(seq%keys)
}

// Detail reports how the processor used its stream.
func (s *peonifySystem) Detail() string { return s.calls.String() }

func (s *peonifySystem) Insert(ctx context.Context, first, count int) error {
	return enqueue(ctx, s.stream, first, count, s.cfg.Keys)
}

func (s *peonifySystem) Start(ctx context.Context) error {
	s.run.start(ctx)
	return nil
}

func (s *peonifySystem) Stop(ctx context.Context) error { return s.run.stop(ctx) }

func (s *peonifySystem) Verify(ctx context.Context, n int) error {
	st, err := s.reopen(ctx)
	if err != nil {
		return err
	}
	defer st.Close(context.WithoutCancel(ctx))
	return emptyCounts(ctx, st, n)
}

func (s *peonifySystem) Close() {
	s.run.close()
	if s.remote != nil {
		_ = s.remote.Close(context.Background())
	}
	if !s.run.ran && s.stream != nil {
		_ = s.stream.Close(context.Background())
	}
	if s.cleanup != nil {
		s.cleanup()
	}
}

// splitStream is an experiment (-split-poll): it turns each large Poll into
// k concurrent smaller ones, to show what claiming on several connections
// at once would gain. It is not how Peonify runs by default.
type splitStream struct {
	durableStream
	k int
}

func (s splitStream) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	const minChunk = 200
	k := min(s.k, limit/minChunk)
	if k < 2 {
		return s.durableStream.Poll(ctx, limit)
	}
	parts := make([][]peonify.Delivery, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		share := limit / k
		if i < limit%k {
			share++
		}
		wg.Go(func() { parts[i], errs[i] = s.durableStream.Poll(ctx, share) })
	}
	wg.Wait()
	var out []peonify.Delivery
	for _, p := range parts {
		out = append(out, p...)
	}
	if len(out) == 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil // keep what was claimed; an error shows again next time
}

// procRun runs a Peonify processor for a benchmark system, from Start to
// Stop.
type procRun struct {
	proc   *peonify.Processor
	ran    bool // Run owns the stream and closes it
	cancel context.CancelFunc
	errc   chan error
}

// start runs the processor until stop, whatever happens to ctx.
func (r *procRun) start(ctx context.Context) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel, r.ran = cancel, true
	r.errc = make(chan error, 1)
	go func() { r.errc <- r.proc.Run(runCtx) }()
}

// stop ends the run and returns Run's error; Run closed the stream.
func (r *procRun) stop(ctx context.Context) error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.errc:
		return err
	case <-ctx.Done():
		return fmt.Errorf("peonify did not stop: %w", ctx.Err())
	}
}

// close stops a run still going, within a minute.
func (r *procRun) close() {
	if r.cancel != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_ = r.stop(ctx)
		cancel()
	}
}

// newBenchProcessor builds a processor with cfg whose "bench" handler
// records each task's start.
func newBenchProcessor(cfg peonifyConfig, e *env, rec *recorder) (*peonify.Processor, error) {
	p, err := peonify.New(peonify.Config{Workers: cfg.Workers, QueueSize: cfg.QueueSize, Logger: e.log})
	if err != nil {
		return nil, err
	}
	h := peonify.JSON(func(_ context.Context, a benchArgs) error {
		rec.started(a.Seq)
		return nil
	})
	tasks := peonify.TaskList{"bench": h}
	if cfg.Handlers != nil {
		for typ, h := range cfg.Handlers(rec) {
			tasks[typ] = h
		}
	}
	if err := p.AddTaskList(tasks); err != nil {
		return nil, err
	}
	return p, nil
}
