package main

import (
	"context"
	"fmt"
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
}

func (c peonifyConfig) String() string {
	return fmt.Sprintf("Workers %d, QueueSize %d", c.Workers, c.QueueSize)
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
// task counts as done only once its completion is stored. It keeps the
// stream's Wake and Extend, which the processor finds by type assertion.
type countingStream struct {
	durableStream
	rec *recorder
}

func (s countingStream) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	err := s.durableStream.Ack(ctx, ds...)
	if err == nil {
		s.rec.completedN(len(ds))
	}
	return err
}

// peonifySystem is a Peonify processor on a sqlitestream or pgstream.
type peonifySystem struct {
	cfg     peonifyConfig
	rec     *recorder
	stream  durableStream
	reopen  func(ctx context.Context) (durableStream, error) // a second stream on the same queue, for Verify
	cleanup func()

	proc   *peonify.Processor
	ran    bool // Run owns the stream and closes it
	cancel context.CancelFunc
	errc   chan error
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
			s.stream, s.reopen, s.cleanup = st, open, sc.drop
		default:
			return nil, fmt.Errorf("unknown backend %q", e.backend)
		}

		p, err := peonify.New(peonify.Config{
			Workers:   cfg.Workers,
			QueueSize: cfg.QueueSize,
			Logger:    e.log,
		})
		if err != nil {
			s.Close()
			return nil, err
		}
		h := peonify.JSON(func(_ context.Context, a benchArgs) error {
			rec.started(a.Seq)
			return nil
		})
		if err := p.AddTaskList(peonify.TaskList{"bench": h}); err != nil {
			s.Close()
			return nil, err
		}
		if err := p.AddStream(countingStream{s.stream, rec}); err != nil {
			s.Close()
			return nil, err
		}
		s.proc = p
		return s, nil
	}
}

func (s *peonifySystem) Insert(ctx context.Context, first, count int) error {
	tasks := make([]*peonify.Task, count)
	for i := range tasks {
		tasks[i] = &peonify.Task{Type: "bench", Payload: payload(first + i)}
	}
	return s.stream.Enqueue(ctx, tasks...)
}

func (s *peonifySystem) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.ran = cancel, true
	s.errc = make(chan error, 1)
	go func() { s.errc <- s.proc.Run(runCtx) }()
	return nil
}

func (s *peonifySystem) Stop(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.errc:
		return err // Run closed the stream
	case <-ctx.Done():
		return fmt.Errorf("peonify did not stop: %w", ctx.Err())
	}
}

func (s *peonifySystem) Verify(ctx context.Context, n int) error {
	st, err := s.reopen(ctx)
	if err != nil {
		return err
	}
	defer st.Close(context.WithoutCancel(ctx))
	counts, err := st.Counts(ctx)
	if err != nil {
		return err
	}
	var left []string
	for _, state := range peonify.States {
		if c := counts[state]; c != 0 {
			left = append(left, fmt.Sprintf("%d %s", c, state))
		}
	}
	if left != nil {
		return fmt.Errorf("tasks left in the stream after all %d were acked: %v", n, left)
	}
	return nil
}

func (s *peonifySystem) Close() {
	if s.cancel != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_ = s.Stop(ctx)
		cancel()
	}
	if !s.ran && s.stream != nil {
		_ = s.stream.Close(context.Background())
	}
	if s.cleanup != nil {
		s.cleanup()
	}
}
