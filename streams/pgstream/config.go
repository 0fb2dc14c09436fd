package pgstream

import (
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/peonify/peonify"
)

// Config configures a Stream. The zero value is valid: every field says
// what its zero value means.
type Config struct {
	// Queue is the name of the queue this stream produces to and consumes
	// from. Many queues share one table; a stream sees only its own.
	// At most 255 bytes. Defaults to "default".
	Queue string

	// Schema is the Postgres schema that holds Peonify's tables; it must
	// have been prepared with MigrateSchema (or Migrate, for "public").
	// A lower-case SQL identifier of at most 40 bytes. Defaults to "public".
	Schema string

	// Lease is how long a claimed task stays invisible to other
	// processors before it is handed out again, unless acked, nacked or
	// extended. Defaults to 30 seconds.
	Lease time.Duration

	// KeepDone is how long completed tasks are kept (in state done, for
	// inspection and for ID-based deduplication) before the cleaner
	// deletes them. Zero, the default, deletes a task as soon as it is
	// acked: the cheapest and the right choice for most queues.
	KeepDone time.Duration

	// ResultRetention is how long a done task that has a result (see
	// peonify.SetResult) or belongs to a workflow is kept, in state done
	// with its result, for Inspector.Get, Results, Wait and the workflow's
	// inspection, before the cleaner deletes it; KeepDone applies instead
	// if it is longer. Zero means the default, 24 hours; a negative value
	// is an error.
	ResultRetention time.Duration

	// KeepDead is how long dead-lettered and cancelled tasks are kept for inspection
	// and retry before the cleaner deletes them. A negative value keeps
	// them until an operator deletes them. Defaults to 7 days.
	KeepDead time.Duration

	// RescueInterval is how often expired leases are looked for and their
	// tasks made available again. Defaults to the smaller of 5 seconds and
	// Lease/2.
	RescueInterval time.Duration

	// CleanupInterval is how often finished tasks older than KeepDone and
	// KeepDead are deleted. Defaults to 1 minute.
	CleanupInterval time.Duration

	// Identity identifies this process in the claimed_by column of the
	// tasks it runs. Defaults to "hostname:pid". (The stream's display
	// name, in the processor's logs and stats, is Stream.Name.)
	Identity string

	// NoListen turns off LISTEN/NOTIFY: the stream then holds no
	// connection of its own and Wake fires only on this stream's own
	// Enqueue, so tasks from elsewhere are picked up at the processor's
	// poll interval. Use it behind a pooler in transaction mode, which
	// cannot LISTEN.
	NoListen bool

	// Listener, when set, is shared with other streams of the same
	// database and schema, so that they all use one LISTEN connection
	// instead of one each. The caller closes it after the streams. Ignored
	// with NoListen.
	Listener *Listener

	// SyncCommit makes claims and acks wait until they are flushed to the
	// write-ahead log, like every other statement. By default they commit
	// asynchronously (synchronous_commit off for those statements only):
	// a database crash may then forget the last fraction of a second of
	// claims and acks, so those tasks are delivered again, which
	// at-least-once delivery allows, and drains spend no time waiting for
	// the disk. Enqueue is always synchronous: a task it reported stored
	// survives a crash. With a synchronous standby, SyncCommit also makes
	// claims and acks wait for the standby, so that a failover to it keeps
	// them (see "Clusters and failover" in the README).
	SyncCommit bool

	// Logger receives the stream's logs (listener reconnects, rescued
	// leases). Defaults to slog.Default().
	Logger *slog.Logger
}

// schemaRE is what Schema accepts: an identifier that needs no quoting
// anywhere, so that the NOTIFY channel name is the same in SQL and Go.
var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,39}$`)

func validSchema(s string) error { return checkSchema("pgstream schema", s) }

// checkSchema checks a schema name given in field.
func checkSchema(field, s string) error {
	if !schemaRE.MatchString(s) {
		return &peonify.ConfigError{Field: field, Reason: fmt.Sprintf("%q is not a lower-case SQL identifier of at most 40 bytes (letters, digits, _)", s)}
	}
	return nil
}

// Validate reports whether c can configure a stream, without I/O and
// without a client: nil, or a *peonify.ConfigError whose Field names the
// field at fault in Go terms, such as "pgstream.Config.Lease". New reports the same errors.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

func (c Config) withDefaults() (Config, error) {
	if c.Queue == "" {
		c.Queue = "default"
	}
	if len(c.Queue) > 255 {
		return c, &peonify.ConfigError{Field: "pgstream.Config.Queue", Reason: "is longer than 255 bytes"}
	}
	if c.Schema == "" {
		c.Schema = "public"
	}
	if err := checkSchema("pgstream.Config.Schema", c.Schema); err != nil {
		return c, err
	}
	switch {
	case c.Lease < 0:
		return c, &peonify.ConfigError{Field: "pgstream.Config.Lease", Reason: "must not be negative (0 means the default, 30s)"}
	case c.Lease > 0 && c.Lease < time.Millisecond:
		return c, &peonify.ConfigError{Field: "pgstream.Config.Lease", Reason: "must be at least 1ms"}
	case c.KeepDone < 0:
		return c, &peonify.ConfigError{Field: "pgstream.Config.KeepDone", Reason: "must not be negative (0 deletes tasks when acked)"}
	case c.ResultRetention < 0:
		return c, &peonify.ConfigError{Field: "pgstream.Config.ResultRetention", Reason: "is negative: use a positive duration (0 means the default, 24h)"}
	case c.RescueInterval < 0:
		return c, &peonify.ConfigError{Field: "pgstream.Config.RescueInterval", Reason: "must not be negative (0 means the default)"}
	case c.CleanupInterval < 0:
		return c, &peonify.ConfigError{Field: "pgstream.Config.CleanupInterval", Reason: "must not be negative (0 means the default, 1m)"}
	}
	if c.Lease == 0 {
		c.Lease = 30 * time.Second
	}
	if c.ResultRetention == 0 {
		c.ResultRetention = 24 * time.Hour
	}
	if c.KeepDead == 0 {
		c.KeepDead = 7 * 24 * time.Hour
	}
	if c.RescueInterval == 0 {
		c.RescueInterval = min(5*time.Second, c.Lease/2)
	}
	if c.CleanupInterval == 0 {
		c.CleanupInterval = time.Minute
	}
	if c.Identity == "" {
		host, _ := os.Hostname()
		c.Identity = host + ":" + strconv.Itoa(os.Getpid())
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.NoListen {
		c.Listener = nil
	}
	if c.Listener != nil && c.Listener.schema != c.Schema {
		return c, &peonify.ConfigError{Field: "pgstream.Config.Listener", Reason: fmt.Sprintf(
			"listens to schema %q but the stream uses schema %q: give NewListener the same Schema", c.Listener.schema, c.Schema)}
	}
	return c, nil
}
