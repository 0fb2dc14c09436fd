package memstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/peonify/peonify"
)

// Compile-time checks that Stream provides the whole contract.
var (
	_ peonify.Stream        = (*Stream)(nil)
	_ peonify.Extender      = (*Stream)(nil)
	_ peonify.Waker         = (*Stream)(nil)
	_ peonify.Enqueuer      = (*Stream)(nil)
	_ peonify.Inspector     = (*Stream)(nil)
	_ peonify.Tracker       = (*Stream)(nil)
	_ peonify.WorkflowStore = (*Stream)(nil)
)

// Default values of Config fields.
const (
	DefaultLease   = 30 * time.Second
	DefaultName    = "memory"
	DefaultMaxDead = 10000

	// DefaultResultRetention is how long a done task with a result, or of
	// a workflow, is kept unless Config.ResultRetention says otherwise.
	DefaultResultRetention = 24 * time.Hour
)

// Config configures a Stream. The zero value is valid.
type Config struct {
	// Lease is how long a polled task stays claimed before it becomes
	// available again unless it is acked, nacked or extended. Defaults to
	// DefaultLease (30s); zero or negative means the default.
	Lease time.Duration

	// Name is what Name returns, used by the processor in logs and stats.
	// Defaults to DefaultName ("memory").
	Name string

	// MaxDead bounds how many dead tasks are kept for inspection. When a
	// task dies beyond it, the oldest dead task is dropped for good.
	// Defaults to DefaultMaxDead (10000); zero or negative means the
	// default.
	MaxDead int

	// ResultRetention is how long a done task that has a result (see
	// peonify.SetResult) or belongs to a workflow is kept, in StateDone
	// with its result, for Inspector.Get, Tracker.Results and
	// Tracker.Wait; other done tasks are forgotten at once. Defaults to
	// DefaultResultRetention (24h); zero or negative means the default.
	ResultRetention time.Duration

	// Now is the clock, for tests that drive time by hand. It must be safe
	// for concurrent use. Defaults to time.Now. With a clock of its own the
	// stream does not signal Wake when a scheduled task falls due, a lease
	// ends or a rate token falls due, since it cannot tell when that
	// happens. Rate limits (see SetLimits) refill on this clock.
	Now func() time.Time
}

// state is where an entry is in its life cycle.
type state uint8

const (
	statePending state = iota + 1
	stateScheduled
	stateRunning
	stateDead
	stateWaiting   // in a workflow, waiting for its parents
	stateCancelled // cancelled, kept for inspection
	stateDone      // acked, kept with its result (see Config.ResultRetention)
	stateGone      // acked, deleted or purged: no longer stored
)

// finished reports whether st is a final state that Tracker.Wait returns.
func (st state) finished() bool {
	return st == stateDead || st == stateCancelled || st == stateDone
}

func (st state) public() peonify.State {
	switch st {
	case statePending:
		return peonify.StatePending
	case stateScheduled:
		return peonify.StateScheduled
	case stateRunning:
		return peonify.StateRunning
	case stateDead:
		return peonify.StateDead
	case stateWaiting:
		return peonify.StateWaiting
	case stateCancelled:
		return peonify.StateCancelled
	}
	return peonify.StateDone
}

// entry is one stored task. Its first Task lives inside the entry, so that
// Enqueue allocates once per task and the first Poll hands out a pointer to
// it without copying.
type entry struct {
	owner *Stream
	task  peonify.Task  // storage for the first version of the task
	t     *peonify.Task // the current version: &task until a change is needed after a Poll handed it out
	given bool          // t was handed out by Poll: it is read-only from then on

	st        state
	prio      int
	seq       uint64    // enqueue order
	token     uint64    // fencing token of the current (or last) claim
	attempts  int       // attempts counted so far
	avail     time.Time // when the task is (or became) available
	deadline  time.Time // end of the lease while running
	lastError string
	updated   time.Time

	k          key    // order in the queue that holds it
	pos        int    // position in that queue
	prev, next *entry // neighbours in the list that holds it (dead, waiting, cancelled or done)

	result   []byte           // the result the Ack stored, for stateDone
	progress peonify.Progress // the last progress reported (SetProgress)
	acked    bool             // the task was acked (stateDone, or stateGone if not kept)
	waiters  chan struct{}    // closed when the task finishes; nil if no one waits

	// Workflows: the tasks waiting for this one, how many parents this
	// one still waits for, and whether its dependents were already told
	// that it finished (they are told once, the first time).
	dependents []*entry
	waitingOn  int
	settled    bool
}

// Stream is an in-memory stream: a priority queue of tasks with leases,
// retries, scheduling, dead letters and inspection, all held in this
// process. Nothing survives the process, so it suits tests, examples,
// benchmarks and fan-in between goroutines of one program.
//
// Stream implements peonify.Stream, peonify.Extender, peonify.Waker,
// peonify.Enqueuer, peonify.Inspector, peonify.Limiter, peonify.Tracker
// and peonify.WorkflowStore, and is safe for concurrent use.
//
// Poll hands out the stored task itself rather than a copy, so handlers
// must not modify the *peonify.Task they receive (the peonify contract
// already says so). Later changes, such as the attempt number of a retry,
// go into a new Task value and never touch one already handed out.
//
// A task acked without a result, and not in a workflow, is forgotten: its
// ID may be enqueued again. A task acked with a result (Delivery.Result,
// see peonify.SetResult), or of a workflow, is kept in StateDone with its
// result for Config.ResultRetention (see peonify.Tracker).
type Stream struct {
	name    string
	lease   time.Duration
	maxDead int
	now     func() time.Time
	realClk bool // now is time.Now: timers can tell when tasks fall due
	wake    chan struct{}

	mu        sync.Mutex
	closed    bool
	byID      map[string]*entry
	byUnique  map[string]*entry              // live (pending, scheduled, running) tasks by UniqueKey
	ready     queue                          // pending tasks
	scheduled queue                          // tasks waiting for RunAt or a retry delay
	leased    queue                          // running tasks, by lease deadline
	dead      elist                          // dead tasks, oldest first
	waiting   elist                          // tasks waiting for their parents
	cancelled elist                          // cancelled tasks, oldest first
	done      elist                          // kept done tasks, oldest first
	workflows map[string]map[*entry]struct{} // stored tasks by Task.Workflow
	retention time.Duration
	seq       uint64
	token     uint64
	peak      int         // most tasks held since byID was last made
	timer     *time.Timer // signals Wake at armedAt
	armedAt   time.Time   // zero when the timer is not armed
	limits    []*limiter  // what Poll enforces (see SetLimits); nil for none
}

// New returns an empty Stream configured by cfg.
func New(cfg Config) *Stream {
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.MaxDead <= 0 {
		cfg.MaxDead = DefaultMaxDead
	}
	realClock := cfg.Now == nil
	if realClock {
		cfg.Now = time.Now
	}
	return &Stream{
		name:     cfg.Name,
		lease:    cfg.Lease,
		maxDead:  cfg.MaxDead,
		now:      cfg.Now,
		realClk:  realClock,
		wake:     make(chan struct{}, 1),
		byID:     make(map[string]*entry),
		byUnique: make(map[string]*entry),

		workflows: make(map[string]map[*entry]struct{}),
		retention: cmp.Or(max(cfg.ResultRetention, 0), DefaultResultRetention),
	}
}

// Name returns the stream's name from Config.Name.
func (s *Stream) Name() string { return s.name }

// Wake returns a channel that receives when tasks may have become available:
// after an Enqueue, Nack or Retry that makes a task ready at once, and, on
// the real clock, when a scheduled task or a retry delay falls due or a
// lease ends. With limits set (see SetLimits) it also receives when a task
// that a limit held back may start: after an Ack or Nack that frees a
// permit, and, on the real clock, when a rate token falls due. The channel
// has a buffer of one and is never closed.
func (s *Stream) Wake() <-chan struct{} { return s.wake }

func (s *Stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// arm makes the timer signal Wake at at, unless it is already armed to
// fire no later. s.mu must be held.
func (s *Stream) arm(at, now time.Time) {
	if !s.realClk || s.closed || (!s.armedAt.IsZero() && !at.Before(s.armedAt)) {
		return
	}
	s.armedAt = at
	if s.timer == nil {
		s.timer = time.AfterFunc(at.Sub(now), s.fire)
	} else {
		s.timer.Reset(at.Sub(now))
	}
}

// armNext arms the timer for the next time a task falls due or a lease
// ends after now. s.mu must be held.
func (s *Stream) armNext(now time.Time) {
	var next time.Time
	if e := s.scheduled.peek(); e != nil {
		next = e.avail
	}
	if e := s.leased.peek(); e != nil && (next.IsZero() || e.deadline.Before(next)) {
		next = e.deadline
	}
	if next.After(now) {
		s.arm(next, now)
	}
}

// fire runs on the timer's goroutine: it signals Wake, so that the
// processor polls and Poll moves the due tasks, and arms the timer for the
// next time still to come.
func (s *Stream) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armedAt = time.Time{}
	if s.closed {
		return
	}
	s.signal()
	s.armNext(s.now())
}

// Poll claims up to limit tasks, highest Priority first and then in the
// order they became available. Each claimed task is leased until
// Config.Lease from now and its Attempt counts this claim. Poll also moves
// scheduled tasks that fell due and tasks whose lease expired back into the
// ready queue. It never blocks. With limits set (see SetLimits), it claims
// only the tasks they admit, taking keys in turn (see the package
// documentation).
func (s *Stream) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit < 1 {
		// Asks for nothing (see peonify.Stream): no deliveries, no error.
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return nil, peonify.ErrClosed
		}
		return nil, nil
	}
	now, err := s.lockAdvanced()
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	if len(s.limits) > 0 {
		return s.pollLimited(now, limit), nil
	}
	n := min(limit, s.ready.len())
	if n == 0 {
		s.armNext(now)
		return nil, nil
	}
	deadline := now.Add(s.lease)
	ds := make([]peonify.Delivery, n)
	for i := range ds {
		ds[i] = s.claim(s.ready.pop(), now, deadline)
	}
	s.armNext(now)
	return ds, nil
}

// claim leases e, which was just taken out of the ready queue, until
// deadline, and returns its delivery. s.mu must be held.
func (s *Stream) claim(e *entry, now, deadline time.Time) peonify.Delivery {
	s.token++
	e.token = s.token
	e.attempts++
	e.st = stateRunning
	e.deadline = deadline
	e.updated = now
	t := e.t
	if e.given {
		c := *t
		t = &c
		e.t = t
	}
	t.Attempt = e.attempts
	t.LastError = e.lastError
	e.given = true
	s.pushLeased(e)
	return peonify.Delivery{Task: t, Token: e.token, Deadline: deadline, Ref: e}
}

// lockCurrent locks s.mu for a method on the claim d and returns its task's
// entry. After Close, or when d is not current (see current), or its task
// was acked already, it leaves s.mu unlocked and returns the error. The
// caller unlocks s.mu.
func (s *Stream) lockCurrent(d peonify.Delivery) (*entry, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, peonify.ErrClosed
	}
	e, err := s.current(d)
	if err == nil && e == nil {
		err = acked(d)
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	return e, nil
}

// lockAdvanced locks s.mu for a method that reads or claims tasks, and
// advances the stream to now as Poll does; it returns now. After Close it
// leaves s.mu unlocked and returns peonify.ErrClosed. The caller unlocks
// s.mu.
func (s *Stream) lockAdvanced() (time.Time, error) {
	now := s.now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return now, peonify.ErrClosed
	}
	s.advance(now)
	return now, nil
}

// lockAdvancedCtx is lockAdvanced for a method that returns ctx's error,
// without locking, once ctx has ended.
func (s *Stream) lockAdvancedCtx(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	return s.lockAdvanced()
}

// advance makes scheduled tasks that fell due ready, and expired leases
// available again, and forgets the done tasks whose retention ended, as
// of now. s.mu must be held.
func (s *Stream) advance(now time.Time) {
	s.expire(now)
	for e := s.scheduled.peek(); e != nil && !now.Before(e.avail); e = s.scheduled.peek() {
		s.scheduled.pop()
		e.st = statePending
		e.updated = now
		s.pushReady(e)
	}
	for e := s.leased.peek(); e != nil && !now.Before(e.deadline); e = s.leased.peek() {
		s.leased.pop()
		// The attempt stays counted: the task ran, or its process died.
		// It keeps its place in line so that it is not starved.
		e.st = statePending
		e.lastError = "lease expired before the task was acked or nacked"
		e.updated = now
		s.pushReady(e)
	}
}

// pushReady, pushScheduled and pushLeased put e in a queue with the key
// that orders it there. s.mu must be held.
func (s *Stream) pushReady(e *entry) {
	e.k = key{prio: e.prio, at: e.avail, seq: e.seq}
	s.ready.push(e)
}

func (s *Stream) pushScheduled(e *entry) {
	e.k = key{at: e.avail, seq: e.seq}
	s.scheduled.push(e)
}

func (s *Stream) pushLeased(e *entry) {
	e.k = key{at: e.deadline, seq: e.token}
	s.leased.push(e)
}

// current returns the stored entry of d if d's claim is still current: the
// task is running under d's token. A claim whose deadline passed stays
// current until the stream notices and makes the task available again (see
// advance): until then no one else holds the task, so a late Ack or Nack
// is accepted.
//
// current returns a nil entry and a nil error when the claim ended because
// the task was acked (or deleted), so that Ack is idempotent, and an error
// wrapping peonify.ErrLeaseLost when the claim ended for any other reason.
// s.mu must be held.
func (s *Stream) current(d peonify.Delivery) (*entry, error) {
	e, _ := d.Ref.(*entry)
	if e == nil || e.owner != s {
		if d.Task == nil {
			return nil, errors.New("memstream: delivery has no Task: pass the Delivery exactly as Poll returned it")
		}
		e = s.byID[d.Task.ID]
		if e == nil {
			return nil, nil
		}
	}
	switch {
	case e.token != d.Token:
		return nil, leaseLost(e, d, "the task was claimed again")
	case e.st == stateGone || e.st == stateDone:
		return nil, nil
	case e.st == stateCancelled:
		return nil, fmt.Errorf("memstream: claim %d of task %s is stale: %w (%w)", d.Token, e.task.ID, peonify.ErrCancelled, peonify.ErrLeaseLost)
	case e.st != stateRunning:
		return nil, leaseLost(e, d, "the claim already ended (nacked, or its lease expired)")
	}
	return e, nil
}

// acked is the error of a Nack or Extend whose task was already acked.
func acked(d peonify.Delivery) error {
	id := "?"
	if e, ok := d.Ref.(*entry); ok && e != nil {
		id = e.task.ID
	} else if d.Task != nil {
		id = d.Task.ID
	}
	return fmt.Errorf("memstream: claim %d of task %s is stale: the task was already acked: %w", d.Token, id, peonify.ErrLeaseLost)
}

func leaseLost(e *entry, d peonify.Delivery, why string) error {
	return fmt.Errorf("memstream: claim %d of task %s is stale: %s: %w", d.Token, e.task.ID, why, peonify.ErrLeaseLost)
}

// Ack completes the deliveries' tasks: a task acked with a non-nil
// Delivery.Result, or of a workflow, is kept in StateDone with its result
// for Config.ResultRetention; others are forgotten. The dependents of a
// workflow task are released in the same step, under the stream's lock:
// each one whose parents have all finished becomes pending. Acking a
// delivery twice is not an error, and releases nothing twice. A delivery whose claim is no longer current is
// left alone and reported with an error wrapping peonify.ErrLeaseLost; the
// other deliveries of the call are still acked.
//
// A claim is current until the task is acked, nacked or made available
// again. The stream makes the task of an expired lease available again
// when it next looks (in Poll and the Inspector methods), so an Ack that
// arrives after the deadline but before that is accepted: no one else holds
// the task. The Ack of a cancelled task's claim is ignored.
func (s *Stream) Ack(_ context.Context, ds ...peonify.Delivery) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return peonify.ErrClosed
	}
	var errs []error
	freed := false
	for _, d := range ds {
		e, err := s.current(d)
		if err != nil {
			if !errors.Is(err, peonify.ErrCancelled) {
				errs = append(errs, err)
			}
			continue
		}
		if e == nil {
			continue
		}
		s.leased.remove(e)
		s.complete(e, d.Result, now)
		freed = freed || s.freesPermit(e)
	}
	if freed {
		s.signal() // a task a limit held back may start now
	}
	return errors.Join(errs...)
}

// forget removes e, which is in no heap and not in the dead list, from the
// indexes.
func (s *Stream) forget(e *entry) {
	e.st = stateGone
	delete(s.byID, e.task.ID)
	s.releaseUnique(e)
	if wf := e.task.Workflow; wf != "" {
		if set := s.workflows[wf]; set != nil {
			delete(set, e)
			if len(set) == 0 {
				delete(s.workflows, wf)
			}
		}
	}
	s.notify(e)
	if len(s.byID) == 0 && s.peak > 4096 {
		// Maps do not shrink: give back the memory of a large burst.
		s.byID, s.byUnique, s.peak = make(map[string]*entry), make(map[string]*entry), 0
		s.workflows = make(map[string]map[*entry]struct{})
	}
}

func (s *Stream) releaseUnique(e *entry) {
	if k := e.task.UniqueKey; k != "" && s.byUnique[k] == e {
		delete(s.byUnique, k)
	}
}

// Nack hands a delivery back (see peonify.Outcome):
//
//   - OutcomeFailed: the attempt counts, Reason becomes the task's
//     LastError, and it is available again after Delay.
//   - OutcomeReleased: the attempt does not count and the task is available
//     again after Delay; with no Delay it keeps its place in line.
//   - OutcomeDead: the task becomes dead with Reason and its attempts, and
//     stays inspectable until retried, deleted, purged or pushed out by
//     Config.MaxDead newer dead tasks.
//
// A stale delivery is left alone and reported with an error wrapping
// peonify.ErrLeaseLost. Like Ack, Nack accepts a claim whose deadline
// passed as long as the stream has not made the task available again.
func (s *Stream) Nack(_ context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	opts, err := opts.Normalize()
	if err != nil {
		return fmt.Errorf("memstream: %w", err)
	}
	now := s.now()
	e, err := s.lockCurrent(d)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.leased.remove(e)
	e.updated = now
	switch opts.Outcome {
	case peonify.OutcomeFailed:
		e.lastError = opts.Reason
		s.makeAvailable(e, now, opts.Delay)
	case peonify.OutcomeReleased:
		e.attempts--
		if opts.Delay > 0 {
			s.makeAvailable(e, now, opts.Delay)
		} else {
			e.st = statePending
			s.pushReady(e)
			s.signal()
		}
	case peonify.OutcomeDead:
		e.lastError = opts.Reason
		s.bury(e)
		s.settle(e, "dead", now)
	}
	if s.freesPermit(e) {
		s.signal() // a task a limit held back may start now
	}
	return nil
}

// makeAvailable queues e to be delivered after delay from now. s.mu must
// be held.
func (s *Stream) makeAvailable(e *entry, now time.Time, delay time.Duration) {
	s.makeAvailableAt(e, now, now.Add(delay))
}

// makeAvailableAt queues e, which is in no queue, to be delivered at at:
// scheduled if at is after now, else pending, and wakes pollers. s.mu must
// be held.
func (s *Stream) makeAvailableAt(e *entry, now, at time.Time) {
	if at.After(now) {
		e.avail = at
		e.st = stateScheduled
		s.pushScheduled(e)
		s.arm(e.avail, now)
		return
	}
	e.avail = now
	e.st = statePending
	s.pushReady(e)
	s.signal()
}

// bury appends e, which is in no heap, to the dead list and drops the
// oldest dead tasks beyond Config.MaxDead. s.mu must be held.
func (s *Stream) bury(e *entry) {
	e.st = stateDead
	s.releaseUnique(e)
	s.dead.push(e)
	s.notify(e)
	for s.dead.n > s.maxDead {
		old := s.dead.head
		s.dead.unlink(old)
		s.forget(old)
	}
}

// Extend renews the lease of d so that it ends lease from now, and returns
// d with its new Deadline; the Token does not change. A stale delivery, or
// one whose Deadline has passed, is reported with an error wrapping
// peonify.ErrLeaseLost: an expired lease is not revived.
func (s *Stream) Extend(_ context.Context, d peonify.Delivery, lease time.Duration) (peonify.Delivery, error) {
	if lease <= 0 {
		return d, fmt.Errorf("memstream: Extend lease is %s: it must be positive", lease)
	}
	now := s.now()
	e, err := s.lockCurrent(d)
	if err != nil {
		return d, err
	}
	defer s.mu.Unlock()
	if !now.Before(e.deadline) {
		return d, leaseLost(e, d, "its lease ended at "+e.deadline.Format(time.RFC3339Nano))
	}
	s.leased.remove(e)
	e.deadline = now.Add(lease)
	e.updated = now
	s.pushLeased(e)
	s.arm(e.deadline, now)
	d.Deadline = e.deadline
	d.Ref = e
	return d, nil
}

// Enqueue stores copies of tasks, so the caller may reuse them afterwards.
// Like every peonify.Enqueuer it first fills each task's empty ID and zero
// EnqueuedAt in place (see peonify.Task.Prepare). If any task is invalid,
// Enqueue stores none and returns its *peonify.InvalidTaskError.
//
// A task whose ID is already stored (pending, scheduled, running or dead),
// or whose UniqueKey belongs to a live task (pending, scheduled or running),
// is not stored; the others are, and Enqueue returns a
// *peonify.DuplicateError listing the duplicates.
//
// A task with a RunAt in the future is scheduled until then.
func (s *Stream) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, t := range tasks {
		if err := t.Validate(); err != nil {
			return err
		}
	}
	now := s.now()
	for _, t := range tasks {
		if err := t.Prepare(now); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return peonify.ErrClosed
	}
	var dups []string
	readyNow := false
	for _, t := range tasks {
		if s.byID[t.ID] != nil || (t.UniqueKey != "" && s.byUnique[t.UniqueKey] != nil) {
			dups = append(dups, t.ID)
			continue
		}
		e := s.store(t, now)
		if t.RunAt.After(now) {
			e.avail = t.RunAt
			e.st = stateScheduled
			s.pushScheduled(e)
			s.arm(e.avail, now)
			continue
		}
		e.avail = t.EnqueuedAt
		if !t.RunAt.IsZero() {
			e.avail = t.RunAt
		}
		e.st = statePending
		s.pushReady(e)
		readyNow = true
	}
	s.peak = max(s.peak, len(s.byID))
	if readyNow {
		s.signal()
	}
	if dups != nil {
		return &peonify.DuplicateError{IDs: dups}
	}
	return nil
}

// store makes an entry of a copy of t and indexes it by ID, UniqueKey and
// workflow; the caller queues it. s.mu must be held.
func (s *Stream) store(t *peonify.Task, now time.Time) *entry {
	e := &entry{owner: s, task: *t, prio: t.Priority, updated: now, pos: -1}
	e.t = &e.task
	e.task.Attempt = 0
	e.task.LastError = ""
	if t.Payload != nil {
		e.task.Payload = append(make([]byte, 0, len(t.Payload)), t.Payload...)
	}
	if t.Headers != nil {
		e.task.Headers = make(map[string]string, len(t.Headers))
		for k, v := range t.Headers {
			e.task.Headers[k] = v
		}
	}
	if t.Parents != nil {
		e.task.Parents = append(make([]string, 0, len(t.Parents)), t.Parents...)
	}
	s.seq++
	e.seq = s.seq
	s.byID[t.ID] = e
	if t.UniqueKey != "" {
		s.byUnique[t.UniqueKey] = e
	}
	if wf := t.Workflow; wf != "" {
		set := s.workflows[wf]
		if set == nil {
			set = make(map[*entry]struct{})
			s.workflows[wf] = set
		}
		set[e] = struct{}{}
	}
	return e
}

// Close drops every stored task and makes later calls return
// peonify.ErrClosed. It is idempotent.
func (s *Stream) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	for _, e := range s.byID {
		s.notify(e) // waiters return peonify.ErrClosed
	}
	s.byID, s.byUnique = nil, nil
	s.ready, s.scheduled, s.leased = queue{}, queue{}, queue{}
	s.dead, s.waiting, s.cancelled, s.done = elist{}, elist{}, elist{}, elist{}
	s.workflows = nil
	return nil
}
