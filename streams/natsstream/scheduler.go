package natsstream

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/peonify/peonify/internal/backoff"
)

// JetStream cannot hold a message until a given time, so tasks due later
// (a RunAt ahead, a retry or release with a delay) wait on the stream's
// scheduled subject, which has its own durable consumer. The scheduler
// fetches them: one not yet due is nacked with a delay until its RunAt, so
// the server keeps the timer and delivers it again when it is due; a due
// one is published to the work subject and acknowledged. The copy carries
// a Nats-Msg-Id made of the task ID and the scheduled message's sequence,
// so a move repeated after a crash is dropped by JetStream's
// deduplication. Deliveries on the scheduled subject are never counted as
// attempts: only deliveries from the work consumer are.
const (
	schedulerBatch = 256             // messages per fetch
	schedulerWait  = 5 * time.Second // how long one fetch waits for messages
)

// startScheduler starts the scheduler goroutine once, unless the stream
// is closed.
func (s *Stream) startScheduler() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed.Load() {
		return
	}
	s.started = true
	s.bg.Go(s.runScheduler)
}

// runScheduler moves due tasks to the work subject until ctx ends,
// backing off with jitter while the server cannot be reached. Between
// fetches it also forgets expired claims.
func (s *Stream) runScheduler(ctx context.Context) {
	var wait time.Duration
	b := backoff.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		s.forgetExpired()
		err := s.scheduleOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !b.Failing() {
				s.log.Warn("natsstream: scheduler cannot fetch; retrying with backoff", "stream", s.cfg.Stream, "err", err)
			}
			wait = b.Next()
		default:
			b.Reset()
			wait = 0
		}
	}
}

// scheduleOnce runs one fetch of the scheduled subject.
func (s *Stream) scheduleOnce(ctx context.Context) error {
	if err := s.connected(); err != nil {
		return err
	}
	cons, err := s.schedConsumer(ctx)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(ctx, schedulerWait)
	defer cancel()
	batch, err := cons.Fetch(schedulerBatch, jetstream.FetchContext(fctx))
	if err != nil {
		return err
	}
	for m := range batch.Messages() {
		s.moveIfDue(ctx, m)
	}
	if err := batch.Error(); err != nil && (ctx.Err() != nil || fctx.Err() == nil) {
		return err
	}
	return nil
}

// schedConsumer returns the handle of the scheduler's consumer, looking it
// up on first use.
func (s *Stream) schedConsumer(ctx context.Context) (jetstream.Consumer, error) {
	s.mu.Lock()
	c := s.sched
	s.mu.Unlock()
	if c != nil {
		return c, nil
	}
	name := s.cfg.schedulerConsumer()
	c, err := s.js.Consumer(ctx, s.cfg.Stream, name)
	if err != nil {
		return nil, s.setupError("consumer "+name+" of stream "+s.cfg.Stream, err)
	}
	s.mu.Lock()
	s.sched = c
	s.mu.Unlock()
	return c, nil
}

// moveIfDue publishes a due scheduled message to the work subject, or
// asks the server to deliver it again when it is due.
func (s *Stream) moveIfDue(ctx context.Context, m jetstream.Msg) {
	h := m.Headers()
	var runAt time.Time
	if v := headerValue(h, HeaderRunAt); v != "" {
		runAt, _ = time.Parse(time.RFC3339Nano, v) // unreadable: due now, and Poll dead-letters it
	}
	if wait := time.Until(runAt); wait > 0 {
		if err := m.NakWithDelay(wait); err != nil {
			s.log.Warn("natsstream: scheduler could not defer a task; it comes back after its AckWait",
				"stream", s.cfg.Stream, "err", err)
		}
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		s.log.Error("natsstream: scheduler fetched a message without JetStream metadata", "stream", s.cfg.Stream, "err", err)
		return
	}
	id := taskID(h, meta.Sequence.Stream)
	c := copyHeaders(h)
	setHeader(c, HeaderID, id)
	c[HeaderMsgID] = []string{id + "@" + strconv.FormatUint(meta.Sequence.Stream, 10)}
	if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: s.subj.work, Header: c, Data: m.Data()}); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("natsstream: scheduler could not move a due task; retrying in a second",
				"stream", s.cfg.Stream, "task_id", id, "err", err)
		}
		_ = m.NakWithDelay(time.Second)
		return
	}
	if err := s.nc.Publish(m.Reply(), ackAck); err != nil {
		// The move is repeated after the AckWait and deduplicated.
		s.log.Warn("natsstream: scheduler could not acknowledge a moved task", "stream", s.cfg.Stream, "task_id", id, "err", err)
	}
}

// headerValue returns the first value of header name, in any spelling,
// the exact one first.
func headerValue(h nats.Header, name string) string {
	if vs := h[name]; len(vs) > 0 {
		return vs[0]
	}
	return foldValue(h, name)
}

// taskID returns the task ID of a message as decodeTask reads it.
func taskID(h nats.Header, seq uint64) string {
	if id := headerValue(h, HeaderID); id != "" {
		return id
	}
	if id := headerValue(h, HeaderMsgID); id != "" {
		return id
	}
	return "seq-" + strconv.FormatUint(seq, 10)
}
