package amqpstream

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/backoff"
	"github.com/peonify/peonify/internal/streamkit"
)

// Stream is a Peonify stream on a RabbitMQ (AMQP 0-9-1) work queue. It
// implements peonify.Stream, peonify.Waker, peonify.Starter,
// peonify.Enqueuer and peonify.Inspector; as an Inspector it answers what the broker can show
// of the queue, and errors.ErrUnsupported for the rest (see Counts, List,
// Get and Delete).
//
// The stream owns its connection: it connects when started (Start) or on
// first use (Poll, Enqueue or an Inspector method), and when the connection is lost it
// reconnects by itself with a jittered backoff, declares its queues again
// and resumes consuming. Deliveries claimed on a lost connection are
// stale: Ack and Nack report them with peonify.ErrLeaseLost, and the
// broker delivers their tasks again.
//
// All methods are safe for concurrent use.
type Stream struct {
	url      string
	redacted string // url without the password, for messages
	cfg      Config
	wake     chan struct{}
	tokens   atomic.Uint64 // claim tokens
	sessions atomic.Uint64 // session ids
	waiting  atomic.Int32  // Connect calls waiting, which return the errors

	closed atomic.Bool
	mu     sync.Mutex
	start  bool            // the supervisor was started
	cur    *session        // the live session, or nil
	busy   bool            // a connection attempt is under way
	last   error           // why the last attempt or session failed
	upOnce bool            // a session was up before
	change chan struct{}   // closed and replaced when cur, busy or last change
	bg     streamkit.Group // the supervisor
}

var (
	_ peonify.Stream   = (*Stream)(nil)
	_ peonify.Waker    = (*Stream)(nil)
	_ peonify.Starter  = (*Stream)(nil)
	_ peonify.Enqueuer = (*Stream)(nil)
)

// New returns a stream on cfg.Queue of the broker at rawURL, an AMQP URI
// such as "amqp://user:password@host:5672/vhost" (amqps for TLS; see
// amqp.ParseURI). It checks the URI and cfg but does not connect: the
// stream connects on first use and reconnects by itself, which is why it
// takes an address rather than an *amqp.Connection (see the package
// documentation). Close the stream to close its connection.
func New(rawURL string, cfg Config) (*Stream, error) {
	uri, err := amqp.ParseURI(rawURL)
	if err != nil {
		return nil, &peonify.ConfigError{Field: "amqpstream URL", Reason: fmt.Sprintf(
			"%v: want an AMQP URI such as amqp://user:password@localhost:5672/ (percent-encode reserved characters in the user and password)", err)}
	}
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Stream{
		url:      rawURL,
		redacted: redact(uri),
		cfg:      cfg,
		wake:     make(chan struct{}, 1),
		change:   make(chan struct{}),
	}, nil
}

// redact renders a URI without its password.
func redact(u amqp.URI) string {
	v := &url.URL{Scheme: u.Scheme, Host: u.Host + ":" + strconv.Itoa(u.Port), Path: "/"}
	if u.Vhost != "/" {
		v.Path += u.Vhost
	}
	if u.Username != "" {
		v.User = url.User(u.Username)
	}
	return v.String()
}

// Queue returns the name of the stream's work queue.
func (s *Stream) Queue() string { return s.cfg.Queue }

// Name returns "amqp:" and the work queue's name, such as "amqp:emails";
// the processor uses it in logs and stats unless AddStream is given another.
func (s *Stream) Name() string { return "amqp:" + s.cfg.Queue }

// Poll hands out up to limit tasks from the messages the broker has sent to
// this stream's consumer, in the order it sent them. It never waits for
// messages to arrive: when none are buffered it returns nothing, and Wake
// signals when some come. The first Poll starts consuming, with a
// prefetch of Config.Prefetch or else of limit, which then follows the
// caller (see Config.Prefetch), so the broker does not send this process
// more than it has room for. Poll returns an error while the stream is
// not connected, after waiting for a connection attempt under way.
//
// Poll itself never returns a task that is not due (Task.RunAt, a retry
// delay): such a message goes on to a delay queue. A message the broker
// redelivers because the connection that held it was lost goes back to
// the work queue with that attempt counted (see the package
// documentation).
func (s *Stream) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	if done, err := streamkit.CheckPoll(ctx, s.closed.Load(), limit); done {
		return nil, err
	}
	ss, err := s.session(ctx, false)
	if err != nil {
		return nil, err
	}
	c, err := ss.consumer(limit)
	if err != nil {
		ss.fail(err)
		return nil, err
	}
	if short := limit - c.buffered(); short > 0 && s.cfg.Prefetch == 0 {
		if err := c.grow(short); err != nil {
			ss.fail(err)
			return nil, err
		}
	}
	msgs := c.take(limit)
	if len(msgs) == 0 {
		return nil, nil
	}
	ds := make([]peonify.Delivery, len(msgs))
	for i, m := range msgs {
		ds[i] = peonify.Delivery{
			Task:  decodeTask(m),
			Token: s.tokens.Add(1),
			Ref:   &claim{ss: ss, msg: m},
		}
	}
	return ds, nil
}

// claim is a delivery's Ref: the message and the session it came on.
type claim struct {
	ss  *session
	msg *amqp.Delivery
}

// Ack acknowledges deliveries: their messages are removed from the queue.
// The deliveries older than every other unacknowledged one are acked with
// a single basic.ack (multiple), the others one by one. Acking a delivery
// twice, or one that was nacked, does nothing. A delivery of a connection
// that was lost since cannot be acked (the broker has already put its
// message back for another delivery); Ack then returns an error wrapping
// peonify.ErrLeaseLost.
//
// AMQP does not confirm acks: if the connection fails just after Ack
// returns, the broker may deliver a task again, as at-least-once delivery
// allows.
func (s *Stream) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	var (
		lost int
		ss   *session
		tags []uint64
	)
	flush := func() {
		if len(tags) == 0 {
			return
		}
		ss.consMu.Lock()
		c := ss.cons
		ss.consMu.Unlock()
		if c == nil {
			lost += len(tags)
		} else {
			lost += c.ack(tags)
		}
		tags = tags[:0]
	}
	for _, d := range ds {
		cl, ok := d.Ref.(*claim)
		if !ok || cl == nil || cl.ss == nil {
			continue // not a delivery of this stream: nothing to ack
		}
		if cl.ss != ss {
			flush()
			ss = cl.ss
		}
		tags = append(tags, cl.msg.DeliveryTag)
	}
	flush()
	if lost > 0 {
		return fmt.Errorf("amqpstream: %d of %d acks were for deliveries of a lost connection; the broker delivers those tasks again: %w",
			lost, len(ds), peonify.ErrLeaseLost)
	}
	return nil
}

// Nack hands a delivery back. AMQP cannot change a message in place, so
// every outcome republishes the task and then acks the delivery:
//
//   - OutcomeFailed: to the work queue, through a delay queue when
//     opts.Delay is set, with the attempt counted and opts.Reason as the
//     task's last error.
//   - OutcomeReleased: the same, without counting the attempt. (A
//     basic.nack with requeue would mark the message redelivered, which
//     the stream counts as an attempt.)
//   - OutcomeDead: to the dead-letter queue, with opts.Reason in the
//     x-peonify-dead-reason and x-peonify-last-error headers.
//
// The delivery is acked only after the broker confirmed the copy. If the
// copy cannot be stored, the delivery is requeued instead (the broker then
// delivers it marked redelivered, which counts an attempt) and Nack
// returns an error. A nack of a delivery already acked or nacked, or of a
// lost connection, changes nothing and returns an error wrapping
// peonify.ErrLeaseLost.
func (s *Stream) Nack(ctx context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	cl, ok := d.Ref.(*claim)
	if !ok || cl == nil || cl.ss == nil || d.Task == nil {
		return errors.New("amqpstream: Nack of a delivery that this stream's Poll did not return")
	}
	opts, err := opts.Normalize()
	if err != nil {
		return fmt.Errorf("amqpstream: Nack of task %s: %w", d.Task.ID, err)
	}
	ss := cl.ss
	ss.consMu.Lock()
	c := ss.cons
	ss.consMu.Unlock()
	tag := cl.msg.DeliveryTag
	if c == nil || !c.begin(tag) {
		if ss.dead() {
			return fmt.Errorf("amqpstream: nack of task %s: the connection that delivered it was lost; the broker delivers it again: %w",
				d.Task.ID, peonify.ErrLeaseLost)
		}
		return fmt.Errorf("amqpstream: nack of task %s ignored: the delivery was already acked or nacked: %w", d.Task.ID, peonify.ErrLeaseLost)
	}

	t := *d.Task // the task as the handler saw it; the copy carries the changes
	t.RunAt = time.Time{}
	queue := s.cfg.Queue
	attempts := max(t.Attempt, 1) // Failed and Dead count this attempt
	switch opts.Outcome {
	case peonify.OutcomeFailed:
		t.LastError = opts.Reason
	case peonify.OutcomeReleased:
		attempts--
	case peonify.OutcomeDead:
		queue = deadQueue(s.cfg.Queue)
		if opts.Reason != "" {
			t.LastError = opts.Reason
		}
	}
	if opts.Delay > 0 {
		t.RunAt = time.Now().Add(opts.Delay)
		queue, err = ss.ensureDelay(bucketFor(opts.Delay))
	}
	if err == nil {
		msg := repost(cl.msg, &t, attempts, s.cfg.MaxPriority)
		if opts.Outcome == peonify.OutcomeDead {
			markDead(msg.Headers, opts.Reason)
		}
		err = ss.publishOne(ctx, queue, msg)
	}
	if err != nil {
		_ = c.finish(tag, true)
		return fmt.Errorf("amqpstream: nack (%s) of task %s: %w; the message was requeued instead, so its next delivery counts an attempt",
			opts.Outcome, d.Task.ID, err)
	}
	if err := c.finish(tag, false); err != nil {
		// The copy is stored but the original could not be acked: the
		// broker delivers it again, a duplicate that at-least-once
		// delivery allows.
		s.cfg.Logger.Warn("amqpstream: task republished but its delivery could not be acked; it will run again",
			"queue", s.cfg.Queue, "task_id", d.Task.ID, "err", err)
	}
	return nil
}

// Enqueue publishes tasks to the work queue (a task with a RunAt in the
// future to a delay queue), as persistent messages, and returns once the
// broker has confirmed every one of them (publisher confirms): then they
// survive a broker restart. It fills empty IDs and EnqueuedAt (see
// peonify.Task.Prepare) and checks every task before publishing any.
// Enqueue waits for a connection until ctx ends.
//
// RabbitMQ has no way to find a message by ID, so Enqueue does not detect
// duplicates: a second Enqueue of a task ID, or of a live Task.UniqueKey,
// stores another message. Handlers see Task.ID and must be idempotent, as
// at-least-once delivery requires anyway.
//
// If Enqueue returns an error, the tasks it names may or may not be
// stored; enqueueing them again may store them twice.
func (s *Stream) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	now := time.Now()
	for _, t := range tasks {
		if err := t.Prepare(now); err != nil {
			return err
		}
		if err := validateHeaders(t); err != nil {
			return err
		}
	}
	if len(tasks) == 0 {
		return nil
	}
	ss, err := s.session(ctx, true)
	if err != nil {
		return err
	}
	out := make([]outgoing, len(tasks))
	for i, t := range tasks {
		queue := s.cfg.Queue
		if d := time.Until(t.RunAt); !t.RunAt.IsZero() && d > 0 {
			if queue, err = ss.ensureDelay(bucketFor(d)); err != nil {
				return err
			}
		}
		out[i] = outgoing{queue: queue, msg: encodeTask(t, 0, s.cfg.MaxPriority)}
	}
	err = ss.publish(ctx, out)
	if err == nil {
		return nil
	}
	var failed []string
	for i := range out {
		if out[i].err != nil {
			failed = append(failed, tasks[i].ID)
			if errors.Is(out[i].err, errReturned) {
				ss.forget(out[i].queue)
			}
		}
	}
	return fmt.Errorf("amqpstream: %d of %d tasks may not be stored (%s): %w", len(failed), len(tasks), short(failed), err)
}

// short lists at most 5 IDs.
func short(ids []string) string {
	if len(ids) <= 5 {
		return fmt.Sprint(ids)
	}
	return fmt.Sprint(ids[:5]) + fmt.Sprintf(" and %d more", len(ids)-5)
}

// Connect connects to the broker and declares the work and dead-letter
// queues, waiting until it succeeds or ctx ends; it returns the last
// connection error then. Other methods connect on first use, so Connect is
// optional: call it at start-up to fail fast on a wrong address or
// credentials, or to create the queues before producers in other
// languages publish to them. While Connect waits, failed attempts are
// logged at debug level only: Connect returns the error.
func (s *Stream) Connect(ctx context.Context) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	_, err := s.session(ctx, true)
	return err
}

// Publishing returns the AMQP message that stores t, exactly as Enqueue
// publishes it, for a Go producer that publishes with its own amqp091-go
// channel: publish it to the default exchange ("") with the work queue's
// name (Queue) as the routing key, persistent, with publisher confirms to
// know it is stored. A task with a RunAt in the future may be published to
// the work queue too: the stream moves it to the delay queues. Publishing
// fills t's empty ID and EnqueuedAt (see peonify.Task.Prepare) and checks
// it as Enqueue does. README.md describes the format for other languages.
func (s *Stream) Publishing(t *peonify.Task) (amqp.Publishing, error) {
	if err := t.Prepare(time.Now()); err != nil {
		return amqp.Publishing{}, err
	}
	if err := validateHeaders(t); err != nil {
		return amqp.Publishing{}, err
	}
	return encodeTask(t, 0, s.cfg.MaxPriority), nil
}

// Wake returns a channel that receives when messages arrive for Poll, and
// when the stream has reconnected. Wake does no I/O: the connection starts
// with Start or the first use. The channel is never closed.
func (s *Stream) Wake() <-chan struct{} { return s.wake }

// Start starts the goroutine that connects and reconnects, and returns at
// once; Wake receives when the connection is up, and the next Poll starts
// consuming, after which Wake receives as messages arrive. A processor's
// Run calls Start; without it, the first Poll, Enqueue or Inspector call
// starts the same. Start is idempotent; after Close it returns
// peonify.ErrClosed.
func (s *Stream) Start(ctx context.Context) error {
	s.ensureStarted()
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	return nil
}

// signal wakes an idle processor without blocking.
func (s *Stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Close stops consuming, hands the messages buffered for Poll back to the
// queue without counting an attempt, and closes the connection. Settle
// (Ack or Nack) every delivery first: the broker requeues an unsettled one
// when the connection closes, marked redelivered, which counts an attempt.
// Close is idempotent; afterwards the stream's methods return
// peonify.ErrClosed.
func (s *Stream) Close(ctx context.Context) error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.Lock()
	cur := s.cur
	s.cur = nil
	s.broadcast()
	s.mu.Unlock()
	s.bg.Cancel()
	var err error
	if cur != nil {
		err = cur.close(ctx)
	}
	if werr := s.bg.Wait(ctx); werr != nil {
		return fmt.Errorf("amqpstream: Close gave up waiting for the connection to close: %w", werr)
	}
	return err
}

// ensureStarted starts the supervisor once.
func (s *Stream) ensureStarted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.start || s.closed.Load() {
		return
	}
	s.start = true
	s.busy = true
	s.bg.Go(s.supervise)
}

// session returns the live session. Without wait it returns an error at
// once while the stream is between connection attempts; it always waits
// for an attempt under way. It returns early if ctx ends.
func (s *Stream) session(ctx context.Context, wait bool) (*session, error) {
	s.ensureStarted()
	for {
		s.mu.Lock()
		if s.closed.Load() {
			s.mu.Unlock()
			return nil, peonify.ErrClosed
		}
		cur, busy, last, change := s.cur, s.busy, s.last, s.change
		s.mu.Unlock()
		if cur != nil && !cur.dead() {
			return cur, nil
		}
		if !busy && last != nil {
			if refused(last) {
				// Waiting would not help: the broker turned the user or the
				// vhost away. The supervisor keeps trying, slowly, in case
				// the broker's side is fixed.
				var why *amqp.Error
				errors.As(last, &why)
				return nil, fmt.Errorf("amqpstream: the broker at %s refused the connection: check the user, password and vhost in the URL, and the user's permissions: %w", s.redacted, why)
			}
			if !wait {
				return nil, fmt.Errorf("amqpstream: not connected to %s (reconnecting): %w", s.redacted, last)
			}
		}
		select {
		case <-change:
		case <-ctx.Done():
			if last != nil {
				// last names the broker already: say it once.
				return nil, fmt.Errorf("%w (gave up waiting: %w)", last, ctx.Err())
			}
			return nil, fmt.Errorf("amqpstream: connecting to %s: %w", s.redacted, ctx.Err())
		}
	}
}

// refused reports whether err is the broker refusing the credentials or
// the vhost, which no retry fixes.
func refused(err error) bool {
	var e *amqp.Error
	return errors.As(err, &e) && (e.Code == amqp.AccessRefused || e.Code == amqp.NotAllowed)
}

// broadcast wakes callers waiting in session. s.mu must be held.
func (s *Stream) broadcast() {
	close(s.change)
	s.change = make(chan struct{})
}

// supervise connects, waits for the session to end and connects again,
// until ctx ends. Waits between attempts double from ReconnectMin to
// ReconnectMax, with jitter; a session that lived for a while resets
// them.
func (s *Stream) supervise(ctx context.Context) {
	b := backoff.Backoff{Min: s.cfg.ReconnectMin, Max: s.cfg.ReconnectMax}
	log := s.cfg.Logger
	for {
		s.setBusy(true)
		ss, err := s.connect(ctx, s.sessions.Add(1))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			quiet := s.waiting.Load() > 0 // before setDown lets Connect return
			s.setDown(err)
			d := b.Next()
			switch {
			case quiet:
				log.Debug("amqpstream: cannot connect; Connect returns the error", "queue", s.cfg.Queue, "retry_in", d, "err", err)
			case refused(err):
				log.Error("amqpstream: the broker refused the connection; check the user, password, vhost and permissions; retrying",
					"queue", s.cfg.Queue, "retry_in", d, "err", err)
			default:
				log.Warn("amqpstream: cannot connect; retrying", "queue", s.cfg.Queue, "retry_in", d, "err", err)
			}
			if !backoff.Sleep(ctx, d) {
				return
			}
			continue
		}
		if !s.setUp(ss) {
			ss.shutdown(context.Background()) // Close came first
			return
		}
		s.signal()
		select {
		case <-ss.done:
		case <-ctx.Done():
			return // Close closes the session
		}
		s.setDown(ss.err)
		ss.shutdown(context.Background())
		if time.Since(ss.born) > 10*time.Second {
			b.Reset()
		}
		d := b.Next()
		log.Warn("amqpstream: connection lost; reconnecting", "queue", s.cfg.Queue, "retry_in", d, "err", ss.err)
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

func (s *Stream) setBusy(busy bool) {
	s.mu.Lock()
	s.busy = busy
	s.broadcast()
	s.mu.Unlock()
}

func (s *Stream) setDown(err error) {
	s.mu.Lock()
	if s.cur != nil && s.cur.dead() {
		s.cur = nil
	}
	s.busy = false
	s.last = err
	s.broadcast()
	s.mu.Unlock()
}

// setUp makes ss the live session; it reports false if the stream was
// closed meanwhile.
func (s *Stream) setUp(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = false
	s.broadcast()
	if s.closed.Load() {
		return false
	}
	s.cur = ss
	s.last = nil
	if s.upOnce {
		s.cfg.Logger.Info("amqpstream: reconnected", "queue", s.cfg.Queue)
	}
	s.upOnce = true
	return true
}
