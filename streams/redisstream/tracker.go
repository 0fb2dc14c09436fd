package redisstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
	"github.com/redis/go-redis/v9"
)

var (
	_ peonify.Tracker       = (*Stream)(nil)
	_ peonify.WorkflowStore = (*Stream)(nil)
)

// waitRecheck is how often Wait looks at its task again without being
// woken: a notification may be lost (the subscription reconnected).
var waitRecheck = 2 * time.Second

// Results returns the results of the done tasks among ids that have one
// and are kept (see Config.ResultRetention), by ID, in one script run.
func (s *Stream) Results(ctx context.Context, ids ...string) (map[string][]byte, error) {
	if s.closed.Load() {
		return nil, peonify.ErrClosed
	}
	out := make(map[string][]byte)
	if len(ids) == 0 {
		return out, nil
	}
	args := append([]any{s.cfg.ResultRetention.Milliseconds()}, strs(ids)...)
	res, err := s.run(ctx, resultsScript, args...).Slice()
	if err != nil {
		return nil, s.redisError("reading task results", err)
	}
	for i := 0; i+1 < len(res); i += 2 {
		id, _ := res[i].(string)
		r, _ := res[i+1].(string)
		out[id] = []byte(r)
	}
	return out, nil
}

// SetProgress records p as the progress of the task that d delivered,
// fenced like Ack: it returns an error wrapping peonify.ErrLeaseLost if
// the claim is no longer current, or peonify.ErrCancelled if the task was
// cancelled while it ran. The progress is kept until the task is removed
// (acked without being kept, deleted, trimmed).
func (s *Stream) SetProgress(ctx context.Context, d peonify.Delivery, p peonify.Progress) error {
	if d.Task == nil {
		return errors.New("redisstream: SetProgress of a delivery without a task")
	}
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	eid := ref(d)
	if eid == "" {
		return fmt.Errorf("redisstream: SetProgress of task %s, which is not a delivery from Poll: %w", d.Task.ID, peonify.ErrLeaseLost)
	}
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = time.Now()
	}
	if n := peonify.MaxProgressMessageLen; len(p.Message) > n {
		for n > 0 && !utf8.RuneStart(p.Message[n]) {
			n--
		}
		p.Message = p.Message[:n]
	}
	n, err := s.run(ctx, progressScript, eid, d.Token, d.Task.ID, formatProgress(p)).Int()
	if err != nil {
		return s.redisError("storing the progress of task "+d.Task.ID, err)
	}
	switch n {
	case 0:
		return fmt.Errorf("redisstream: progress of task %s not stored: %w", d.Task.ID, peonify.ErrLeaseLost)
	case 2:
		s.untrack(d) // neither acked nor nacked: its entry is gone
		return fmt.Errorf("redisstream: progress of task %s not stored: %w", d.Task.ID, peonify.ErrCancelled)
	}
	return nil
}

// Cancel cancels the tasks with these ids that have not finished, with
// the reason "cancelled by request", in one script run per 500: waiting,
// pending and scheduled tasks move to peonify.StateCancelled, and so do
// running ones, at once: their claim ends (their permits under limits
// are free), so their Ack and Nack are stale, and their Extend and
// SetProgress return an error wrapping peonify.ErrCancelled. The waiting
// dependents of a cancelled task in a workflow are cancelled with it
// (unless they allow failed parents). It returns how many of ids it
// cancelled.
func (s *Stream) Cancel(ctx context.Context, ids ...string) (int, error) {
	if s.closed.Load() {
		return 0, peonify.ErrClosed
	}
	total := 0
	for chunk := range slices.Chunk(ids, inspectPage) {
		n, released, err := s.cancelRun(ctx, cancelScript, strs(chunk)...)
		if err != nil {
			return total, s.redisError("cancelling tasks", err)
		}
		total += n
		if released > 0 {
			s.signal()
		}
	}
	return total, nil
}

// cancelRun runs a script that returns {n, tasks added to the stream}.
func (s *Stream) cancelRun(ctx context.Context, sc *redis.Script, args ...any) (n, released int, err error) {
	res, err := s.runDurable(ctx, sc, args...).Int64Slice()
	if err != nil {
		return 0, 0, err
	}
	if len(res) != 2 {
		return 0, 0, errors.New("unexpected reply")
	}
	return int(res[0]), int(res[1]), nil
}

// Wait waits until the task with this id has finished (done, dead or
// cancelled) and returns it. The scripts that finish tasks publish their
// IDs on the queue's channel (Keys.Finished), which one subscription per
// Stream, opened by the first Wait, hands to the waiters; each also looks
// again every two seconds, in case a notification was lost. It returns
// an error wrapping peonify.ErrNotFound if the task is not stored, or
// disappears (a done task that has no result and no workflow is not
// kept: see Config.ResultRetention), and ctx's error if ctx ends first.
func (s *Stream) Wait(ctx context.Context, id string) (peonify.TaskInfo, error) {
	if s.closed.Load() {
		return peonify.TaskInfo{}, peonify.ErrClosed
	}
	ch := make(chan struct{}, 1)
	if err := s.addWaiter(ctx, id, ch); err != nil {
		return peonify.TaskInfo{}, err
	}
	defer s.removeWaiter(id, ch)
	tick := time.NewTicker(waitRecheck)
	defer tick.Stop()
	for {
		info, err := s.Get(ctx, id)
		if err != nil || info.State.Finished() {
			return info, err
		}
		select {
		case <-ctx.Done():
			return peonify.TaskInfo{}, context.Cause(ctx)
		case <-s.closing:
			return peonify.TaskInfo{}, peonify.ErrClosed
		case <-ch:
		case <-tick.C:
		}
	}
}

// waiters is the subscription of Wait: one per Stream, shared by its
// waiters.
type waiters struct {
	mu   sync.Mutex
	sub  *redis.PubSub
	byID map[string]map[chan struct{}]struct{}
}

// addWaiter registers ch to receive when task id finishes, subscribing
// first if this is the Stream's first waiter: when it returns nil, no
// notification is missed.
func (s *Stream) addWaiter(ctx context.Context, id string, ch chan struct{}) error {
	w := &s.waiters
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	if w.sub == nil {
		sub := s.client.Subscribe(ctx, s.keys.Finished)
		if _, err := sub.Receive(ctx); err != nil {
			_ = sub.Close()
			return s.redisError("subscribing to finished tasks", err)
		}
		w.sub = sub
		msgs := sub.Channel(redis.WithChannelSize(1000))
		s.waitBg.Go(func(ctx context.Context) { s.dispatch(ctx, msgs) })
		w.byID = make(map[string]map[chan struct{}]struct{})
	}
	set := w.byID[id]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		w.byID[id] = set
	}
	set[ch] = struct{}{}
	return nil
}

// removeWaiter forgets ch.
func (s *Stream) removeWaiter(id string, ch chan struct{}) {
	w := &s.waiters
	w.mu.Lock()
	defer w.mu.Unlock()
	if set := w.byID[id]; set != nil {
		delete(set, ch)
		if len(set) == 0 {
			delete(w.byID, id)
		}
	}
}

// dispatch wakes the waiters of the tasks that msgs announce finished.
func (s *Stream) dispatch(ctx context.Context, msgs <-chan *redis.Message) {
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			w := &s.waiters
			w.mu.Lock()
			for id := range strings.SplitSeq(m.Payload, "\n") {
				for ch := range w.byID[id] {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			}
			w.mu.Unlock()
		}
	}
}

// stopWaiters ends the subscription of Wait.
func (s *Stream) stopWaiters(ctx context.Context) error {
	close(s.closing)
	w := &s.waiters
	w.mu.Lock()
	sub := w.sub
	w.sub = nil
	w.mu.Unlock()
	s.waitBg.Cancel()
	if sub != nil {
		_ = sub.Close()
	}
	if err := s.waitBg.Wait(ctx); err != nil {
		return fmt.Errorf("redisstream: Close gave up waiting for the subscription of Wait: %w", err)
	}
	return nil
}
