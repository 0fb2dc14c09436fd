package memstream

import (
	"bytes"
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
)

// elist is a doubly linked list of entries, oldest first, through their
// prev and next fields: the dead tasks, the tasks waiting for their
// parents, the cancelled ones and the kept done ones.
type elist struct {
	head, tail *entry
	n          int
}

func (l *elist) push(e *entry) {
	e.prev, e.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
	l.n++
}

func (l *elist) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = nil, nil
	l.n--
}

func (l *elist) each(f func(*entry)) {
	for e := l.head; e != nil; e = e.next {
		f(e)
	}
}

// notify wakes the Waits for e, which finished or is gone. s.mu must be
// held.
func (s *Stream) notify(e *entry) {
	if e.waiters != nil {
		close(e.waiters)
		e.waiters = nil
	}
}

// complete finishes e, a running task just acked with result: it is kept
// in stateDone if it has a result or a workflow, and forgotten otherwise,
// and its dependents are released. s.mu must be held.
func (s *Stream) complete(e *entry, result []byte, now time.Time) {
	e.updated = now
	e.acked = true
	if result != nil || e.task.Workflow != "" {
		e.st = stateDone
		if result != nil {
			e.result = bytes.Clone(result)
		}
		s.releaseUnique(e)
		s.done.push(e)
		s.notify(e)
	} else {
		s.forget(e)
	}
	s.settle(e, "done", now)
}

// expire forgets the kept done tasks whose retention ended at now. Each is
// looked at once, oldest first. s.mu must be held.
func (s *Stream) expire(now time.Time) {
	for e := s.done.head; e != nil && !now.Before(e.updated.Add(s.retention)); e = s.done.head {
		s.done.unlink(e)
		s.forget(e)
	}
}

// settle tells the dependents of e that e finished, how: "done" releases
// them (each becomes pending once every parent finished); "dead",
// "cancelled" and "deleted" cancel those that do not allow failed parents,
// and their dependents in turn, and release the others. Each task is told
// once, the first time it finishes: a task retried after it died releases
// nothing. s.mu must be held.
func (s *Stream) settle(e *entry, how string, now time.Time) {
	type finish struct {
		e   *entry
		how string
	}
	stack := []finish{{e, how}}
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if f.e.settled {
			continue
		}
		f.e.settled = true
		for _, d := range f.e.dependents {
			if d.st != stateWaiting {
				continue
			}
			if f.how == "done" || d.task.AllowFailedParents {
				if d.waitingOn--; d.waitingOn <= 0 {
					s.waiting.unlink(d)
					s.release(d, now)
				}
				continue
			}
			reason := fmt.Sprintf("parent %s %s", f.e.task.ID, f.how)
			if f.e.lastError != "" {
				reason += ": " + f.e.lastError
			}
			s.waiting.unlink(d)
			s.cancelOne(d, peonify.TruncateReason(reason), now)
			stack = append(stack, finish{d, "cancelled"})
		}
		f.e.dependents = nil
	}
}

// release makes e, a workflow task whose parents have all finished and
// which is in no queue, pending (or scheduled until its RunAt), and wakes
// pollers. s.mu must be held.
func (s *Stream) release(e *entry, now time.Time) {
	e.updated = now
	s.makeAvailableAt(e, now, e.task.RunAt)
}

// cancelOne moves e, which is in no queue or list, to stateCancelled with
// reason, without telling its dependents (see settle), and drops the
// oldest cancelled tasks beyond Config.MaxDead. s.mu must be held.
func (s *Stream) cancelOne(e *entry, reason string, now time.Time) {
	e.st = stateCancelled
	e.lastError = reason
	e.updated = now
	s.releaseUnique(e)
	s.cancelled.push(e)
	s.notify(e)
	for s.cancelled.n > s.maxDead {
		old := s.cancelled.head
		s.cancelled.unlink(old)
		s.forget(old)
	}
}

// takeOut removes e, which has not finished, from the queue or list that
// holds it. It reports whether e was running. s.mu must be held.
func (s *Stream) takeOut(e *entry) (running bool) {
	switch e.st {
	case statePending:
		s.ready.remove(e)
	case stateScheduled:
		s.scheduled.remove(e)
	case stateRunning:
		s.leased.remove(e)
		return true
	case stateWaiting:
		s.waiting.unlink(e)
	}
	return false
}

// cancel cancels the unfinished tasks among es with reason, then their
// dependents, and returns how many of es it cancelled. s.mu must be held.
func (s *Stream) cancel(es []*entry, reason string, now time.Time) int {
	var done []*entry
	freed := false
	for _, e := range es {
		if e.st.finished() || e.st == stateGone {
			continue
		}
		if s.takeOut(e) {
			freed = freed || s.freesPermit(e)
		}
		turn := s.holdsTurn(e)
		freed = freed || turn
		s.cancelOne(e, reason, now)
		done = append(done, e)
	}
	for _, e := range done {
		s.settle(e, "cancelled", now)
	}
	if freed {
		s.signal() // a task a limit held back may start now
	}
	return len(done)
}

// cancelReason is the LastError of a task cancelled by Cancel or
// CancelWorkflow.
const cancelReason = "cancelled by request"

// Results returns the results of the done tasks among ids that have one:
// tasks acked with a non-nil Delivery.Result and still kept (see
// Config.ResultRetention). Unknown IDs, and tasks not done, are left out.
func (s *Stream) Results(ctx context.Context, ids ...string) (map[string][]byte, error) {
	if _, err := s.lockAdvancedCtx(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	res := make(map[string][]byte)
	for _, id := range ids {
		if e := s.byID[id]; e != nil && e.st == stateDone && e.result != nil {
			res[id] = bytes.Clone(e.result)
		}
	}
	return res, nil
}

// SetProgress records p as the progress of the task d delivered, shown by
// Get and List while it runs and kept after. A claim that is no longer
// current is reported with an error wrapping peonify.ErrLeaseLost, and one
// of a cancelled task with an error wrapping peonify.ErrCancelled.
func (s *Stream) SetProgress(ctx context.Context, d peonify.Delivery, p peonify.Progress) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e, err := s.lockCurrent(d)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if len(p.Message) > peonify.MaxProgressMessageLen {
		m := p.Message[:peonify.MaxProgressMessageLen]
		for !utf8.ValidString(m) {
			m = m[:len(m)-1]
		}
		p.Message = m
	}
	e.progress = p
	return nil
}

// Cancel cancels the tasks with these ids that have not finished (see
// peonify.Tracker): waiting, pending, scheduled and running ones move to
// StateCancelled with the reason "cancelled by request", and the
// dependents of each in a workflow are cancelled too, unless they allow
// failed parents. A running task's claim then fails its Extend and
// SetProgress with an error wrapping peonify.ErrCancelled, and its Ack
// and Nack are ignored. Cancel returns how many of ids it cancelled.
func (s *Stream) Cancel(ctx context.Context, ids ...string) (int, error) {
	now, err := s.lockAdvancedCtx(ctx)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	es := make([]*entry, 0, len(ids))
	for _, id := range ids {
		if e := s.byID[id]; e != nil {
			es = append(es, e)
		}
	}
	return s.cancel(es, cancelReason, now), nil
}

// Wait waits until the task with this id has finished and returns it: done
// (also when it was acked without a result and so not kept), dead or
// cancelled. It is woken by the finish itself, through a channel: every
// change happens in this process, under the stream's lock. It returns an
// error wrapping peonify.ErrNotFound if no such task is stored when Wait
// starts, or if it is deleted meanwhile; ctx's error if ctx ends first;
// and peonify.ErrClosed if the stream is closed.
func (s *Stream) Wait(ctx context.Context, id string) (peonify.TaskInfo, error) {
	if _, err := s.lockAdvancedCtx(ctx); err != nil {
		return peonify.TaskInfo{}, err
	}
	e := s.byID[id]
	for {
		switch {
		case s.closed:
			s.mu.Unlock()
			return peonify.TaskInfo{}, peonify.ErrClosed
		case e == nil || (e.st == stateGone && !e.acked):
			s.mu.Unlock()
			return peonify.TaskInfo{}, fmt.Errorf("memstream: task %q: %w", id, peonify.ErrNotFound)
		case e.st.finished() || e.st == stateGone:
			info := e.info()
			s.mu.Unlock()
			return info, nil
		}
		if e.waiters == nil {
			e.waiters = make(chan struct{})
		}
		ch := e.waiters
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return peonify.TaskInfo{}, ctx.Err()
		case <-ch:
		}
		s.mu.Lock()
	}
}

// errNoWorkflow is the error for a workflow with no stored task.
func errNoWorkflow(id string) error {
	return fmt.Errorf("memstream: workflow %q has no stored task: %w", id, peonify.ErrNotFound)
}
