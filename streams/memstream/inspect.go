package memstream

import (
	"bytes"
	"context"
	"fmt"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/listing"
)

// Counts returns the number of tasks in each state, after moving scheduled
// tasks that fell due and expired leases as Poll would. StateDone counts
// the done tasks kept (see Config.ResultRetention).
func (s *Stream) Counts(ctx context.Context) (map[peonify.State]int, error) {
	if _, err := s.lockAdvancedCtx(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	return map[peonify.State]int{
		peonify.StatePending:   s.ready.len(),
		peonify.StateScheduled: s.scheduled.len(),
		peonify.StateRunning:   s.leased.len(),
		peonify.StateDead:      s.dead.n,
		peonify.StateWaiting:   s.waiting.n,
		peonify.StateCancelled: s.cancelled.n,
		peonify.StateDone:      s.done.n,
	}, nil
}

// List returns up to opts.Limit tasks in opts.State (and of opts.Type and
// with opts.Key, when set) whose ID sorts after opts.After, ordered by ID.
// To page, pass the last ID of a page as the next page's After. Listing
// StateDone lists the done tasks kept (see Config.ResultRetention).
func (s *Stream) List(ctx context.Context, opts peonify.ListOptions) ([]peonify.TaskInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts, err := opts.Normalize()
	if err != nil {
		return nil, fmt.Errorf("memstream: %w", err)
	}
	want, err := parseState(opts.State, "ListOptions.State")
	if err != nil {
		return nil, err
	}
	if _, err := s.lockAdvanced(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	page := listing.New(opts, func(e *entry) *peonify.Task { return &e.task })
	add := page.Add
	switch want {
	case statePending:
		s.ready.each(add)
	case stateScheduled:
		s.scheduled.each(add)
	case stateRunning:
		s.leased.each(add)
	case stateDead:
		s.dead.each(add)
	case stateWaiting:
		s.waiting.each(add)
	case stateCancelled:
		s.cancelled.each(add)
	case stateDone:
		s.done.each(add)
	}
	pick := page.Items()
	infos := make([]peonify.TaskInfo, len(pick))
	for i, e := range pick {
		infos[i] = e.info()
	}
	return infos, nil
}

// parseState maps a public state to the stream's, or explains what is
// wrong with it, naming field.
func parseState(st peonify.State, field string) (state, error) {
	switch st {
	case peonify.StatePending:
		return statePending, nil
	case peonify.StateScheduled:
		return stateScheduled, nil
	case peonify.StateRunning:
		return stateRunning, nil
	case peonify.StateDead:
		return stateDead, nil
	case peonify.StateWaiting:
		return stateWaiting, nil
	case peonify.StateCancelled:
		return stateCancelled, nil
	case peonify.StateDone:
		return stateDone, nil
	case "":
		return 0, fmt.Errorf("memstream: %s is empty: choose one of %v", field, peonify.States)
	}
	return 0, fmt.Errorf("memstream: %s %q is unknown: choose one of %v", field, st, peonify.States)
}

// info describes e with a deep copy of its task. s.mu must be held.
func (e *entry) info() peonify.TaskInfo {
	t := e.t.Clone()
	t.Attempt = e.attempts
	t.LastError = e.lastError
	ti := peonify.TaskInfo{
		Task:      *t,
		State:     e.st.public(),
		Attempts:  e.attempts,
		LastError: e.lastError,
		UpdatedAt: e.updated,
		Progress:  e.progress,
	}
	if e.st == stateDone || e.st == stateGone {
		ti.Result = bytes.Clone(e.result)
	}
	if e.st == stateRunning {
		ti.LeaseUntil = e.deadline
	}
	return ti
}

// Get returns the task with the given ID, or an error wrapping
// peonify.ErrNotFound (a task acked without a result, and not in a
// workflow, is not kept).
func (s *Stream) Get(ctx context.Context, id string) (peonify.TaskInfo, error) {
	if _, err := s.lockAdvancedCtx(ctx); err != nil {
		return peonify.TaskInfo{}, err
	}
	defer s.mu.Unlock()
	e := s.byID[id]
	if e == nil {
		return peonify.TaskInfo{}, fmt.Errorf("memstream: task %q: %w", id, peonify.ErrNotFound)
	}
	return e.info(), nil
}

// Retry makes the given dead tasks, or every dead task when no ids are
// given, pending again with no attempts counted and no last error. IDs that
// are unknown or not dead are skipped. It returns how many tasks it retried.
//
// A retried task takes back its UniqueKey unless another live task holds
// it meanwhile; then both stay, and the key stays with the other one.
func (s *Stream) Retry(ctx context.Context, ids ...string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, peonify.ErrClosed
	}
	n := 0
	revive := func(e *entry) {
		s.dead.unlink(e)
		e.attempts = 0
		e.lastError = ""
		e.updated = now
		e.avail = now
		e.st = statePending
		if k := e.task.UniqueKey; k != "" && s.byUnique[k] == nil {
			s.byUnique[k] = e
		}
		s.pushReady(e)
		n++
	}
	if len(ids) == 0 {
		for s.dead.head != nil {
			revive(s.dead.head)
		}
	}
	for _, id := range ids {
		if e := s.byID[id]; e != nil && e.st == stateDead {
			revive(e)
		}
	}
	if n > 0 {
		s.signal()
	}
	return n, nil
}

// Delete removes the given tasks unless they are running. Unknown IDs and
// running tasks are skipped. It returns how many tasks it removed. The
// dependents of a deleted workflow task that wait for it are cancelled
// (or released, if they allow failed parents), as if it had been.
func (s *Stream) Delete(ctx context.Context, ids ...string) (int, error) {
	now, err := s.lockAdvancedCtx(ctx)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	n := 0
	turn := false
	for _, id := range ids {
		if e := s.byID[id]; e != nil && e.st != stateRunning {
			turn = turn || s.holdsTurn(e)
			s.remove(e)
			s.settle(e, "deleted", now)
			n++
		}
	}
	if turn {
		s.signal() // the next task of an ordered key may start now
	}
	return n, nil
}

// remove deletes e, which is not running, from the stream. s.mu must be
// held.
func (s *Stream) remove(e *entry) {
	switch e.st {
	case statePending:
		s.ready.remove(e)
	case stateScheduled:
		s.scheduled.remove(e)
	case stateDead:
		s.dead.unlink(e)
	case stateWaiting:
		s.waiting.unlink(e)
	case stateCancelled:
		s.cancelled.unlink(e)
	case stateDone:
		s.done.unlink(e)
	}
	s.forget(e)
}

// Purge removes every task in state and returns how many it removed.
// Every state but StateRunning may be purged: running tasks cannot be,
// ack or nack them, or let their leases expire (or Cancel them). The
// dependents of a purged workflow task that wait for it are cancelled (or
// released, if they allow failed parents), as if it had been.
func (s *Stream) Purge(ctx context.Context, st peonify.State) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	want, err := parseState(st, "Purge state")
	if err != nil {
		return 0, err
	}
	if want == stateRunning {
		return 0, fmt.Errorf("memstream: cannot purge %s tasks: ack or nack them, or let their leases expire", st)
	}
	now, err := s.lockAdvanced()
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	n := 0
	var gone []*entry // removed tasks that may have dependents
	switch want {
	case statePending:
		for _, e := range s.ready.drain() {
			s.forget(e)
			gone = append(gone, e)
			n++
		}
	case stateScheduled:
		for _, e := range s.scheduled.drain() {
			s.forget(e)
			gone = append(gone, e)
			n++
		}
		if n > 0 && len(s.limits) > 0 {
			s.signal() // a task waiting for its retry may have held its key's turn
		}
	case stateDead:
		for s.dead.head != nil {
			e := s.dead.head
			s.dead.unlink(e)
			s.forget(e)
			n++
		}
	case stateWaiting, stateCancelled, stateDone:
		l := map[state]*elist{stateWaiting: &s.waiting, stateCancelled: &s.cancelled, stateDone: &s.done}[want]
		for l.head != nil {
			e := l.head
			l.unlink(e)
			s.forget(e)
			gone = append(gone, e)
			n++
		}
	}
	for _, e := range gone {
		s.settle(e, "deleted", now)
	}
	return n, nil
}
