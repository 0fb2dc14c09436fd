package natsstream

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/peonify/peonify"
)

// Config configures a Stream and, through Setup, the JetStream stream and
// consumers behind it. The zero value is valid: every field says what its
// zero value means. New and Setup must be given the same Config.
type Config struct {
	// Stream is the name of the JetStream stream that holds the tasks. It
	// may not contain white space, '.', '*', '>', '/' or '\'. Defaults to
	// "PEONIFY".
	Stream string

	// Subject is the subject producers publish tasks to, a literal subject
	// without wildcards. Defaults to "peonify.tasks".
	Subject string

	// Consumer is the name of the durable pull consumer that every
	// processor of the stream shares. The scheduler's consumer is named
	// after it with "_scheduler" added. Defaults to "peonify".
	Consumer string

	// DeadStream is the JetStream stream that keeps dead-lettered tasks.
	// Give each Stream its own. Defaults to Stream + "_DEAD".
	DeadStream string

	// AckWait is the lease: how long a delivered task stays invisible to
	// other processors before JetStream delivers it again, unless it is
	// acked, nacked or extended (an extension renews the whole AckWait).
	// At least 100ms. Defaults to 30 seconds.
	AckWait time.Duration

	// MaxDeliver is how many attempts a task gets, counting deliveries
	// whose lease ran out (a processor that crashed or hung), before Poll
	// dead-letters it instead of delivering it again. It stops a task that
	// kills its processor from crash-looping; set it above the
	// processor's RetryPolicy.MaxAttempts, which handles tasks that fail
	// normally. Defaults to 100; a negative value removes the limit.
	MaxDeliver int

	// MaxAckPending caps the tasks that all processors together hold at
	// once (delivered and not yet acked or nacked); JetStream delivers no
	// more until some are done. While the cap is reached, a Poll waits up
	// to 10ms for a claim to be freed and returns what it could take.
	// Each processor already holds at most its own capacity, so the
	// default is no cap (zero or negative).
	MaxAckPending int

	// DuplicateWindow is how long JetStream remembers a task ID to reject
	// a second Enqueue of it (see Stream.Enqueue). Defaults to 2 minutes.
	DuplicateWindow time.Duration

	// KeepDead is how long dead-lettered tasks are kept in DeadStream for
	// inspection and retry. A negative value keeps them until an operator
	// deletes them. Defaults to 7 days.
	KeepDead time.Duration

	// MaxBytes caps the size of the task stream; when it is full, Enqueue
	// fails instead of dropping stored tasks. Defaults to no limit.
	MaxBytes int64

	// Replicas is the number of copies of the streams and consumers in a
	// JetStream cluster, at most 5. With 3, an Enqueue that returned nil
	// survives the loss of any one node; README.md ("Clusters and
	// failover") says what a failover does to running tasks. Defaults
	// to 1.
	Replicas int

	// MemoryStorage keeps the streams in memory instead of on disk: faster,
	// but a server restart loses every task. Defaults to false.
	MemoryStorage bool

	// Logger receives the stream's logs (scheduler errors, dead letters
	// made by Poll). Defaults to slog.Default().
	Logger *slog.Logger
}

// Defaults of Config.
const (
	defaultStream          = "PEONIFY"
	defaultSubject         = "peonify.tasks"
	defaultConsumer        = "peonify"
	defaultAckWait         = 30 * time.Second
	defaultMaxDeliver      = 100
	defaultDuplicateWindow = 2 * time.Minute
	defaultKeepDead        = 7 * 24 * time.Hour
	minAckWait             = 100 * time.Millisecond
)

// subjects are the subjects a Stream uses besides Config.Subject.
type subjects struct {
	work      string // Config.Subject: ready tasks
	scheduled string // tasks waiting for their RunAt or a retry delay
	wake      string // headers-only copies of new work messages
	dead      string // dead letters, in Config.DeadStream
	next      string // the API subject of pull requests to the work consumer (set by New)
}

func newSubjects(cfg Config) subjects {
	p := "_peonify." + cfg.Stream + "."
	return subjects{work: cfg.Subject, scheduled: p + "scheduled", wake: p + "wake", dead: p + "dead"}
}

// schedulerConsumer names the consumer of the scheduled subject.
func (c Config) schedulerConsumer() string { return c.Consumer + "_scheduler" }

// Validate reports whether c can configure a stream, without I/O and
// without a client: nil, or a *peonify.ConfigError whose Field names the
// field at fault in Go terms, such as "natsstream.Config.AckWait". New and Setup report the same errors.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

func (c Config) withDefaults() (Config, error) {
	if c.Stream == "" {
		c.Stream = defaultStream
	}
	if c.Subject == "" {
		c.Subject = defaultSubject
	}
	if c.Consumer == "" {
		c.Consumer = defaultConsumer
	}
	if c.DeadStream == "" {
		c.DeadStream = c.Stream + "_DEAD"
	}
	for _, n := range []struct{ field, v string }{
		{"Stream", c.Stream}, {"Consumer", c.Consumer}, {"DeadStream", c.DeadStream},
	} {
		if err := validName(n.v); err != nil {
			return c, &peonify.ConfigError{Field: "natsstream.Config." + n.field, Reason: err.Error()}
		}
	}
	if c.DeadStream == c.Stream {
		return c, &peonify.ConfigError{Field: "natsstream.Config.DeadStream", Reason: "must differ from Stream"}
	}
	if err := validSubject(c.Subject); err != nil {
		return c, &peonify.ConfigError{Field: "natsstream.Config.Subject", Reason: err.Error()}
	}
	switch {
	case c.AckWait < 0:
		return c, &peonify.ConfigError{Field: "natsstream.Config.AckWait", Reason: "must not be negative (0 means the default, 30s)"}
	case c.AckWait > 0 && c.AckWait < minAckWait:
		return c, &peonify.ConfigError{Field: "natsstream.Config.AckWait", Reason: "must be at least 100ms"}
	case c.DuplicateWindow < 0:
		return c, &peonify.ConfigError{Field: "natsstream.Config.DuplicateWindow", Reason: "must not be negative (0 means the default, 2m)"}
	case c.MaxBytes < 0:
		return c, &peonify.ConfigError{Field: "natsstream.Config.MaxBytes", Reason: "must not be negative (0 means no limit)"}
	case c.Replicas < 0 || c.Replicas > 5:
		return c, &peonify.ConfigError{Field: "natsstream.Config.Replicas", Reason: "must be between 1 and 5 (0 means the default, 1)"}
	}
	if c.AckWait == 0 {
		c.AckWait = defaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = defaultMaxDeliver
	}
	if c.MaxDeliver < 0 {
		c.MaxDeliver = -1
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = -1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = defaultDuplicateWindow
	}
	if c.KeepDead == 0 {
		c.KeepDead = defaultKeepDead
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// validName checks a JetStream stream or consumer name.
func validName(s string) error {
	if len(s) > 200 {
		return fmt.Errorf("%q is longer than 200 bytes", s[:32]+"…")
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(".*>/\\", r) {
			return fmt.Errorf("%q contains %q: use letters, digits, '-' and '_'", s, r)
		}
	}
	return nil
}

// validSubject checks that s is a literal NATS subject outside the
// subjects the stream keeps for itself.
func validSubject(s string) error {
	if len(s) > 255 {
		return fmt.Errorf("%q is longer than 255 bytes", s[:32]+"…")
	}
	for tok := range strings.SplitSeq(s, ".") {
		switch {
		case tok == "":
			return fmt.Errorf("%q has an empty token: write tokens separated by single dots, such as \"tasks.emails\"", s)
		case tok == "*" || tok == ">":
			return fmt.Errorf("%q has a wildcard: give the literal subject producers publish to", s)
		}
		for _, r := range tok {
			if r <= ' ' || r == 0x7f {
				return fmt.Errorf("%q contains white space or a control character", s)
			}
		}
	}
	if strings.HasPrefix(s, "_peonify.") || s == "_peonify" {
		return fmt.Errorf("%q is under \"_peonify.\", which the stream keeps for its own subjects", s)
	}
	return nil
}
