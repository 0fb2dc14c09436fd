package redisstream

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/peonify/peonify"
)

// Group is the name of the consumer group that every processor of a queue
// joins. All processors of a queue share it: each task goes to one of them.
const Group = "peonify"

// Config configures a Stream. The zero value is valid: every field says
// what its zero value means.
type Config struct {
	// Queue names the queue: processors of the same queue share its
	// tasks. It is the hash tag of every key of the queue, so that one
	// queue lives in one slot of a Redis Cluster. At most 200 bytes,
	// without '{' or '}'. Defaults to "default".
	Queue string

	// Prefix starts every key name, so that several applications can share
	// one database. At most 50 bytes, without '{' or '}'. Defaults to
	// "peonify". The queue's keys are listed by Stream.Keys.
	Prefix string

	// Consumer is this stream's name in the queue's consumer group. A
	// stream first takes back the entries its consumer name still holds
	// (those of a previous run with the same name, or a read whose reply
	// was lost) before it reads new ones. Set it to a name that survives
	// restarts, such as a StatefulSet pod name, so that a restarted
	// processor resumes its own entries at once instead of waiting for
	// their leases to end; no two running streams may use the same name.
	// At most 200 bytes. Defaults to "hostname-pid-xxxx", where xxxx is
	// random, unique to each Stream value.
	Consumer string

	// Lease is how long a delivered task stays invisible to other
	// processors before it is handed out again, unless acked, nacked or
	// extended. Redis measures it in whole milliseconds on its own
	// clock. Defaults to 30 seconds.
	Lease time.Duration

	// RescueInterval is how often Poll looks for tasks whose lease ended
	// (their processor died or stalled) and claims them. Defaults to the
	// smaller of 1 second and Lease/2.
	RescueInterval time.Duration

	// DedupWindow is how long after an Enqueue a second Enqueue of the
	// same task ID is reported as a duplicate, even if the first task has
	// finished meanwhile. While a task is live (pending, scheduled,
	// running) or dead its ID is always a duplicate. The cost is one small
	// key per task for the window, about 100 bytes. A negative value turns
	// the window off. Defaults to 5 minutes.
	DedupWindow time.Duration

	// KeepDead is how long dead-lettered tasks are kept in the dead
	// stream for inspection and retry; older ones are trimmed when new
	// ones arrive. A negative value keeps them until an operator deletes
	// them. Defaults to 7 days.
	KeepDead time.Duration

	// ResultRetention is how long a done task that has a result (see
	// peonify.SetResult) or belongs to a workflow is kept, as
	// peonify.StateDone with its result, for Results, Wait, Get and
	// GetWorkflow. Other done tasks are deleted when acked. Expired ones
	// are removed a hundred at a time by the polls of the queue's
	// processors, and are never reported once expired. Defaults to 24
	// hours; it must not be negative.
	ResultRetention time.Duration

	// WaitReplicas, when above 0, makes every write that tells the caller
	// a task's state has changed wait until that many replicas of the
	// queue's master have acknowledged it: Enqueue, EnqueueWorkflow,
	// Spawn, Ack, Nack and Cancel follow their script with WAIT
	// WaitReplicas WaitTimeout on the same connection, and fail with an
	// error wrapping ErrNotReplicated when fewer replicas acknowledged in
	// time (the write was applied on the master all the same). Claims
	// (Poll), Extend, progress and the Inspector's Retry, Delete and
	// Purge do not wait. It needs a *redis.Client or a
	// *redis.ClusterClient. See "Clusters and failover" in the README
	// for what it guarantees and what it does not: WAIT makes a write
	// survive the failover to a replica that acknowledged it, but Redis
	// may still promote another one. 0, the default, does not wait:
	// Redis replicates asynchronously, and a failover may lose the last
	// writes the master acknowledged.
	WaitReplicas int

	// WaitTimeout is how long WAIT waits for Config.WaitReplicas replicas,
	// in whole milliseconds. Keep it below the client's ReadTimeout.
	// Defaults to 1 second; used only with WaitReplicas.
	WaitTimeout time.Duration

	// Logger receives the stream's logs (reconnects of the wake-up
	// reader, failed clean-ups). Defaults to slog.Default().
	Logger *slog.Logger
}

// Validate reports whether c can configure a stream, without I/O and
// without a client: nil, or a *peonify.ConfigError whose Field names the
// field at fault in Go terms, such as "redisstream.Config.Lease". New reports the same errors.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

func (c Config) withDefaults() (Config, error) {
	if c.Queue == "" {
		c.Queue = "default"
	}
	if c.Prefix == "" {
		c.Prefix = "peonify"
	}
	if err := checkName("Config.Queue", c.Queue, 200); err != nil {
		return c, err
	}
	if err := checkName("Config.Prefix", c.Prefix, 50); err != nil {
		return c, err
	}
	if len(c.Consumer) > 200 {
		return c, &peonify.ConfigError{Field: "redisstream.Config.Consumer", Reason: "is longer than 200 bytes"}
	}
	switch {
	case c.Lease < 0:
		return c, &peonify.ConfigError{Field: "redisstream.Config.Lease", Reason: "must not be negative (0 means the default, 30s)"}
	case c.Lease > 0 && c.Lease < time.Millisecond:
		return c, &peonify.ConfigError{Field: "redisstream.Config.Lease", Reason: "must be at least 1ms: Redis counts idle time in milliseconds"}
	case c.RescueInterval < 0:
		return c, &peonify.ConfigError{Field: "redisstream.Config.RescueInterval", Reason: "must not be negative (0 means the default)"}
	case c.ResultRetention < 0:
		return c, &peonify.ConfigError{Field: "redisstream.Config.ResultRetention", Reason: "is negative: use a positive duration (0 means the default, 24h)"}
	case c.ResultRetention > 0 && c.ResultRetention < time.Millisecond:
		return c, &peonify.ConfigError{Field: "redisstream.Config.ResultRetention", Reason: "must be at least 1ms: Redis keeps times in milliseconds"}
	}
	switch {
	case c.WaitReplicas < 0:
		return c, &peonify.ConfigError{Field: "redisstream.Config.WaitReplicas", Reason: "must not be negative (0 does not wait for replicas)"}
	case c.WaitTimeout < 0:
		return c, &peonify.ConfigError{Field: "redisstream.Config.WaitTimeout", Reason: "must not be negative (0 means the default, 1s)"}
	case c.WaitTimeout > 0 && c.WaitTimeout < time.Millisecond:
		return c, &peonify.ConfigError{Field: "redisstream.Config.WaitTimeout", Reason: "must be at least 1ms: WAIT counts in milliseconds (0 means the default, 1s)"}
	}
	if c.WaitReplicas > 0 && c.WaitTimeout == 0 {
		c.WaitTimeout = time.Second
	}
	if c.ResultRetention == 0 {
		c.ResultRetention = 24 * time.Hour
	}
	if c.Lease == 0 {
		c.Lease = 30 * time.Second
	}
	if c.RescueInterval == 0 {
		c.RescueInterval = min(time.Second, c.Lease/2)
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = 5 * time.Minute
	}
	if c.KeepDead == 0 {
		c.KeepDead = 7 * 24 * time.Hour
	}
	if c.Consumer == "" {
		c.Consumer = defaultConsumer()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// checkName validates a queue name or key prefix.
func checkName(field, s string, limit int) error {
	switch {
	case len(s) > limit:
		return &peonify.ConfigError{Field: "redisstream." + field, Reason: fmt.Sprintf("is longer than %d bytes", limit)}
	case strings.ContainsAny(s, "{}"):
		return &peonify.ConfigError{Field: "redisstream." + field, Reason: fmt.Sprintf("%q contains '{' or '}', which would break the key's hash tag", s)}
	}
	return nil
}

// defaultConsumer returns "hostname-pid-xxxx".
func defaultConsumer() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "peonify"
	}
	var b [2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}

// Keys names the Redis keys of one queue. Every key of a queue shares the
// hash tag {queue}, so that a Redis Cluster keeps the queue in one slot.
type Keys struct {
	// Stream is the stream of ready and running tasks, read by the
	// consumer group Group. Producers XADD tasks here (see the README).
	Stream string

	// Schedule is a sorted set of the IDs of tasks waiting for their
	// RunAt or a retry delay, scored by the Unix time in milliseconds at
	// which they are due.
	Schedule string

	// Dead is the stream of dead-lettered tasks, each with its last
	// error.
	Dead string

	// Scheduled starts the name of the hash that holds the fields of a
	// waiting task: Scheduled + task ID.
	Scheduled string

	// Tasks is a hash from the ID of every stored task to where it is:
	// its entry ID in Stream, "s" while scheduled, "d" and its entry ID in
	// Dead, or, in its Task hash, "w" while waiting, "c" once cancelled,
	// "k" done and kept. Enqueue checks it for duplicates and the
	// Inspector finds tasks by ID through it.
	Tasks string

	// Seen starts the name of the key, Seen + task ID, that marks an ID as
	// enqueued for Config.DedupWindow.
	Seen string

	// Unique starts the name of a unique key's lock, Unique +
	// Task.UniqueKey, whose value is the ID of the live task holding it.
	Unique string

	// Task starts the name of the hash, Task + task ID, that holds the
	// fields of a task that is neither in Stream, nor scheduled, nor
	// dead: a workflow task waiting for its parents (with waiting_on, the
	// number of its unfinished parents), a cancelled task (with its
	// reason in last_error), and a done task kept for
	// Config.ResultRetention (with its result).
	Task string

	// Dependents starts the name of the set, Dependents + task ID, of the
	// IDs of the waiting tasks that wait for that task to finish.
	Dependents string

	// Workflow starts the name of the sorted set, Workflow + workflow ID,
	// of the IDs of a workflow's tasks, scored by their EnqueuedAt in
	// Unix milliseconds.
	Workflow string

	// Waiting, Cancelled and Done are sorted sets of the IDs of the
	// waiting tasks (scored by EnqueuedAt), the cancelled ones (by when
	// they were cancelled) and the done tasks kept for
	// Config.ResultRetention (by when they finished), all in Unix
	// milliseconds.
	Waiting, Cancelled, Done string

	// Progress is a hash from task ID to the last progress its running
	// task reported: "fraction updated-ms message".
	Progress string

	// Finished is the Pub/Sub channel on which the scripts publish the
	// IDs of tasks that finished (done and kept, dead or cancelled), one
	// per line, for Stream.Wait. It is not a key.
	Finished string

	// Fence is a key that a stream with Config.WaitReplicas writes before
	// each WAIT, so that WAIT also covers an earlier write that the
	// retried command finds done already (a second Ack, an Enqueue that
	// finds its tasks stored). It expires a minute after the last write.
	Fence string

	// Limits starts the names of the keys that flow control keeps (see
	// the package documentation, "Flow control"): the ready tasks of each
	// type and key, the permits in use, the rate buckets. They exist only
	// once a stream with limits has polled the queue.
	Limits string
}

func newKeys(prefix, queue string) Keys {
	base := prefix + ":{" + queue + "}"
	return Keys{
		Stream:    base + ":stream",
		Schedule:  base + ":schedule",
		Dead:      base + ":dead",
		Scheduled: base + ":scheduled:",
		Tasks:     base + ":tasks",
		Seen:      base + ":seen:",
		Unique:    base + ":unique:",
		Limits:    base + ":lim:",
		Fence:     base + ":fence",

		Task:       base + ":task:",
		Dependents: base + ":deps:",
		Workflow:   base + ":wf:",
		Waiting:    base + ":waiting",
		Cancelled:  base + ":cancelled",
		Done:       base + ":done",
		Progress:   base + ":progress",
		Finished:   base + ":finished",
	}
}
