package natsstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamkit"
)

// maxBatch caps one fetch, whatever the processor asks for.
const maxBatch = 1000

// MaxPoll returns the most tasks one Poll returns, so that the processor
// asks for no more (peonify.PollLimiter).
func (s *Stream) MaxPoll() int { return maxBatch }

// The bodies of JetStream's acknowledgements, sent to a message's reply
// subject.
var (
	ackAck      = []byte("+ACK")
	ackTerm     = []byte("+TERM")
	ackProgress = []byte("+WPI")
)

// Stream is a Peonify stream on a JetStream work queue. It implements
// peonify.Stream, Extender, Waker, Starter, Enqueuer, Inspector and
// PollLimiter.
//
// Every processor of the stream shares one durable pull consumer and
// fetches at most its free capacity; JetStream's AckWait is the lease. A
// Stream used only to enqueue starts nothing in the background. Start (or
// else the first Poll) starts, until Close, the scheduler goroutine, which
// moves tasks whose RunAt or retry delay has passed onto Config.Subject,
// and the subscription that feeds Wake.
//
// All methods are safe for concurrent use.
type Stream struct {
	js     jetstream.JetStream
	nc     *nats.Conn
	cfg    Config
	subj   subjects
	log    *slog.Logger
	margin time.Duration // an operation on a claim must start this long before its lease ends
	origin time.Time     // claim deadlines are kept as monotonic offsets from it

	mu      sync.Mutex // guards the handles, started, wakeSub and live
	work    jetstream.Consumer
	sched   jetstream.Consumer
	main    jetstream.Stream
	dead    jetstream.Stream
	started bool
	wakeSub *nats.Subscription
	live    bool // a Start saw the server take wakeSub
	lazySub sync.Once
	bg      streamkit.Group // the scheduler

	wake   chan struct{}
	claims claimSet // the claims this process holds
	closed atomic.Bool
}

var (
	_ peonify.Stream      = (*Stream)(nil)
	_ peonify.Extender    = (*Stream)(nil)
	_ peonify.Waker       = (*Stream)(nil)
	_ peonify.Starter     = (*Stream)(nil)
	_ peonify.Enqueuer    = (*Stream)(nil)
	_ peonify.Inspector   = (*Stream)(nil)
	_ peonify.PollLimiter = (*Stream)(nil)
)

// claim is the stream's record of one delivery, kept in Delivery.Ref.
type claim struct {
	s        *Stream
	msg      *nats.Msg
	seq      uint64       // stream sequence
	task     peonify.Task // the delivered task, allocated with the claim
	deadline atomic.Int64 // lease end, as an offset from Stream.origin
	done     atomic.Bool  // acked or nacked
}

// New returns a stream on the JetStream objects that Setup made from the
// same cfg. It does not contact the server: a missing stream or consumer
// is reported by the first Poll or Enqueue.
//
// The caller owns js and its connection, and closes the connection after
// Close has returned; Close does not close it. Reconnecting is the
// connection's job: give nats.Connect options such as nats.MaxReconnects(-1)
// for a processor that must outlive server restarts. While the connection is
// down, Poll, Ack, Nack and Extend return errors (the processor backs off
// and retries), and they never leave an acknowledgement buffered to be sent
// after the reconnect, when its lease may have ended.
func New(js jetstream.JetStream, cfg Config) (*Stream, error) {
	if js == nil {
		return nil, errors.New("natsstream: New needs a jetstream.JetStream (jetstream.New(nc)), got nil")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	subj := newSubjects(cfg)
	subj.next = nextSubject(js, cfg.Stream, cfg.Consumer)
	return &Stream{
		js:     js,
		nc:     js.Conn(),
		cfg:    cfg,
		subj:   subj,
		log:    cfg.Logger,
		margin: min(max(cfg.AckWait/10, 10*time.Millisecond), 2*time.Second),
		origin: time.Now(),
		wake:   make(chan struct{}, 1),
	}, nil
}

// Name returns "nats:" and the JetStream stream's name, such as
// "nats:ORDERS"; the processor uses it in logs and stats unless AddStream is
// given another.
func (s *Stream) Name() string { return "nats:" + s.cfg.Stream }

// clock returns the time since s.origin, on the monotonic clock.
func (s *Stream) clock() time.Duration { return time.Since(s.origin) }

// holds reports whether c's lease leaves time for an acknowledgement to
// reach the server before it ends.
func (s *Stream) holds(c *claim) bool {
	return s.clock()+s.margin < time.Duration(c.deadline.Load())
}

// connected returns an error when the connection is not up, so that nothing
// is buffered for after a reconnect.
func (s *Stream) connected() error {
	if s.nc.IsConnected() {
		return nil
	}
	return fmt.Errorf("natsstream: the NATS connection is %s; waiting for it to reconnect", s.nc.Status())
}

// workConsumer returns the handle of the work consumer, looking it up on
// first use.
func (s *Stream) workConsumer(ctx context.Context) (jetstream.Consumer, error) {
	s.mu.Lock()
	c := s.work
	s.mu.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := s.js.Consumer(ctx, s.cfg.Stream, s.cfg.Consumer)
	if err != nil {
		return nil, s.setupError("consumer "+s.cfg.Consumer+" of stream "+s.cfg.Stream, err)
	}
	s.mu.Lock()
	s.work = c
	s.mu.Unlock()
	return c, nil
}

// setupError explains a missing stream or consumer.
func (s *Stream) setupError(what string, err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("natsstream: %s does not exist: run natsstream.Setup with the same Config first: %w", what, err)
	}
	return fmt.Errorf("natsstream: looking up %s: %w", what, err)
}

// Poll fetches up to limit tasks from the durable consumer (one no-wait
// pull request for exactly that many, never more) and leases them for
// Config.AckWait. It does not wait for tasks to arrive (Wake signals
// that): on an empty consumer, or one at its MaxAckPending, the server
// answers within 10ms, with what was stored or freed meanwhile. Poll
// returns only once the server has ended its request, so no request of
// it is left on the server to take a task after it returned.
//
// A message that is not a valid task, or that was delivered more than
// Config.MaxDeliver times, is dead-lettered instead of returned; one
// whose RunAt is still ahead is moved to the scheduler without counting an
// attempt.
func (s *Stream) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	if done, err := streamkit.CheckPoll(ctx, s.closed.Load(), limit); done {
		return nil, err
	}
	if err := s.connected(); err != nil {
		return nil, err
	}
	if _, err := s.workConsumer(ctx); err != nil {
		return nil, err
	}
	s.startLazily()

	start := s.clock() // the server's AckWait starts later than this
	msgs, answered, err := s.fetch(min(limit, maxBatch), ctx.Done())
	var ds []peonify.Delivery
	for _, m := range msgs {
		if d, ok := s.claim(ctx, m, start); ok {
			if ds == nil {
				ds = make([]peonify.Delivery, 0, len(msgs))
			}
			ds = append(ds, d)
		}
	}
	switch {
	case len(ds) > 0:
		return ds, nil
	case err != nil:
		return nil, fmt.Errorf("natsstream: fetching from consumer %s: %w", s.cfg.Consumer, err)
	case answered:
		return nil, nil
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, ctx.Err() // cancelled: nothing to say about the server
	}
	return nil, s.checkSilence(ctx)
}

// source is a message that the stream copies elsewhere.
type source struct {
	hdr   nats.Header
	data  []byte
	id    string
	msgID string // Nats-Msg-Id of copies made from this message
	reply string // where to acknowledge it
}

// sourceOf describes message m, the task id at stream sequence seq, for
// copying.
func sourceOf(m *nats.Msg, id string, seq uint64) source {
	return source{hdr: m.Header, data: m.Data, id: id, msgID: id + "@" + strconv.FormatUint(seq, 10), reply: m.Reply}
}

// claim turns a fetched message into a delivery, or deals with it and
// reports false.
func (s *Stream) claim(ctx context.Context, m *nats.Msg, start time.Duration) (peonify.Delivery, bool) {
	meta, err := m.Metadata()
	if err != nil {
		s.log.Error("natsstream: fetched a message without JetStream metadata; ignoring it", "stream", s.cfg.Stream, "err", err)
		return peonify.Delivery{}, false
	}
	seq := meta.Sequence.Stream
	dec, derr := decodeTask(m.Header, m.Data, meta.Timestamp, seq)
	attempt := dec.attempts + int(meta.NumDelivered)
	switch {
	case derr != nil:
		s.deadLetterLogged(ctx, sourceOf(m, dec.task.ID, seq), attempt-1, "natsstream: the message is not a valid task: "+derr.Error())
		return peonify.Delivery{}, false
	case s.cfg.MaxDeliver > 0 && attempt > s.cfg.MaxDeliver:
		s.deadLetterLogged(ctx, sourceOf(m, dec.task.ID, seq), attempt-1, fmt.Sprintf(
			"natsstream: task was delivered %d times without completing (its processor crashed or lost the lease each time); Config.MaxDeliver is %d",
			attempt-1, s.cfg.MaxDeliver))
		return peonify.Delivery{}, false
	case !dec.task.RunAt.IsZero() && dec.task.RunAt.After(time.Now()):
		// A producer's scheduled task: hold it in the scheduler, and do
		// not count this early delivery.
		if err := s.requeue(ctx, sourceOf(m, dec.task.ID, seq), attempt-1, nil, dec.task.RunAt); err != nil {
			s.log.Error("natsstream: moving a scheduled task to the scheduler failed; it comes back after AckWait",
				"stream", s.cfg.Stream, "task_id", dec.task.ID, "err", err)
		}
		return peonify.Delivery{}, false
	}
	c := &claim{s: s, msg: m, seq: seq, task: dec.task}
	c.task.Attempt = attempt
	deadline := start + s.cfg.AckWait
	c.deadline.Store(int64(deadline))
	s.claims.add(c)
	return peonify.Delivery{Task: &c.task, Token: meta.Sequence.Consumer, Deadline: s.origin.Add(deadline), Ref: c}, true
}

// claimOf returns the claim behind d.
func (s *Stream) claimOf(d peonify.Delivery) (*claim, error) {
	c, ok := d.Ref.(*claim)
	if !ok || c == nil || c.s != s {
		return nil, errors.New("natsstream: the delivery was not returned by this stream's Poll")
	}
	return c, nil
}

// finish records that c was acked or nacked.
func (s *Stream) finish(c *claim) {
	c.done.Store(true)
	s.claims.remove(c)
}

// forget drops c from the claims this process holds, when its lease has
// ended.
func (s *Stream) forget(c *claim) { s.claims.remove(c) }

// forgetExpired drops the claims whose lease ended without an ack or nack
// (the processor lost them, or was given up on), so that the record of
// claims does not grow.
func (s *Stream) forgetExpired() {
	now := s.clock()
	s.claims.removeIf(func(c *claim) bool { return time.Duration(c.deadline.Load()) < now })
}

// confirm sends an acknowledgement with a reply subject and waits for
// JetStream's reply, which it sends once the consumer has applied the
// acknowledgement (and, the consumer applying one connection's
// acknowledgements in order, every one this connection sent before). The
// reply comes through the connection's shared response subscription, so a
// confirmation costs no subscription of its own.
func (s *Stream) confirm(ctx context.Context, reply string, body []byte) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if _, err := s.nc.RequestWithContext(ctx, reply, body); err != nil {
		return fmt.Errorf("natsstream: waiting for JetStream to confirm %s: %w", body, err)
	}
	return nil
}

// errLost is the error of an operation on a claim whose lease may have
// ended.
func errLost(n int) error {
	return fmt.Errorf("%w: %d claim(s) reached the end of their lease (natsstream fences on AckWait; "+
		"the server may have delivered the task again, so it was not touched)", peonify.ErrLeaseLost, n)
}

// Ack acknowledges deliveries: JetStream removes them from the work queue.
// The acknowledgements of one call are sent together, the last with a
// reply subject, and Ack returns once JetStream has confirmed applying it;
// the consumer applies one connection's acks in order, so that covers the
// batch: an ack the server received but had not applied when it stopped
// is never reported as done.
//
// Ack is fenced on the lease: a delivery whose AckWait has run out, or
// will within a safety margin (a tenth of AckWait, between 10ms and 2s), is
// not acknowledged, because JetStream would apply the acknowledgement to a
// newer delivery of the same message; Ack then returns an error wrapping
// peonify.ErrLeaseLost and the task runs again. Acking an acked delivery
// does nothing.
func (s *Stream) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	var (
		sent []*claim
		lost int
		bad  error
	)
	for _, d := range ds {
		c, err := s.claimOf(d)
		switch {
		case err != nil:
			bad = err
			continue
		case c.done.Load():
			continue
		case !s.holds(c):
			s.forget(c)
			lost++
			continue
		}
		sent = append(sent, c)
	}
	if len(sent) > 0 {
		if err := s.connected(); err != nil {
			return err
		}
		// The consumer applies the acks of one connection in the order they
		// arrive, so a confirmation of the last one covers the batch: the
		// others go without a reply subject, saving a reply per task.
		// Without the confirmation, an ack the server received but had not
		// applied when it stopped would be lost, and the task would run
		// again although Ack returned nil.
		// The stream removes an acked message; removing the oldest is
		// cheapest, so acks go out in stream order.
		slices.SortFunc(sent, func(a, b *claim) int { return cmp.Compare(a.seq, b.seq) })
		last := len(sent) - 1
		for _, c := range sent[:last] {
			if err := s.nc.Publish(c.msg.Reply, ackAck); err != nil {
				return fmt.Errorf("natsstream: sending an ack: %w", err)
			}
		}
		if err := s.confirm(ctx, sent[last].msg.Reply, ackAck); err != nil {
			return err
		}
		for _, c := range sent {
			s.finish(c)
		}
	}
	if bad != nil {
		return bad
	}
	if lost > 0 {
		return errLost(lost)
	}
	return nil
}

// Nack hands a delivery back:
//
//   - OutcomeFailed publishes a copy of the task with the attempt counted,
//     opts.Reason as its last error and RunAt set opts.Delay ahead, then
//     acknowledges the delivery;
//   - OutcomeReleased does the same without counting the attempt;
//   - OutcomeDead publishes a copy to the dead-letter stream with the
//     reason, then terminates the delivery (+TERM).
//
// Copies are deduplicated by JetStream, so a Nack retried after an error
// publishes one copy. Nack is fenced like Ack.
func (s *Stream) Nack(ctx context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	opts, err := opts.Normalize()
	if err != nil {
		return fmt.Errorf("natsstream: %w", err)
	}
	c, err := s.claimOf(d)
	if err != nil {
		return err
	}
	if c.done.Load() {
		return nil
	}
	if !s.holds(c) {
		s.forget(c)
		return errLost(1)
	}
	if err := s.connected(); err != nil {
		return err
	}
	src := sourceOf(c.msg, c.task.ID, c.seq)
	body := ackAck
	switch opts.Outcome {
	case peonify.OutcomeFailed:
		err = s.requeue(ctx, src, c.task.Attempt, &opts.Reason, time.Now().Add(opts.Delay))
	case peonify.OutcomeReleased:
		err = s.requeue(ctx, src, c.task.Attempt-1, nil, time.Now().Add(opts.Delay))
	case peonify.OutcomeDead:
		err = s.deadLetter(ctx, src, c.task.Attempt, opts.Reason)
		body = ackTerm
	}
	if err != nil {
		return err
	}
	if !s.holds(c) {
		// The copy is out, but the lease ended meanwhile: acknowledging
		// now could hit a newer delivery. The task may run once more.
		s.forget(c)
		return errLost(1)
	}
	if err := s.settle(ctx, src.reply, body); err != nil {
		return err
	}
	s.finish(c)
	return nil
}

// settle sends an acknowledgement and waits until JetStream has applied
// it.
func (s *Stream) settle(ctx context.Context, reply string, body []byte) error {
	if err := s.connected(); err != nil {
		return err
	}
	return s.confirm(ctx, reply, body)
}

// Extend renews the lease of d: it sends JetStream's in-progress
// acknowledgement, which restarts the whole AckWait, so lease is ignored
// and the new Deadline is Config.AckWait from the call. It returns an
// error wrapping peonify.ErrLeaseLost if d was acked or nacked, or if its
// lease ran out (see Ack).
func (s *Stream) Extend(ctx context.Context, d peonify.Delivery, lease time.Duration) (peonify.Delivery, error) {
	c, err := s.claimOf(d)
	if err != nil {
		return d, err
	}
	if c.done.Load() {
		return d, fmt.Errorf("%w: the delivery was already acked or nacked", peonify.ErrLeaseLost)
	}
	if !s.holds(c) {
		s.forget(c)
		return d, errLost(1)
	}
	start := s.clock()
	if err := s.settle(ctx, c.msg.Reply, ackProgress); err != nil {
		return d, err
	}
	deadline := start + s.cfg.AckWait
	for {
		old := c.deadline.Load()
		if old >= int64(deadline) || c.deadline.CompareAndSwap(old, int64(deadline)) {
			break
		}
	}
	d.Deadline = s.origin.Add(time.Duration(c.deadline.Load()))
	return d, nil
}

// requeue publishes a copy of src with attempts counted and, if lastError
// is not nil, a new last error. A copy due later than now goes to the
// scheduler, which moves it to Config.Subject at runAt.
func (s *Stream) requeue(ctx context.Context, src source, attempts int, lastError *string, runAt time.Time) error {
	h := copyHeaders(src.hdr)
	setHeader(h, HeaderID, src.id)
	if attempts > 0 {
		setHeader(h, HeaderAttempts, strconv.Itoa(attempts))
	} else {
		delHeader(h, HeaderAttempts)
	}
	if lastError != nil {
		if e := headerText(*lastError); e != "" {
			setHeader(h, HeaderLastError, e)
		} else {
			delHeader(h, HeaderLastError)
		}
	}
	subject := s.subj.work
	if runAt.After(time.Now()) {
		setHeader(h, HeaderRunAt, formatTime(runAt))
		subject = s.subj.scheduled
	}
	h[HeaderMsgID] = []string{src.msgID}
	if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: src.data}); err != nil {
		return fmt.Errorf("natsstream: publishing the retry of task %s: %w", src.id, err)
	}
	return nil
}

// deadLetter publishes a copy of src, with the reason, to the dead-letter
// stream. attempts is how many attempts were counted.
func (s *Stream) deadLetter(ctx context.Context, src source, attempts int, reason string) error {
	h := copyHeaders(src.hdr)
	setHeader(h, HeaderID, src.id)
	setHeader(h, HeaderAttempts, strconv.Itoa(max(attempts, 0)))
	setHeader(h, HeaderDeadReason, headerText(reason))
	setHeader(h, HeaderDeadAt, formatTime(time.Now()))
	h[HeaderMsgID] = []string{src.msgID}
	if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: s.subj.dead, Header: h, Data: src.data}); err != nil {
		return fmt.Errorf("natsstream: publishing task %s to the dead-letter stream %s: %w", src.id, s.cfg.DeadStream, err)
	}
	return nil
}

// deadLetterLogged dead-letters a message that Poll will not deliver and
// terminates it, logging what happens.
func (s *Stream) deadLetterLogged(ctx context.Context, src source, attempts int, reason string) {
	err := s.deadLetter(ctx, src, attempts, reason)
	if err == nil {
		err = s.settle(ctx, src.reply, ackTerm)
	}
	if err != nil {
		s.log.Error("natsstream: dead-lettering a task failed; it comes back after AckWait",
			"stream", s.cfg.Stream, "task_id", src.id, "reason", reason, "err", err)
		return
	}
	s.log.Warn("natsstream: task dead-lettered by Poll", "stream", s.cfg.Stream, "task_id", src.id, "reason", reason)
}

// Wake returns a channel that receives when a task is stored on
// Config.Subject, by Enqueue, by another producer or by the scheduler,
// once the stream is started (see Start). The stream subscribes to the
// headers-only copies that Setup has JetStream republish. Wake does no
// I/O. The channel is never closed.
func (s *Stream) Wake() <-chan struct{} { return s.wake }

// Start starts the scheduler goroutine and subscribes to the wake-up
// subject, and returns once the server has the subscription, so that
// Wake receives for every task stored after Start returns. A processor's
// Run calls it; without it, the first Poll starts the same, without the
// wait. If the server cannot be reached, Start returns an error once ctx
// ends (or after Config.AckWait, if ctx has no deadline); the
// subscription is made when the connection comes back, and a later Start
// waits for it again. Start is idempotent; after Close it returns
// peonify.ErrClosed.
func (s *Stream) Start(ctx context.Context) error {
	s.startScheduler()
	if err := s.subscribeWake(); err != nil {
		return fmt.Errorf("natsstream: starting stream %s: %w", s.cfg.Stream, err)
	}
	s.mu.Lock()
	live := s.live
	s.mu.Unlock()
	if live {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.AckWait)
		defer cancel()
	}
	if err := s.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("natsstream: starting stream %s: the server did not confirm the wake-up subscription: %w", s.cfg.Stream, err)
	}
	s.mu.Lock()
	s.live = true
	s.mu.Unlock()
	return nil
}

// startLazily starts, for a stream that Poll finds not started, what
// Start would, without waiting for the server. It tries to subscribe
// once.
func (s *Stream) startLazily() {
	s.startScheduler()
	s.lazySub.Do(func() {
		if err := s.subscribeWake(); err != nil && !errors.Is(err, peonify.ErrClosed) {
			s.log.Error("natsstream: subscribing to wake-ups failed; the processor will find tasks at its poll interval",
				"stream", s.cfg.Stream, "err", err)
		}
	})
}

// subscribeWake subscribes to the wake subject, unless it did already; it
// does not wait for the server. After Close it returns peonify.ErrClosed.
func (s *Stream) subscribeWake() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	if s.wakeSub != nil {
		return nil
	}
	sub, err := s.nc.Subscribe(s.subj.wake, func(*nats.Msg) {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("subscribing to wake-ups on %s: %w", s.subj.wake, err)
	}
	s.wakeSub = sub
	return nil
}

// Close stops the scheduler goroutine and the wake-up subscription. It
// does not close the NATS connection, which belongs to the caller. Claims
// not yet acked or nacked come back after their AckWait. Close is
// idempotent.
func (s *Stream) Close(ctx context.Context) error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	s.mu.Lock()
	sub := s.wakeSub
	s.wakeSub = nil
	s.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
	if err := s.bg.Stop(ctx); err != nil {
		return fmt.Errorf("natsstream: Close: the scheduler did not stop: %w", err)
	}
	return nil
}
