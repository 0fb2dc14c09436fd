package amqpstream

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify"
)

// maxQueueName caps Config.Queue so that the longest derived name (a delay
// queue, Queue + ".delay.2147483648") fits AMQP's 255-byte limit.
const maxQueueName = 200

// Config configures a Stream. The zero value is valid: every field says
// what its zero value means.
type Config struct {
	// Queue is the name of the work queue that producers publish to and
	// processors consume from. The stream also owns Queue+".dead", the
	// dead-letter queue, and Queue+".delay.<ms>", the delay queues of
	// retries and scheduled tasks. It must not start with "amq." (reserved
	// by the broker) and is at most 200 bytes. Defaults to "peonify".
	Queue string

	// AMQP tunes the connections the stream opens: TLS (TLSClientConfig),
	// heartbeat, vhost, SASL mechanisms, client properties, or a custom
	// Dial. Settings in the URL take precedence, as in amqp.DialConfig.
	// AMQP.Recovery must be nil: the stream reconnects by itself (see the
	// package documentation). The stream names its connections after Name
	// unless AMQP.Properties sets connection_name.
	AMQP amqp.Config

	// Prefetch fixes how many unacknowledged messages the broker may send
	// to this stream (the consumer's QoS prefetch count), that is how many
	// tasks it holds at most: handed out, or buffered for the next Poll.
	// Zero, the default, lets it follow the processor: it starts at the
	// first Poll's max and grows only when a Poll finds nothing buffered
	// while every prefetched message is still unacknowledged, that is when
	// the caller has room that the prefetch denies it. It settles at what
	// the processor holds (Workers + QueueSize at most) plus the tasks it
	// has finished but not yet acked (a processor batches its acks).
	Prefetch int

	// MaxPriority, when positive, makes the work queue a priority queue
	// (x-max-priority) of priorities 0 to MaxPriority, at most 255; a
	// Task.Priority outside that range is clamped for ordering (the task
	// keeps its exact priority). RabbitMQ recommends at most 10. Zero, the
	// default, declares a plain FIFO queue. Quorum queues do not support
	// it.
	MaxPriority int

	// Quorum declares the stream's queues as quorum queues (replicated;
	// delay queues dead-letter at-least-once) instead of classic durable
	// queues. The broker cannot change a queue's type: delete the queues
	// before switching.
	Quorum bool

	// KeepDead is how long dead-lettered tasks stay in the dead-letter
	// queue (its x-message-ttl) before the broker drops them. A negative
	// value keeps them until an operator removes them. Defaults to 7 days.
	KeepDead time.Duration

	// ReconnectMin and ReconnectMax bound the wait between attempts to
	// reconnect after the connection is lost: it doubles from ReconnectMin
	// to ReconnectMax, each wait randomly shortened by up to half so that
	// processors do not reconnect in step after a broker restart. Default
	// to 100ms and 30s.
	ReconnectMin, ReconnectMax time.Duration

	// DialTimeout bounds opening a connection: the TCP dial, and the TLS
	// and AMQP handshakes. Ignored when AMQP.Dial is set. Defaults to 10s.
	DialTimeout time.Duration

	// Identity identifies this process in the broker: in consumer tags and
	// as the connection name. Defaults to "peonify hostname:pid". (The
	// stream's display name, in the processor's logs and stats, is
	// Stream.Name.)
	Identity string

	// Logger receives the stream's logs (connection losses and
	// reconnections, messages it could not route). Defaults to
	// slog.Default().
	Logger *slog.Logger
}

func configError(field, format string, args ...any) error {
	return &peonify.ConfigError{Field: "amqpstream.Config." + field, Reason: fmt.Sprintf(format, args...)}
}

// Validate reports whether c can configure a stream, without I/O and
// without a client: nil, or a *peonify.ConfigError whose Field names the
// field at fault in Go terms, such as "amqpstream.Config.Prefetch". New reports the same errors, and checks its URL too.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

func (c Config) withDefaults() (Config, error) {
	if c.Queue == "" {
		c.Queue = "peonify"
	}
	switch {
	case len(c.Queue) > maxQueueName:
		return c, configError("Queue", "is %d bytes long; at most %d are allowed, so that the names of its delay queues fit AMQP's limit", len(c.Queue), maxQueueName)
	case strings.HasPrefix(c.Queue, "amq."):
		return c, configError("Queue", "%q starts with \"amq.\", which RabbitMQ reserves for its own queues", c.Queue)
	case c.AMQP.Recovery != nil:
		return c, configError("AMQP.Recovery", "must be nil: the stream reconnects by itself, and a recovered channel would reuse delivery tags that stale acks still hold")
	case c.Prefetch < 0 || c.Prefetch > 65535:
		return c, configError("Prefetch", "must be between 0 (follow the processor) and 65535, got %d", c.Prefetch)
	case c.MaxPriority < 0 || c.MaxPriority > 255:
		return c, configError("MaxPriority", "must be between 0 (no priorities) and 255, got %d", c.MaxPriority)
	case c.MaxPriority > 0 && c.Quorum:
		return c, configError("MaxPriority", "quorum queues do not support x-max-priority: set MaxPriority or Quorum, not both")
	case c.ReconnectMin < 0:
		return c, configError("ReconnectMin", "must not be negative (0 means the default, 100ms)")
	case c.ReconnectMax < 0:
		return c, configError("ReconnectMax", "must not be negative (0 means the default, 30s)")
	case c.DialTimeout < 0:
		return c, configError("DialTimeout", "must not be negative (0 means the default, 10s)")
	case c.KeepDead > 0 && c.KeepDead < time.Millisecond:
		return c, configError("KeepDead", "must be at least 1ms, or negative to keep dead tasks")
	case c.KeepDead > time.Duration(1<<32-1)*time.Millisecond:
		return c, configError("KeepDead", "exceeds the broker's longest message TTL, about 49 days: use a negative value to keep dead tasks forever")
	}
	if c.KeepDead == 0 {
		c.KeepDead = 7 * 24 * time.Hour
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = 100 * time.Millisecond
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = 30 * time.Second
	}
	if c.ReconnectMax < c.ReconnectMin {
		return c, configError("ReconnectMax", "must not be below ReconnectMin (%s)", c.ReconnectMin)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.Identity == "" {
		host, _ := os.Hostname()
		c.Identity = "peonify " + host + ":" + strconv.Itoa(os.Getpid())
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// queueArgs returns the declaration arguments of the work queue.
func (c Config) queueArgs() amqp.Table {
	args := amqp.Table{}
	if c.Quorum {
		args["x-queue-type"] = "quorum"
	}
	if c.MaxPriority > 0 {
		args["x-max-priority"] = int64(c.MaxPriority)
	}
	return args
}

// deadArgs returns the declaration arguments of the dead-letter queue.
func (c Config) deadArgs() amqp.Table {
	args := amqp.Table{}
	if c.Quorum {
		args["x-queue-type"] = "quorum"
	}
	if c.KeepDead > 0 {
		args["x-message-ttl"] = c.KeepDead.Milliseconds()
	}
	return args
}

// delayArgs returns the declaration arguments of the delay queue with TTL
// ms: its messages expire after ms and go back to the work queue through
// the default exchange.
func (c Config) delayArgs(ms int64) amqp.Table {
	args := amqp.Table{
		"x-message-ttl":             ms,
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": c.Queue,
	}
	if c.Quorum {
		args["x-queue-type"] = "quorum"
		args["x-dead-letter-strategy"] = "at-least-once"
		args["x-overflow"] = "reject-publish"
	}
	return args
}
