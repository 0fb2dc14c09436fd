package peonify

import (
	"context"
	"time"
)

// Stream feeds tasks into a Processor: the seed's Stream, with poll and
// notifyComplete. A stream is a plug-in in front of any inbound source (an
// embedded store, a database table, a message broker, a webhook intake).
//
// The required interface is small; optional capabilities are separate
// interfaces: Extender, PollLimiter, Waker, Starter, Namer, Enqueuer and
// Inspector. The processor, the conformance suite and the tools find them
// with As, which looks through wrappers: a stream that wraps another (to
// inject faults, record calls or measure them) has a method
//
//	Unwrap() Stream
//
// that returns the wrapped stream, and implements an optional interface
// itself only to intercept its calls, and then only if the wrapped stream
// has it too; every other capability is found on the wrapped stream.
//
// All methods must be safe for concurrent use. The processor calls Poll from
// one goroutine per stream, and Ack, Nack and Extend from many.
type Stream interface {
	// Poll claims up to limit tasks and returns them as deliveries. It
	// must never return more than limit: prefetching beyond the
	// processor's free capacity lets leases expire in a buffer and causes
	// duplicates. An empty result with a nil error means "nothing now";
	// Poll should return promptly rather than block for long, and must
	// return when ctx ends. A limit below 1 asks for nothing: Poll claims
	// nothing and returns no deliveries and a nil error (after Close, an
	// error wrapping ErrClosed, as every call does).
	//
	// A claimed task is leased: no other Poll, in this process or another,
	// returns it until it is acked, nacked, or its lease ends. When the
	// lease ends without an ack the task becomes available again (this is
	// how work held by a crashed process comes back). Each claim counts as
	// an attempt: Task.Attempt is 1 on the first delivery.
	Poll(ctx context.Context, limit int) ([]Delivery, error)

	// Ack marks tasks completed (the seed's notifyComplete); they are never
	// delivered again. Ack is batched and idempotent: acking a delivery that
	// was already acked is not an error.
	//
	// Ack is fenced: a delivery whose lease was lost (it expired and the task
	// was claimed again) must not touch the newer claim. Such a stale ack
	// is silently ignored, or reported with an error wrapping ErrLeaseLost;
	// it never removes or changes the task. A batch with stale deliveries
	// still acks all the current ones; Ack with no deliveries returns nil.
	Ack(ctx context.Context, ds ...Delivery) error

	// Nack hands a delivery back with one of three outcomes (see Outcome):
	// retry after opts.Delay, release without counting the attempt, or
	// move to the stream's dead-letter place. Nack is fenced like Ack: a
	// stale nack does not touch a newer claim and returns nil or an error
	// wrapping ErrLeaseLost. An unknown Outcome is an error.
	Nack(ctx context.Context, d Delivery, opts NackOptions) error

	// Close releases the stream's resources. It does not close clients
	// the caller passed in. Close is idempotent; the processor calls it once
	// at the end of Run, after every ack and nack. Other calls after Close
	// return an error wrapping ErrClosed.
	Close(ctx context.Context) error
}

// Delivery is one claim of a task by a processor. Streams fill it in Poll
// and receive it back, unchanged, in Ack, Nack and Extend.
type Delivery struct {
	// Task is the delivered task. The processor and handlers do not modify
	// it.
	Task *Task

	// Token is the stream's fencing token for this claim (a receipt, a
	// lease generation, a delivery tag). Every claim of a task gets a new
	// one, so that a stream can tell, from Task.ID, Token and Ref, whether
	// this claim is still the current one.
	Token uint64

	// Deadline is when the lease ends. Zero means the stream does not
	// expire claims (the processor then never calls Extend).
	Deadline time.Time

	// Ref is stream-private data for this claim, such as a broker message.
	// The processor never looks at it.
	Ref any

	// Result is the handler's result (see SetResult), set by the processor
	// on a successful delivery before it is acked. A Tracker stores it with
	// the completed task in the same write as the ack; other streams
	// ignore it. At most MaxResultLen bytes.
	Result []byte
}

// Outcome says what a Nack does with a task.
type Outcome int

const (
	// OutcomeFailed schedules a retry after NackOptions.Delay. The attempt
	// counts towards MaxAttempts.
	OutcomeFailed Outcome = iota + 1

	// OutcomeReleased hands back a task that was not started, or was
	// interrupted by shutdown, or was snoozed. It becomes available after
	// NackOptions.Delay and the attempt does not count.
	OutcomeReleased

	// OutcomeDead moves the task to the stream's dead-letter place. It is
	// never delivered again unless retried by an operator (see Inspector),
	// and it stays inspectable with NackOptions.Reason.
	OutcomeDead
)

// String returns the outcome's lower-case name.
func (o Outcome) String() string {
	switch o {
	case OutcomeFailed:
		return "failed"
	case OutcomeReleased:
		return "released"
	case OutcomeDead:
		return "dead"
	}
	return "unknown"
}

// NackOptions describes a Nack.
type NackOptions struct {
	// Outcome is what happens to the task. Required.
	Outcome Outcome

	// Delay is how long the task waits before it can be delivered again.
	// Ignored for OutcomeDead; a negative Delay is 0.
	Delay time.Duration

	// Reason is the error that caused a failure or a dead letter. Streams
	// keep it as the task's last error, cut to at most MaxReasonLen bytes
	// (see TruncateReason).
	Reason string
}

// Extender is implemented by streams whose claims expire. The processor
// extends the lease of a running task each time a third of it has passed
// (and before starting a task that waited that long in the local queue),
// and cancels the task's context with ErrLeaseLost if Extend fails with
// ErrLeaseLost or the lease ends while extensions keep failing.
type Extender interface {
	// Extend renews the lease of d so that it ends lease from now, and
	// returns the delivery with its new Deadline (and Token, if the stream
	// rotates it). It returns an error wrapping ErrLeaseLost if the claim is
	// no longer current; other errors are treated as transient.
	Extend(ctx context.Context, d Delivery, lease time.Duration) (Delivery, error)
}

// PollLimiter is implemented by streams that return at most MaxPoll tasks
// from one Poll, however many are asked for (a broker's fetch limit). The
// processor then asks for no more than that, so that a full batch is seen
// as full and the stream is polled again at once, not left to rest as if
// it had run dry.
type PollLimiter interface {
	MaxPoll() int
}

// Waker is implemented by streams that can tell when work arrives (a local
// enqueue, LISTEN/NOTIFY, a blocking read). The processor polls an idle
// stream early when the channel receives, so pickup takes milliseconds
// rather than a poll interval. The channel is never closed; sends should be
// non-blocking with a buffer of one.
//
// Wake is an accessor: it returns the same channel on every call and does
// no I/O and starts nothing (AddStream calls it). A stream whose wake-ups
// need work in the background (a subscription, a blocking read) is also a
// Starter and does that work once started.
type Waker interface {
	Wake() <-chan struct{}
}

// Starter is implemented by streams with work of their own in the
// background: a wake-up subscription, a scheduler, a connection
// supervisor. Creating and registering a stream (New, AddStream) does no
// I/O; Run calls Start for each stream that has it, before that stream's
// first Poll, and Close stops what Start started.
type Starter interface {
	// Start starts the stream's background work, which runs until Close.
	// ctx bounds Start itself (the processor gives it Config.StoreTimeout),
	// not the work it starts. When Start returns nil, Wake (for a Waker)
	// receives for every task stored from then on.
	//
	// The processor treats an error like a failed Poll: it logs it, counts
	// it in the stream's StreamStats, and calls Start again after the same
	// backoff, polling the stream only once Start has returned nil. Start
	// is idempotent: after it returned nil, another call does nothing and
	// returns nil. After Close it returns an error wrapping ErrClosed.
	Start(ctx context.Context) error
}

// Namer is implemented by streams that have a display name. The processor
// names a stream by it in logs, stats and events, unless AddStream is
// given StreamName; a stream without one is named by its Go type.
type Namer interface {
	Name() string
}

// Enqueuer is the producer side of durable streams.
type Enqueuer interface {
	// Enqueue stores tasks durably: when it returns nil, every task
	// survives a crash of this process. It fills empty IDs and EnqueuedAt
	// (see Task.Prepare). A task whose ID, or UniqueKey while a task with
	// that key is live, is already stored is not stored again: Enqueue
	// stores the others and returns a *DuplicateError, which matches
	// ErrDuplicate with errors.Is. Enqueue copies what it stores: the caller
	// may reuse a task's Payload and Headers afterwards. Because Enqueue
	// writes the generated ID
	// into the caller's Task, enqueueing the same *Task value twice is a
	// duplicate: build a new Task for each new piece of work. A stream whose
	// broker cannot detect duplicates (RabbitMQ) says so in its package
	// documentation; tasks there may be stored twice. After any
	// other error, any subset of the tasks may have been stored: retrying
	// the same tasks (same IDs) is safe, the stored ones come back as
	// duplicates.
	Enqueue(ctx context.Context, tasks ...*Task) error
}

// State is where a task is in a stream's life cycle, as seen by an
// Inspector.
type State string

// The task states an Inspector reports.
const (
	StatePending   State = "pending"   // ready to be delivered
	StateScheduled State = "scheduled" // waiting for RunAt or a retry delay
	StateRunning   State = "running"   // leased by a processor
	StateDead      State = "dead"      // dead-lettered, kept for inspection
	StateDone      State = "done"      // completed, kept only if the stream retains finished tasks
	StateWaiting   State = "waiting"   // in a workflow, waiting for its parents to finish
	StateCancelled State = "cancelled" // cancelled (see Tracker.Cancel), or a dependent of a failed parent; kept for inspection
)

// States lists every State in life-cycle order.
var States = []State{StateWaiting, StatePending, StateScheduled, StateRunning, StateDead, StateCancelled, StateDone}

// Finished reports whether s is a final state: done, dead or cancelled.
func (s State) Finished() bool {
	return s == StateDone || s == StateDead || s == StateCancelled
}

// TaskInfo is a task as an Inspector shows it.
type TaskInfo struct {
	Task       Task
	State      State
	Attempts   int       // attempts counted so far
	LastError  string    // error of the last failed attempt, or the dead reason
	LeaseUntil time.Time // for StateRunning: when the lease ends
	UpdatedAt  time.Time

	// Result is the result of a done task, kept by a Tracker (see
	// SetResult); nil if the handler set none.
	Result []byte

	// Progress is the last progress a running task reported (see
	// ReportProgress), kept by a Tracker; zero if none.
	Progress Progress
}

// ListOptions selects tasks for Inspector.List. Normalize checks it and
// fills its defaults.
type ListOptions struct {
	State State  // required
	Type  string // only tasks of this type, when set
	Key   string // only tasks with this Task.Key, when set
	Limit int    // at most this many; 0 means DefaultListLimit (100), and a negative Limit is an error
	After string // paging cursor: list tasks whose ID sorts after this ID
}

// Inspector is implemented by stores that let operators look at and
// repair their tasks; the CLI and the dashboard use it. A store that can
// answer only some of these questions (a broker that can list its dead
// letters but not its pending messages) returns an error wrapping
// errors.ErrUnsupported for the others, so that tools can tell "cannot
// say" from "none".
type Inspector interface {
	// Counts returns the number of tasks in each state. States with no
	// tasks may be missing from the map.
	Counts(ctx context.Context) (map[State]int, error)

	// List returns tasks in opts.State ordered by ID.
	List(ctx context.Context, opts ListOptions) ([]TaskInfo, error)

	// Get returns one task, or an error wrapping ErrNotFound.
	Get(ctx context.Context, id string) (TaskInfo, error)

	// Retry makes dead tasks pending again with a fresh attempt count (the
	// next delivery is Attempt 1). With
	// no ids it retries every dead task. It returns how many it retried.
	Retry(ctx context.Context, ids ...string) (int, error)

	// Delete removes tasks that are not running. It returns how many it
	// removed.
	Delete(ctx context.Context, ids ...string) (int, error)

	// Purge removes every task in state (StateDead or StateDone, or
	// StatePending to empty a queue) and returns how many it removed.
	Purge(ctx context.Context, state State) (int, error)
}
