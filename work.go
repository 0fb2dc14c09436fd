package peonify

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// slot is one worker's record of the task it runs. The watchdog reads it
// to time out tasks and extend their leases; Stats reads it to list tasks
// in flight.
type slot struct {
	mu        sync.Mutex
	running   bool
	abandoned bool          // shutdown gave up on the handler
	exited    chan struct{} // closed when the worker returns
	d         Delivery
	st        *streamState
	started   time.Time
	timeoutAt time.Time
	lease     time.Duration // 0: no extension needed
	extendAt  time.Time
	extending bool
	leaseLost bool
	cancelled bool // the store reported the task cancelled
	cancel    context.CancelCauseFunc
}

// work is one worker: it runs tasks from the local queue until shutdown.
func (p *Processor) work(s *slot) {
	for {
		var j job
		select {
		case <-p.stopCh:
			return
		case j = <-p.queue:
		}
		p.dequeued()
		if p.stopping.Load() {
			p.release(j, "processor shutting down before the task started")
			return
		}
		p.execute(s, j)
		if p.stopping.Load() {
			return
		}
	}
}

// execute runs one task and settles its outcome.
func (p *Processor) execute(s *slot, j job) {
	t := j.d.Task
	h := p.wrapped[t.Type]
	if h == nil {
		p.unknown.record(0, false)
		err := fmt.Errorf("%w %q: register one with AddTaskList (registered: %s)", ErrUnknownType, t.Type, p.typeNames())
		p.deadLetter(&attempt{st: j.st, d: j.d, claimed: j.claimedAt}, err)
		return
	}

	if most := p.maxAttempts(t); t.Attempt > most {
		// Every attempt counts when it is claimed, so an attempt past the
		// limit means earlier ones never finished: the task may be crashing
		// its process. Running it again could crash this one too.
		p.deadLetter(&attempt{st: j.st, d: j.d, claimed: j.claimedAt},
			fmt.Errorf("out of attempts (%d of %d): earlier attempts never finished; the task may crash its process", t.Attempt, most))
		return
	}

	now := time.Now()
	leased := !j.d.Deadline.IsZero() && j.st.ext != nil
	if lease := j.d.Deadline.Sub(j.claimedAt); leased && now.Sub(j.claimedAt) > lease/3 {
		// The task waited in the local queue for a third of its lease:
		// renew before starting so it does not run on a lease about to end.
		d, err := p.extend(j.st, j.d, lease)
		if errors.Is(err, ErrCancelled) {
			p.counters.cancelled.Add(1)
			p.emit(Event{Kind: EventCancelled, Task: t, Stream: j.st.name, Claimed: j.claimedAt, Err: err})
			return
		}
		if err != nil {
			p.leaseLost(j, err)
			return
		}
		j.d, j.claimedAt = d, now
	}

	ctx, cancel := context.WithCancelCause(p.base)
	r := &run{p: p, s: s, st: j.st, task: t, tracker: j.st.tracker, wf: j.st.wf}
	ctx = context.WithValue(ctx, runKey{}, r)
	s.mu.Lock()
	s.running, s.d, s.st, s.started, s.cancel = true, j.d, j.st, now, cancel
	s.timeoutAt = now.Add(p.cfg.TaskTimeout)
	s.leaseLost, s.cancelled = false, false
	if leased {
		s.lease = j.d.Deadline.Sub(j.claimedAt)
		s.extendAt = j.claimedAt.Add(s.lease / 3)
	} else {
		s.lease = 0
	}
	next := s.timeoutAt
	if s.lease > 0 && s.extendAt.Before(next) {
		next = s.extendAt
	}
	s.mu.Unlock()
	p.counters.started.Add(1)
	if armed := p.watchArmed.Load(); armed == 0 || armed > next.UnixNano() {
		select {
		case p.watchKick <- struct{}{}:
		default:
		}
	}

	p.running.Add(1)
	err := p.call(ctx, h, t)
	p.running.Add(-1)
	took := time.Since(now)
	result, resultErr := r.finish()
	if resultErr != nil && (err == nil || errors.Is(err, resultErr)) {
		// The handler's result was too large: it can never be stored,
		// so no retry can succeed.
		err = SkipRetry(resultErr)
	}

	s.mu.Lock()
	d, lost, cancelled, abandoned := s.d, s.leaseLost, s.cancelled, s.abandoned
	s.running, s.cancel, s.st = false, nil, nil
	s.d = Delivery{}
	s.mu.Unlock()
	cause := context.Cause(ctx)
	cancel(nil)

	if ts := p.types[t.Type]; !cancelled {
		ts.record(took, err == nil)
	}
	a := attempt{st: j.st, d: d, claimed: j.claimedAt, started: now, took: took}
	switch {
	case abandoned:
		// Shutdown released the task already.
	case cancelled:
		p.counters.cancelled.Add(1)
		p.emit(a.event(EventCancelled, err, 0))
	case lost:
		p.counters.leaseLost.Add(1)
		p.emit(a.event(EventLeaseLost, err, 0))
	case err == nil:
		d.Result = result
		p.ack(j.st, d)
		p.counters.succeeded.Add(1)
		p.emit(a.event(EventSucceeded, nil, 0))
	default:
		p.settle(&a, err, cause)
	}
}

// attempt is one handler run being settled.
type attempt struct {
	st      *streamState
	d       Delivery
	claimed time.Time
	started time.Time // zero if the handler did not run
	took    time.Duration
}

func (a *attempt) event(kind EventKind, err error, delay time.Duration) Event {
	return Event{Kind: kind, Task: a.d.Task, Stream: a.st.name, Claimed: a.claimed, Started: a.started,
		Duration: a.took, Delay: delay, Err: err}
}

// settle decides what happens to a task whose handler returned err.
func (p *Processor) settle(a *attempt, err, cause error) {
	st, d, t := a.st, a.d, a.d.Task
	p.counters.failed.Add(1)

	if errors.Is(cause, ErrShutdown) {
		p.nack(st, d, NackOptions{Outcome: OutcomeReleased, Reason: "interrupted by shutdown: " + err.Error()})
		p.counters.released.Add(1)
		p.emit(a.event(EventReleased, err, 0))
		return
	}
	var skip *skipRetryError
	if errors.As(err, &skip) {
		p.deadLetter(a, err)
		return
	}
	var ra *retryAfterError
	hasRA := errors.As(err, &ra)
	if hasRA && ra.snooze {
		p.nack(st, d, NackOptions{Outcome: OutcomeReleased, Delay: ra.delay, Reason: err.Error()})
		p.counters.snoozed.Add(1)
		p.emit(a.event(EventSnoozed, nil, ra.delay))
		return
	}

	maxAttempts := p.maxAttempts(t)
	if errors.Is(cause, ErrTaskTimeout) && !errors.Is(err, ErrTaskTimeout) {
		err = fmt.Errorf("%w after %s: %w", ErrTaskTimeout, p.cfg.TaskTimeout, err)
	}
	if t.Attempt >= maxAttempts {
		p.deadLetter(a, fmt.Errorf("out of attempts (%d of %d): %w", t.Attempt, maxAttempts, err))
		return
	}
	delay := p.cfg.Retry.Backoff(t.Attempt)
	if hasRA {
		delay = ra.delay
	}
	p.nack(st, d, NackOptions{Outcome: OutcomeFailed, Delay: delay, Reason: err.Error()})
	p.counters.retried.Add(1)
	p.emit(a.event(EventRetried, err, delay))
}

// maxAttempts returns the attempt limit that applies to t.
func (p *Processor) maxAttempts(t *Task) int {
	if t.MaxAttempts > 0 {
		return t.MaxAttempts
	}
	return p.cfg.Retry.MaxAttempts
}

// deadLetter moves a task to its stream's dead-letter place.
func (p *Processor) deadLetter(a *attempt, err error) {
	st, d := a.st, a.d
	p.log.Warn("peonify: task is dead", "stream", st.name, "task_id", d.Task.ID, "type", d.Task.Type,
		"attempt", d.Task.Attempt, "err", err)
	p.nack(st, d, NackOptions{Outcome: OutcomeDead, Reason: err.Error()})
	p.counters.dead.Add(1)
	p.emit(a.event(EventDead, err, 0))
}

// leaseLost drops a task whose lease ended before it started.
func (p *Processor) leaseLost(j job, err error) {
	p.log.Warn("peonify: lease lost before the task started; skipping it", "stream", j.st.name,
		"task_id", j.d.Task.ID, "err", err)
	p.counters.leaseLost.Add(1)
	p.emit(Event{Kind: EventLeaseLost, Task: j.d.Task, Stream: j.st.name, Err: err})
}

// call runs the handler, turning a panic into a *PanicError. The stack is
// logged, as net/http does for a panicking request.
func (p *Processor) call(ctx context.Context, h Handler, t *Task) (err error) {
	defer func() {
		if r := recover(); r != nil {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			err = &PanicError{Value: r, Stack: buf}
			p.log.Error("peonify: task handler panicked", "task_id", t.ID, "type", t.Type, "panic", r, "stack", string(buf))
		}
	}()
	return h.Execute(ctx, t)
}

func (p *Processor) typeNames() string {
	names := make([]string, 0, len(p.wrapped))
	for typ := range p.wrapped {
		names = append(names, fmt.Sprintf("%q", typ))
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
