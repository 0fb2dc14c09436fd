package peonify

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
)

// Task is one discrete unit of work: the seed's generic task format.
//
// Delivery is at-least-once, so a Task may be executed more than once; the
// ID is its idempotency key. Handlers must treat the Task as read-only.
type Task struct {
	// ID identifies the task and is its idempotency key. Producers may set
	// it; a stream's Enqueue fills an empty ID with NewID. A durable stream
	// stores a task with a given ID once: enqueueing the same ID again is
	// reported as ErrDuplicate.
	ID string

	// Type selects the Handler in the processor's TaskList.
	Type string

	// Payload is the task's data, kept byte-exact. It is usually JSON (see
	// JSON), but any bytes are allowed.
	Payload []byte

	// Headers carry metadata such as trace context or a tenant. Nil and
	// empty are equivalent.
	Headers map[string]string

	// Attempt is the number of this attempt, starting at 1. It is set by the
	// stream when the task is delivered. An attempt handed back with
	// OutcomeReleased does not count.
	Attempt int

	// MaxAttempts overrides the processor's RetryPolicy.MaxAttempts for this
	// task when greater than zero.
	MaxAttempts int

	// Priority orders ready tasks in streams that support it: higher runs
	// first. Defaults to 0.
	Priority int

	// UniqueKey, when set, makes a durable stream store at most one live
	// task with this key (pending, scheduled or running); a second Enqueue
	// with the same key reports ErrDuplicate. Periodic tasks use it to
	// produce one task per time slot however many processors run.
	UniqueKey string

	// Key is what the task belongs to for flow control: a customer, a
	// tenant, an API account. Limits with PerKey apply to each key on its
	// own (see Limit): per-key concurrency and rates, per-key ordering,
	// and fair shares between keys. Producers set it; a raw producer that
	// cannot set the field sets the KeyHeader header instead, and KeyFrom
	// derives it from the task for producers that do neither. At most
	// MaxKeyLen bytes; empty means no key.
	Key string

	// Workflow is the ID of the workflow the task belongs to (see
	// Workflow), set by WorkflowStore.EnqueueWorkflow and Spawn. Empty
	// for a task enqueued on its own.
	Workflow string

	// Parents are the IDs of the tasks of the same workflow that must
	// succeed before this one starts (see Workflow). Only
	// WorkflowStore.EnqueueWorkflow and Spawn take tasks with parents.
	Parents []string

	// AllowFailedParents makes the task run once its parents have
	// finished, even if some went dead or were cancelled, instead of
	// being cancelled with them: a batch callback. ParentResults then
	// has the results of those that succeeded.
	AllowFailedParents bool

	// EnqueuedAt is when the task was first stored. Enqueue sets it when
	// zero.
	EnqueuedAt time.Time

	// RunAt schedules the task: it is not delivered before this time. Zero
	// means as soon as possible.
	RunAt time.Time

	// LastError is the error recorded by the previous failed attempt, if
	// the stream keeps it. It is empty on a first attempt.
	LastError string
}

// Clone returns a deep copy of t, so that a stream can hand out a task
// without sharing its payload or headers with its own storage.
func (t *Task) Clone() *Task {
	c := *t
	if t.Payload != nil {
		c.Payload = append(make([]byte, 0, len(t.Payload)), t.Payload...)
	}
	if t.Headers != nil {
		c.Headers = make(map[string]string, len(t.Headers))
		for k, v := range t.Headers {
			c.Headers[k] = v
		}
	}
	if t.Parents != nil {
		c.Parents = append(make([]string, 0, len(t.Parents)), t.Parents...)
	}
	return &c
}

// Validate reports whether t can be enqueued: it must have a Type of at
// most MaxTypeLen bytes, an ID of at most MaxIDLen bytes, a UniqueKey of
// at most MaxUniqueKeyLen bytes and a Key of at most MaxKeyLen bytes, and
// no Parents (only a WorkflowStore takes those, see Workflow). Streams
// call it from Enqueue.
func (t *Task) Validate() error {
	return t.validate(false)
}

// validate is Validate, allowing Parents in a workflow.
func (t *Task) validate(inWorkflow bool) error {
	switch {
	case t == nil:
		return &InvalidTaskError{Reason: "task is nil"}
	case t.Type == "":
		return &InvalidTaskError{ID: t.ID, Reason: "task has no Type: set Task.Type to a name registered in a TaskList"}
	case len(t.Type) > MaxTypeLen:
		return &InvalidTaskError{ID: t.ID, Reason: fmt.Sprintf("task Type is longer than %d bytes", MaxTypeLen)}
	case len(t.ID) > MaxIDLen:
		return &InvalidTaskError{ID: t.ID[:32] + "…", Reason: fmt.Sprintf("task ID is longer than %d bytes", MaxIDLen)}
	case len(t.UniqueKey) > MaxUniqueKeyLen:
		return &InvalidTaskError{ID: t.ID, Reason: fmt.Sprintf("task UniqueKey is longer than %d bytes", MaxUniqueKeyLen)}
	case len(t.Key) > MaxKeyLen:
		return &InvalidTaskError{ID: t.ID, Reason: fmt.Sprintf("task Key is longer than %d bytes", MaxKeyLen)}
	case t.MaxAttempts < 0:
		return &InvalidTaskError{ID: t.ID, Reason: "task MaxAttempts is negative: use 0 for the processor's default"}
	case len(t.Workflow) > MaxIDLen:
		return &InvalidTaskError{ID: t.ID, Reason: fmt.Sprintf("task Workflow is longer than %d bytes", MaxIDLen)}
	case !inWorkflow && (len(t.Parents) > 0 || t.AllowFailedParents):
		return &InvalidTaskError{ID: t.ID, Reason: "task has Parents or AllowFailedParents: enqueue it in a Workflow with EnqueueWorkflow, or from a running task with Spawn"}
	}
	for _, p := range t.Parents {
		if p == "" || len(p) > MaxIDLen {
			return &InvalidTaskError{ID: t.ID, Reason: fmt.Sprintf("task has a parent ID that is empty or longer than %d bytes", MaxIDLen)}
		}
	}
	return nil
}

// Prepare fills the fields that Enqueue sets on a new task: an empty ID
// becomes NewID() and a zero EnqueuedAt becomes now. It validates t first.
// Stream implementations call it at the top of Enqueue.
func (t *Task) Prepare(now time.Time) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if t.ID == "" {
		t.ID = NewID()
	}
	if t.EnqueuedAt.IsZero() {
		t.EnqueuedAt = now
	}
	return nil
}

var idState struct {
	sync.Mutex
	last uint64 // last milliseconds value used
	seq  uint16 // counter within that millisecond (12 bits used)
}

// NewID returns a new UUIDv7 (RFC 9562) in its canonical text form. IDs made
// by one process sort by creation time, which keeps database indexes
// compact and makes listings chronological.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never returns an error

	ms := uint64(time.Now().UnixMilli())
	idState.Lock()
	if ms <= idState.last {
		ms = idState.last
		idState.seq++
		if idState.seq > 0x0fff { // counter overflow: borrow the next millisecond
			ms++
			idState.seq = 0
		}
	} else {
		idState.seq = 0
	}
	idState.last = ms
	seq := idState.seq
	idState.Unlock()

	binary.BigEndian.PutUint64(b[0:8], ms<<16)
	b[6] = 0x70 | byte(seq>>8)&0x0f // version 7 + counter high bits
	b[7] = byte(seq)
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant

	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
