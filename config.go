package peonify

import (
	"log/slog"
	"runtime"
	"strconv"
	"time"
)

// Config configures a Processor. The zero value is valid: every field says
// what its zero value means. Negative sizes and durations are errors.
type Config struct {
	// Workers is how many tasks run at once. Defaults to 10 per CPU
	// (GOMAXPROCS).
	Workers int

	// QueueSize is how many claimed tasks may wait in the local queue for a
	// free worker. The processor never holds more than Workers running plus
	// QueueSize waiting; on a stream whose claims have a lease, it holds no
	// more waiting than its workers start within a third of the lease (and
	// at least Workers), so that no lease runs out in the queue. Defaults to
	// Workers.
	QueueSize int

	// LowWatermark is the local queue depth at or below which the processor
	// polls its streams for more (the seed's "queue is becoming
	// depleted"). Defaults to QueueSize/2; must be below QueueSize.
	LowWatermark int

	// TaskTimeout bounds one attempt: the task's context is cancelled with
	// cause ErrTaskTimeout when it ends. Defaults to 1 minute.
	TaskTimeout time.Duration

	// ShutdownGrace is how long running tasks may go on after Run's context
	// ends; their leases are kept alive meanwhile. After it their contexts
	// are cancelled with cause ErrShutdown. It is cut short, if need be, to
	// leave the rest of the shutdown at least 30% of ShutdownTimeout (8
	// seconds at most). Defaults to 20 seconds, or less when a shorter
	// ShutdownTimeout leaves less. Must be below ShutdownTimeout.
	ShutdownGrace time.Duration

	// ShutdownTimeout bounds the whole shutdown, from the end of Run's
	// context to Run's return: releasing the tasks that never started,
	// the grace period of running tasks, acks, and closing the streams
	// (see Run). A task that cannot be handed back in time, because the
	// store does not answer, is left to its lease and comes back when the
	// lease ends: nothing is lost. Defaults to 28 seconds, under the 30
	// seconds most orchestrators wait before SIGKILL, or ShutdownGrace plus
	// 8 seconds when that is more.
	ShutdownTimeout time.Duration

	// StoreTimeout bounds every call the processor makes to a stream
	// (Poll, Ack, Nack, Extend), so that a store that stops answering (a
	// dead connection that no reset ever ends) cannot stall the processor.
	// A Poll that reaches it fails with an error wrapping ErrStoreTimeout,
	// which counts as a poll error like any other: the stream backs off,
	// StreamStats shows it, and it is logged. Extend is also bounded by a
	// third of the lease (at least a second). A stream must return when its
	// context ends. Defaults to 10 seconds.
	StoreTimeout time.Duration

	// PollInterval is the longest wait between polls of a stream that had
	// nothing to deliver; idle polls back off from MinPollInterval up to it
	// with jitter. A stream that implements Waker is polled at once when it
	// signals. Defaults to 1s.
	PollInterval time.Duration

	// MinPollInterval is the first wait after an empty poll. Defaults to
	// 10ms.
	MinPollInterval time.Duration

	// Retry decides when failed tasks are retried. The zero value is the
	// default policy.
	Retry RetryPolicy

	// Middleware wraps every handler, the first element outermost.
	Middleware []Middleware

	// OnEvent, when set, is called synchronously from the worker after each
	// task outcome. It must be fast and must not block.
	OnEvent func(Event)

	// Logger receives the processor's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

func (c Config) validate() error {
	switch {
	case c.Workers < 0:
		return &ConfigError{"Config.Workers", "must not be negative (0 means the default, 10 per CPU)"}
	case c.QueueSize < 0:
		return &ConfigError{"Config.QueueSize", "must not be negative (0 means the default, Workers)"}
	case c.LowWatermark < 0:
		return &ConfigError{"Config.LowWatermark", "must not be negative (0 means the default, QueueSize/2)"}
	case c.TaskTimeout < 0:
		return &ConfigError{"Config.TaskTimeout", "must not be negative (0 means the default, 1m)"}
	case c.ShutdownGrace < 0:
		return &ConfigError{"Config.ShutdownGrace", "must not be negative (0 means the default, 20s)"}
	case c.ShutdownTimeout < 0:
		return &ConfigError{"Config.ShutdownTimeout", "must not be negative (0 means the default, 28s)"}
	case c.ShutdownGrace > 0 && c.ShutdownTimeout > 0 && c.ShutdownGrace >= c.ShutdownTimeout:
		return &ConfigError{"Config.ShutdownGrace", "must be below ShutdownTimeout, which bounds the whole shutdown"}
	case c.StoreTimeout < 0:
		return &ConfigError{"Config.StoreTimeout", "must not be negative (0 means the default, 10s)"}
	case c.PollInterval < 0:
		return &ConfigError{"Config.PollInterval", "must not be negative (0 means the default, 1s)"}
	case c.MinPollInterval < 0:
		return &ConfigError{"Config.MinPollInterval", "must not be negative (0 means the default, 10ms)"}
	}
	for i, m := range c.Middleware {
		if m == nil {
			return &ConfigError{"Config.Middleware", "element " + strconv.Itoa(i) + " is nil"}
		}
	}
	if err := c.Retry.validate(); err != nil {
		return err
	}
	d := c.withDefaults()
	if d.LowWatermark >= d.QueueSize {
		return &ConfigError{"Config.LowWatermark", "must be below QueueSize (" + strconv.Itoa(d.QueueSize) + ")"}
	}
	if d.MinPollInterval > d.PollInterval {
		return &ConfigError{"Config.MinPollInterval", "must not exceed PollInterval"}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Workers == 0 {
		c.Workers = 10 * runtime.GOMAXPROCS(0)
	}
	if c.QueueSize == 0 {
		c.QueueSize = c.Workers
	}
	if c.LowWatermark == 0 {
		c.LowWatermark = c.QueueSize / 2
	}
	if c.TaskTimeout == 0 {
		c.TaskTimeout = time.Minute
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = max(28*time.Second, c.ShutdownGrace+8*time.Second)
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = min(20*time.Second, c.ShutdownTimeout-shutdownTail(c.ShutdownTimeout))
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = 10 * time.Second
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.MinPollInterval == 0 {
		c.MinPollInterval = min(10*time.Millisecond, c.PollInterval)
	}
	c.Retry = c.Retry.withDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
