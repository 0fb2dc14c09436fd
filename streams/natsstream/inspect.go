package natsstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/listing"
)

// maxScan bounds how many messages of one subject List, Get, Delete and
// Retry read in one call. JetStream has no index by task ID, so they read
// the messages one by one, in stream order.
const maxScan = 10000

// Where the Inspector finds tasks:
//
//   - pending: on Config.Subject, not yet delivered by the work consumer
//     (stream sequence above the consumer's delivered sequence);
//   - running: on Config.Subject, delivered and not yet acknowledged. A
//     task whose lease ran out shows as running until it is delivered again;
//   - scheduled: on the scheduled subject (a RunAt ahead, a retry delay);
//   - dead: in Config.DeadStream;
//   - done: never, because acknowledged tasks are removed.

// handles returns the task stream and the dead-letter stream, looking them
// up on first use.
func (s *Stream) handles(ctx context.Context) (main, dead jetstream.Stream, err error) {
	s.mu.Lock()
	main, dead = s.main, s.dead
	s.mu.Unlock()
	if main == nil {
		if main, err = s.js.Stream(ctx, s.cfg.Stream); err != nil {
			return nil, nil, s.setupError("stream "+s.cfg.Stream, err)
		}
	}
	if dead == nil {
		if dead, err = s.js.Stream(ctx, s.cfg.DeadStream); err != nil {
			return nil, nil, s.setupError("dead-letter stream "+s.cfg.DeadStream, err)
		}
	}
	s.mu.Lock()
	s.main, s.dead = main, dead
	s.mu.Unlock()
	return main, dead, nil
}

// delivered returns the work consumer's delivered stream sequence: work
// messages at or below it are running, those above it pending.
func (s *Stream) delivered(ctx context.Context) (uint64, error) {
	cons, err := s.workConsumer(ctx)
	if err != nil {
		return 0, err
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("natsstream: reading consumer %s: %w", s.cfg.Consumer, err)
	}
	return ci.Delivered.Stream, nil
}

// scan calls fn with each message on subject in st, in stream order, until
// fn returns false or limit messages were read.
func scan(ctx context.Context, st jetstream.Stream, subject string, limit int, fn func(*jetstream.RawStreamMsg) bool) error {
	seq := uint64(1)
	for n := 0; n < limit; n++ {
		rm, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("natsstream: reading subject %s: %w", subject, err)
		}
		if !fn(rm) {
			return nil
		}
		seq = rm.Sequence + 1
	}
	return nil
}

// info describes a stored message as the Inspector shows it.
func (s *Stream) info(rm *jetstream.RawStreamMsg, state peonify.State) peonify.TaskInfo {
	dec, _ := decodeTask(rm.Header, rm.Data, rm.Time, rm.Sequence)
	ti := peonify.TaskInfo{Task: dec.task, State: state, Attempts: dec.attempts, LastError: dec.task.LastError, UpdatedAt: rm.Time}
	switch state {
	case peonify.StateDead:
		if dec.deadReason != "" {
			ti.LastError = dec.deadReason
		}
		if !dec.deadAt.IsZero() {
			ti.UpdatedAt = dec.deadAt
		}
	case peonify.StateRunning:
		// JetStream does not say how often a message was delivered, nor
		// when its lease ends, except to the process holding it.
		ti.Attempts = dec.attempts + 1
		if c := s.claims.get(rm.Sequence); c != nil {
			ti.Attempts = c.task.Attempt
			ti.LeaseUntil = s.origin.Add(time.Duration(c.deadline.Load()))
		}
	}
	return ti
}

// workState tells pending from running for a message on the work subject.
func workState(seq, delivered uint64) peonify.State {
	if seq > delivered {
		return peonify.StatePending
	}
	return peonify.StateRunning
}

// Counts returns the number of tasks in each state from the servers'
// counters, without reading messages: pending and running are the work
// consumer's pending and acknowledgement-pending counts.
func (s *Stream) Counts(ctx context.Context) (map[peonify.State]int, error) {
	main, dead, err := s.handles(ctx)
	if err != nil {
		return nil, err
	}
	cons, err := s.workConsumer(ctx)
	if err != nil {
		return nil, err
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("natsstream: reading consumer %s: %w", s.cfg.Consumer, err)
	}
	si, err := main.Info(ctx, jetstream.WithSubjectFilter(s.subj.scheduled))
	if err != nil {
		return nil, fmt.Errorf("natsstream: reading stream %s: %w", s.cfg.Stream, err)
	}
	di, err := dead.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("natsstream: reading stream %s: %w", s.cfg.DeadStream, err)
	}
	return map[peonify.State]int{
		peonify.StatePending:   int(ci.NumPending),
		peonify.StateRunning:   ci.NumAckPending,
		peonify.StateScheduled: int(si.State.Subjects[s.subj.scheduled]),
		peonify.StateDead:      int(di.State.Msgs),
	}, nil
}

// List returns tasks in opts.State ordered by ID. It reads the messages
// of that state one by one, at most 10000 of them (the oldest), so it
// suits queues of thousands of tasks rather than millions. Done tasks are
// not kept, so that list is always empty.
func (s *Stream) List(ctx context.Context, opts peonify.ListOptions) ([]peonify.TaskInfo, error) {
	opts, err := opts.Normalize()
	if err != nil {
		return nil, fmt.Errorf("natsstream: %w", err)
	}
	main, dead, err := s.handles(ctx)
	if err != nil {
		return nil, err
	}
	page := listing.Infos(opts)
	add := func(ti peonify.TaskInfo) {
		if opts.Key == "" || ti.Task.Key == opts.Key {
			page.Add(ti)
		}
	}
	switch opts.State {
	case peonify.StatePending, peonify.StateRunning:
		delivered, err := s.delivered(ctx)
		if err != nil {
			return nil, err
		}
		err = scan(ctx, main, s.subj.work, maxScan, func(rm *jetstream.RawStreamMsg) bool {
			if st := workState(rm.Sequence, delivered); st == opts.State {
				add(s.info(rm, st))
			}
			return true
		})
	case peonify.StateScheduled:
		err = scan(ctx, main, s.subj.scheduled, maxScan, func(rm *jetstream.RawStreamMsg) bool {
			add(s.info(rm, peonify.StateScheduled))
			return true
		})
	case peonify.StateDead:
		err = scan(ctx, dead, s.subj.dead, maxScan, func(rm *jetstream.RawStreamMsg) bool {
			add(s.info(rm, peonify.StateDead))
			return true
		})
	case peonify.StateDone, peonify.StateWaiting, peonify.StateCancelled:
	default:
		return nil, fmt.Errorf("natsstream: List of unknown state %q: use one of %v", opts.State, peonify.States)
	}
	if err != nil {
		return nil, err
	}
	return page.Items(), nil
}

// Get returns the task with the given ID: from the dead-letter stream,
// else the scheduled subject, else the work subject. It reads messages one
// by one, like List.
func (s *Stream) Get(ctx context.Context, id string) (peonify.TaskInfo, error) {
	main, dead, err := s.handles(ctx)
	if err != nil {
		return peonify.TaskInfo{}, err
	}
	var (
		found bool
		ti    peonify.TaskInfo
	)
	match := func(state peonify.State) func(rm *jetstream.RawStreamMsg) bool {
		return func(rm *jetstream.RawStreamMsg) bool {
			if taskID(rm.Header, rm.Sequence) != id {
				return true
			}
			found, ti = true, s.info(rm, state)
			return false
		}
	}
	if err := scan(ctx, dead, s.subj.dead, maxScan, match(peonify.StateDead)); err != nil || found {
		return ti, err
	}
	if err := scan(ctx, main, s.subj.scheduled, maxScan, match(peonify.StateScheduled)); err != nil || found {
		return ti, err
	}
	delivered, err := s.delivered(ctx)
	if err != nil {
		return ti, err
	}
	// The newest copy on the work subject wins, as a release may briefly
	// leave two.
	var last *jetstream.RawStreamMsg
	err = scan(ctx, main, s.subj.work, maxScan, func(rm *jetstream.RawStreamMsg) bool {
		if taskID(rm.Header, rm.Sequence) == id {
			last = rm
		}
		return true
	})
	if err != nil {
		return ti, err
	}
	if last == nil {
		return ti, fmt.Errorf("natsstream: task %s: %w", id, peonify.ErrNotFound)
	}
	return s.info(last, workState(last.Sequence, delivered)), nil
}

// Retry publishes dead tasks to Config.Subject again with a fresh attempt
// count, keeping the dead reason as their last error, and removes them
// from the dead-letter stream. With no ids it retries every dead task (at
// most 10000 per call; call it again for more). It returns how many it
// retried.
func (s *Stream) Retry(ctx context.Context, ids ...string) (int, error) {
	_, dead, err := s.handles(ctx)
	if err != nil {
		return 0, err
	}
	want := idSet(ids)
	n := 0
	var ferr error
	err = scan(ctx, dead, s.subj.dead, maxScan, func(rm *jetstream.RawStreamMsg) bool {
		id := taskID(rm.Header, rm.Sequence)
		if want != nil && !want[id] {
			return true
		}
		h := copyHeaders(rm.Header)
		setHeader(h, HeaderID, id)
		if reason := headerValue(h, HeaderDeadReason); reason != "" {
			setHeader(h, HeaderLastError, reason)
		}
		for _, k := range []string{HeaderAttempts, HeaderDeadReason, HeaderDeadAt, HeaderRunAt} {
			delHeader(h, k)
		}
		h[HeaderMsgID] = []string{id + "@dead-" + strconv.FormatUint(rm.Sequence, 10)}
		if _, ferr = s.js.PublishMsg(ctx, &nats.Msg{Subject: s.subj.work, Header: h, Data: rm.Data}); ferr != nil {
			ferr = fmt.Errorf("natsstream: publishing retried task %s: %w", id, ferr)
			return false
		}
		if ferr = dead.DeleteMsg(ctx, rm.Sequence); ferr != nil {
			ferr = fmt.Errorf("natsstream: removing retried task %s from %s: %w", id, s.cfg.DeadStream, ferr)
			return false
		}
		n++
		return true
	})
	return n, errors.Join(err, ferr)
}

// Delete removes the tasks with the given IDs that are pending, scheduled
// or dead; running tasks are left alone. It returns how many it removed.
func (s *Stream) Delete(ctx context.Context, ids ...string) (int, error) {
	want := idSet(ids)
	if want == nil {
		return 0, nil
	}
	main, dead, err := s.handles(ctx)
	if err != nil {
		return 0, err
	}
	delivered, err := s.delivered(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	var derr error
	remove := func(st jetstream.Stream, keep func(seq uint64) bool) func(rm *jetstream.RawStreamMsg) bool {
		return func(rm *jetstream.RawStreamMsg) bool {
			if !want[taskID(rm.Header, rm.Sequence)] || keep(rm.Sequence) {
				return true
			}
			if derr = st.DeleteMsg(ctx, rm.Sequence); derr != nil && !errors.Is(derr, jetstream.ErrMsgNotFound) {
				return false
			}
			derr = nil
			n++
			return true
		}
	}
	never := func(uint64) bool { return false }
	running := func(seq uint64) bool { return seq <= delivered }
	for _, part := range []struct {
		st   jetstream.Stream
		subj string
		keep func(uint64) bool
	}{{dead, s.subj.dead, never}, {main, s.subj.scheduled, never}, {main, s.subj.work, running}} {
		if err := scan(ctx, part.st, part.subj, maxScan, remove(part.st, part.keep)); err != nil || derr != nil {
			return n, errors.Join(err, derr)
		}
	}
	return n, nil
}

// Purge removes every task in state: StatePending empties the queue of
// tasks not yet delivered, StateScheduled drops every waiting task,
// StateDead empties the dead-letter stream. StateDone has nothing to
// remove; running tasks cannot be purged. It returns how many it removed.
func (s *Stream) Purge(ctx context.Context, state peonify.State) (int, error) {
	main, dead, err := s.handles(ctx)
	if err != nil {
		return 0, err
	}
	switch state {
	case peonify.StatePending:
		delivered, err := s.delivered(ctx)
		if err != nil {
			return 0, err
		}
		n := 0
		var derr error
		err = scan(ctx, main, s.subj.work, int(^uint(0)>>1), func(rm *jetstream.RawStreamMsg) bool {
			if rm.Sequence <= delivered {
				return true
			}
			if derr = main.DeleteMsg(ctx, rm.Sequence); derr != nil && !errors.Is(derr, jetstream.ErrMsgNotFound) {
				return false
			}
			derr = nil
			n++
			return true
		})
		return n, errors.Join(err, derr)
	case peonify.StateScheduled:
		return purgeSubject(ctx, main, s.subj.scheduled)
	case peonify.StateDead:
		return purgeSubject(ctx, dead, s.subj.dead)
	case peonify.StateDone, peonify.StateWaiting, peonify.StateCancelled:
		return 0, nil
	case peonify.StateRunning:
		return 0, errors.New("natsstream: running tasks cannot be purged: they are leased by processors; purge pending tasks, or stop the processors first")
	}
	return 0, fmt.Errorf("natsstream: Purge of unknown state %q: use one of %v", state, peonify.States)
}

// purgeSubject removes every message on subject and reports how many there
// were just before.
func purgeSubject(ctx context.Context, st jetstream.Stream, subject string) (int, error) {
	si, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("natsstream: reading stream for purge: %w", err)
	}
	n := int(si.State.Subjects[subject])
	if n == 0 {
		return 0, nil
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return 0, fmt.Errorf("natsstream: purging %s: %w", subject, err)
	}
	return n, nil
}

// idSet returns ids as a set, or nil for none.
func idSet(ids []string) map[string]bool {
	if len(ids) == 0 {
		return nil
	}
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}
