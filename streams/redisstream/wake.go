package redisstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/backoff"
	"github.com/redis/go-redis/v9"
)

// maxBlock caps one blocking read of the watcher, so that it looks at the
// schedule again at least this often.
const maxBlock = 500 * time.Millisecond

// Backoff of the watcher after a failed read: from watchBackoffMin doubling
// to watchBackoffMax, with jitter, so that a Redis restart does not meet a
// reconnect storm.
const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 5 * time.Second
)

// Wake returns a channel that receives when tasks are ready while the
// processor is idle: a new entry in the stream (from Peonify's Enqueue or
// from any other producer), a scheduled task or retry falling due, once
// the stream is started (see Start), and this stream's own Enqueue or
// Nack. With limits it also receives when a permit frees (this stream's
// Ack or Nack, or, once started, any process's), and when the next token
// of a rate limit that held a claim back is due. Wake does no I/O. The
// channel is never closed.
func (s *Stream) Wake() <-chan struct{} { return s.wake }

// Start starts the watcher goroutine that feeds Wake, stopped by Close.
// While the last Poll came back short it waits for the next entry with a
// blocking XREAD from the group's last delivered ID, so an idle processor
// picks up a task within about two round trips; while Poll returns full
// batches it does nothing. Start does no I/O itself and returns at once. A
// processor's Run calls it; without it, Wake receives only for this
// stream's own Enqueue and Nack. Start is idempotent; after Close it
// returns peonify.ErrClosed.
//
// The blocked read holds one of the client's pooled connections, for up to
// half a second at a time: when many streams share a client, give it a
// PoolSize well above their number (go-redis defaults to 10 per CPU).
func (s *Stream) Start(ctx context.Context) error {
	if !s.startWatcher() {
		return peonify.ErrClosed
	}
	return nil
}

// startWatcher starts the watcher once, and reports false if the stream is
// closed.
func (s *Stream) startWatcher() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return false
	}
	if s.stop == nil {
		s.stop = s.bg.Cancel
		s.bg.Go(s.watch)
	}
	return true
}

// noteDue makes Wake fire at due, when this stream has scheduled a task
// for then: the watcher may be blocked in a read that began before, and
// would only see it at its next look. Tasks other processes schedule are
// seen at that next look, within maxBlock.
func (s *Stream) noteDue(due time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop == nil || s.closed.Load() || !s.dueAt.IsZero() && !due.Before(s.dueAt) {
		return
	}
	s.dueAt = due
	wait := max(time.Until(due), 0)
	if s.dueTimer == nil {
		s.dueTimer = time.AfterFunc(wait, s.due)
	} else {
		s.dueTimer.Reset(wait)
	}
}

// due fires the timer of noteDue.
func (s *Stream) due() {
	s.mu.Lock()
	s.dueAt = time.Time{}
	s.mu.Unlock()
	s.signal()
}

// stopKey is the watcher's private stream: Close adds an entry to it to end
// a blocking read at once.
func (s *Stream) stopKey() string {
	return s.cfg.Prefix + ":{" + s.cfg.Queue + "}:wake:" + s.cfg.Consumer
}

// watch signals Wake when work shows up while the processor may be idle,
// until ctx ends.
func (s *Stream) watch(ctx context.Context) {
	b := backoff.Backoff{Min: watchBackoffMin, Max: watchBackoffMax}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.armed:
		}
		for {
			found, err := s.look(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				if !b.Failing() {
					s.cfg.Logger.Warn("redisstream: waiting for new tasks failed; retrying with backoff", "queue", s.cfg.Queue, "err", err)
				}
				// Retry after the backoff, or as soon as a Poll succeeds: the
				// server is back.
				timer := time.NewTimer(b.Next())
				select {
				case <-ctx.Done():
					timer.Stop()
					return
				case <-timer.C:
				case <-s.armed:
					timer.Stop()
				}
				continue
			}
			if b.Failing() {
				s.cfg.Logger.Info("redisstream: waiting for new tasks again", "queue", s.cfg.Queue)
				b.Reset()
			}
			if found {
				s.signal()
				break // until a Poll comes back short again
			}
		}
	}
}

// look waits up to maxBlock for work: an entry after the group's last
// delivered ID, or the first scheduled task falling due. It reports
// whether there is some.
func (s *Stream) look(ctx context.Context) (bool, error) {
	limited := s.lim.Load() != nil
	pipe := s.client.Pipeline()
	groups := pipe.XInfoGroups(ctx, s.keys.Stream)
	first := pipe.ZRangeWithScores(ctx, s.keys.Schedule, 0, 0)
	now := pipe.Time(ctx)
	var lastWake *redis.XMessageSliceCmd
	if limited && s.wakeID == "" {
		lastWake = pipe.XRevRangeN(ctx, s.keys.Limits+"wake", "+", "-", 1)
	}
	_, _ = pipe.Exec(ctx)
	if lastWake != nil {
		msgs, err := lastWake.Result()
		if err != nil {
			return false, err
		}
		s.wakeID = "0-0"
		if len(msgs) > 0 {
			s.wakeID = msgs[0].ID
		}
	}

	gs, err := groups.Result()
	if isNoGroup(err) {
		return false, s.ensureGroup(ctx)
	}
	if err != nil {
		return false, err
	}
	last := ""
	for _, g := range gs {
		if g.Name == Group {
			last = g.LastDeliveredID
		}
	}
	if last == "" {
		return false, s.ensureGroup(ctx)
	}
	zs, err := first.Result()
	if err != nil {
		return false, err
	}
	serverNow, err := now.Result()
	if err != nil {
		return false, err
	}
	block := maxBlock
	if len(zs) > 0 {
		wait := time.UnixMilli(int64(zs[0].Score)).Sub(serverNow)
		if wait <= 0 {
			return true, nil
		}
		block = min(block, wait)
	}
	streams := []string{s.keys.Stream, s.stopKey(), last, "0-0"}
	if limited {
		// Permits freed by other processes, which make held tasks ready.
		streams = []string{s.keys.Stream, s.stopKey(), s.keys.Limits + "wake", last, "0-0", s.wakeID}
	}
	res, err := s.client.XRead(ctx, &redis.XReadArgs{
		Streams: streams,
		Count:   1,
		Block:   max(block, time.Millisecond),
	}).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return len(zs) > 0 && block < maxBlock, nil // timed out: the scheduled task is due
	case err != nil:
		return false, err
	}
	found := false
	for _, st := range res {
		switch {
		case len(st.Messages) == 0:
		case st.Stream == s.keys.Stream:
			found = true
		case st.Stream == s.keys.Limits+"wake":
			s.wakeID = st.Messages[len(st.Messages)-1].ID
			found = true
		case ctx.Err() == nil:
			// A stop left over from an earlier stream with this consumer
			// name whose Close could not delete it.
			_ = s.client.Del(ctx, s.stopKey()).Err()
		}
	}
	return found, nil
}

// stopWatching stops the watcher and waits for it.
func (s *Stream) stopWatching(ctx context.Context) error {
	s.mu.Lock()
	stop := s.stop
	if s.dueTimer != nil {
		s.dueTimer.Stop()
	}
	s.mu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	// End the blocking read at once rather than after maxBlock.
	key := s.stopKey()
	ictx, cancel := context.WithTimeout(ctx, time.Second)
	pipe := s.client.Pipeline()
	pipe.XAdd(ictx, &redis.XAddArgs{Stream: key, Values: []any{"stop", "1"}})
	pipe.PExpire(ictx, key, time.Minute)
	_, _ = pipe.Exec(ictx)
	cancel()

	if err := s.bg.Wait(ctx); err != nil {
		return fmt.Errorf("redisstream: Close gave up waiting for the wake-up reader: %w", err)
	}
	ictx, cancel = context.WithTimeout(ctx, time.Second)
	_ = s.client.Del(ictx, key).Err()
	cancel()
	return nil
}
