package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// asynqConfig is how the benchmark configures asynq
// (github.com/hibiken/asynq).
type asynqConfig struct {
	Label       string
	Concurrency int // 0: asynq's default, runtime.NumCPU()
}

// asynqTuned is asynq with 100 workers, for a no-op handler more than
// enough to keep its one-task-per-call dequeue busy.
var asynqTuned = asynqConfig{Label: "asynq", Concurrency: 100}

// asynqDefault is asynq as its documentation sets it up: Concurrency
// left at its default, the number of CPUs.
var asynqDefault = asynqConfig{Label: "asynq-default"}

func (c asynqConfig) String() string {
	s := fmt.Sprintf("Concurrency %d", c.Concurrency)
	if c.Concurrency == 0 {
		s = fmt.Sprintf("Concurrency default (NumCPU = %d)", runtime.NumCPU())
	}
	return s + ", one queue, default TaskCheckInterval (1s) and retries; Client.Enqueue one task per call"
}

// asynqSystem is an asynq server and client on a queue of its own.
type asynqSystem struct {
	b        *redisBroker
	rec      *recorder
	queue    string
	client   *redis.Client // of the server and the producer, with hook
	hook     *asynqHook
	producer *asynq.Client
	srv      *asynq.Server
	watch    *serverWatch
	started  bool
}

// asynq returns the constructor of asynq systems with cfg.
func (b *redisBroker) asynq(cfg asynqConfig) contender {
	return contender{name: cfg.Label, config: cfg.String(), make: func(ctx context.Context, e *env, rec *recorder) (system, error) {
		queue := randName("bench_")
		client := b.client()
		hook := &asynqHook{
			pending:   "asynq:{" + queue + "}:pending",
			active:    "asynq:{" + queue + "}:active",
			processed: "asynq:{" + queue + "}:processed",
			rec:       rec,
		}
		client.AddHook(hook)
		level := asynq.ErrorLevel
		if e.log.Enabled(ctx, slog.LevelWarn) {
			level = asynq.WarnLevel
		}
		srv := asynq.NewServerFromRedisClient(client, asynq.Config{
			Concurrency: cfg.Concurrency,
			Queues:      map[string]int{queue: 1},
			Logger:      asynqLogger{e.log.With("system", cfg.Label)},
			LogLevel:    level,
		})
		return &asynqSystem{b: b, rec: rec, queue: queue, client: client, hook: hook,
			producer: asynq.NewClientFromRedisClient(client), srv: srv, watch: newServerWatch(b.serverCPU, rec)}, nil
	}}
}

// Insert enqueues the tasks one by one: asynq's client has no batch
// insert.
func (s *asynqSystem) Insert(ctx context.Context, first, count int) error {
	s.watch.inserted()
	for i := first; i < first+count; i++ {
		if _, err := s.producer.EnqueueContext(ctx, asynq.NewTask("bench", payload(i)), asynq.Queue(s.queue)); err != nil {
			return err
		}
	}
	return nil
}

func (s *asynqSystem) Start(ctx context.Context) error {
	s.watch.start()
	mux := asynq.NewServeMux()
	mux.HandleFunc("bench", func(_ context.Context, t *asynq.Task) error {
		var a benchArgs
		if err := json.Unmarshal(t.Payload(), &a); err != nil {
			return err
		}
		s.rec.started(a.Seq)
		return nil
	})
	if err := s.srv.Start(mux); err != nil {
		return err
	}
	s.started = true
	return nil
}

func (s *asynqSystem) Stop(context.Context) error {
	if !s.started {
		return nil
	}
	s.started = false
	s.srv.Shutdown() // waits for the workers, whose idle sleep is up to 1.5 x TaskCheckInterval
	s.watch.stop()
	return nil
}

// Verify checks with asynq's Inspector that the queue holds no task and
// that asynq counted n tasks processed.
func (s *asynqSystem) Verify(ctx context.Context, n int) error {
	info, err := asynq.NewInspectorFromRedisClient(s.b.admin).GetQueueInfo(s.queue)
	if err != nil {
		return err
	}
	left := info.Pending + info.Active + info.Scheduled + info.Retry + info.Archived + info.Completed + info.Aggregating
	if left != 0 || info.ProcessedTotal != n || info.FailedTotal != 0 {
		return fmt.Errorf("asynq queue holds %d tasks (pending %d, active %d, scheduled %d, retry %d, archived %d) "+
			"and counts %d processed of %d, %d failed", left, info.Pending, info.Active, info.Scheduled, info.Retry,
			info.Archived, info.ProcessedTotal, n, info.FailedTotal)
	}
	return nil
}

// Detail reports how often asynq called its dequeue script.
func (s *asynqSystem) Detail() string {
	return fmt.Sprintf("%d dequeue script calls, %d completion script calls",
		s.hook.dequeues.Load(), s.hook.dones.Load())
}

func (s *asynqSystem) serverCPU() (time.Duration, bool) { return s.watch.result() }

// Close stops the server and deletes the queue's keys: asynq:{queue}:*
// and the queue's name in the set of queues. The server removes its own
// keys (asynq:servers, asynq:workers) when it shuts down.
func (s *asynqSystem) Close() {
	_ = s.Stop(context.Background())
	s.watch.stop()
	s.b.cleanup("asynq:{" + s.queue + "}:*")
	if err := s.b.admin.SRem(context.Background(), "asynq:queues", s.queue).Err(); err != nil {
		s.b.log.Error("bench: removing the asynq queue's name", "queue", s.queue, "err", err)
	}
	_ = s.client.Close()
}

// asynqHook watches the commands of asynq's client. It counts a task done
// when asynq's completion script has returned successfully (the task is
// removed and counted processed in Redis), the moment that Peonify's
// runs count at the return of the stream's Ack.
type asynqHook struct {
	pending, active, processed string // keys of the queue
	rec                        *recorder
	dequeues, dones            atomic.Int64
}

func (h *asynqHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *asynqHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *asynqHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		switch h.script(cmd.Args()) {
		case "dequeue":
			h.dequeues.Add(1)
		case "done":
			h.dones.Add(1)
			if err == nil && cmd.Err() == nil {
				h.rec.completedN(1)
			}
		}
		return err
	}
}

// script tells asynq's scripts apart by their keys: EVALSHA sha numkeys
// key... The dequeue script's first key is the queue's pending list; the
// completion script ("done", 5 keys) starts with the active list and ends
// with the total processed counter.
func (h *asynqHook) script(args []any) string {
	if len(args) < 4 {
		return ""
	}
	if name, _ := args[0].(string); name != "evalsha" && name != "eval" {
		return ""
	}
	switch k, _ := args[3].(string); {
	case k == h.pending:
		return "dequeue"
	case k == h.active && len(args) >= 8:
		if k4, _ := args[7].(string); k4 == h.processed {
			return "done"
		}
	}
	return ""
}

// asynqLogger sends asynq's logs to the benchmark's logger.
type asynqLogger struct{ log *slog.Logger }

func (l asynqLogger) Debug(args ...any) { l.log.Debug(fmt.Sprint(args...)) }
func (l asynqLogger) Info(args ...any)  { l.log.Info(fmt.Sprint(args...)) }
func (l asynqLogger) Warn(args ...any)  { l.log.Warn(fmt.Sprint(args...)) }
func (l asynqLogger) Error(args ...any) { l.log.Error(fmt.Sprint(args...)) }

// Fatal logs at error level: the benchmark reports the failure itself
// rather than exiting.
func (l asynqLogger) Fatal(args ...any) { l.log.Error(fmt.Sprint(args...)) }
