package amqpstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// session is one connection to the broker and the channels the stream uses
// on it. A session never reconnects: when its connection, its publishing
// channel or its consuming channel fails, the session ends (done is
// closed) and the stream opens a new one. Delivery tags are numbers of the
// consuming channel, so a claim made on an ended session is stale: its ack
// could never reach the broker, which has already put the message back.
type session struct {
	s     *Stream
	id    uint64
	conn  *amqp.Connection
	pub   *publisher
	born  time.Time
	done  chan struct{} // closed when the session ends
	once  sync.Once
	err   error // why the session ended; written before done is closed
	stop  chan struct{}
	stops sync.Once
	wg    sync.WaitGroup // the session's goroutines

	topoMu   sync.Mutex
	topo     *amqp.Channel   // declarations and inspection; reopened after a channel error
	declared map[string]bool // delay queues declared on this session

	consMu sync.Mutex
	cons   *consumer // nil until the first Poll
}

// dial opens a connection whose TCP dial ends with ctx.
func (s *Stream) dial(ctx context.Context) (*amqp.Connection, error) {
	cfg := s.cfg.AMQP
	if cfg.Properties == nil {
		cfg.Properties = amqp.NewConnectionProperties()
	} else {
		cfg.Properties = cloneTable(cfg.Properties)
	}
	if _, ok := cfg.Properties["connection_name"]; !ok {
		cfg.Properties["connection_name"] = s.cfg.Name + " " + s.cfg.Queue
	}
	if cfg.Dial == nil {
		timeout := s.cfg.DialTimeout
		cfg.Dial = func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: timeout}
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// A deadline for the TLS and AMQP handshakes; the client
			// clears it once the connection is open.
			if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
				conn.Close()
				return nil, err
			}
			return conn, nil
		}
	}
	return amqp.DialConfig(s.url, cfg)
}

// connect opens a session: a connection, a publishing channel in confirm
// mode, and the work and dead-letter queues declared.
func (s *Stream) connect(ctx context.Context, id uint64) (*session, error) {
	conn, err := s.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("amqpstream: connecting to %s: %w", s.redacted, err)
	}
	ss := &session{
		s:        s,
		id:       id,
		conn:     conn,
		born:     time.Now(),
		done:     make(chan struct{}),
		stop:     make(chan struct{}),
		declared: make(map[string]bool),
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ss.wg.Go(func() {
		select {
		case e, ok := <-closed:
			if ok && e != nil {
				ss.fail(fmt.Errorf("amqpstream: connection to %s lost: %w", s.redacted, e))
			} else {
				ss.fail(errors.New("amqpstream: connection closed"))
			}
		case <-ss.done:
		}
	})
	setup := func() error {
		pub, err := newPublisher(ss)
		if err != nil {
			return err
		}
		ss.pub = pub
		if err := ss.declare(s.cfg.Queue, s.cfg.queueArgs()); err != nil {
			return err
		}
		return ss.declare(deadQueue(s.cfg.Queue), s.cfg.deadArgs())
	}
	if err := setup(); err != nil {
		ss.fail(err)
		ss.shutdown(context.Background())
		return nil, err
	}
	return ss, nil
}

// fail ends the session with err; the first call wins.
func (ss *session) fail(err error) {
	ss.once.Do(func() {
		ss.err = err
		close(ss.done)
	})
}

// dead reports whether the session has ended.
func (ss *session) dead() bool {
	select {
	case <-ss.done:
		return true
	default:
		return false
	}
}

// cause returns why the session ended, or nil while it lives.
func (ss *session) cause() error {
	if ss.dead() {
		return ss.err // written before done was closed
	}
	return nil
}

// shutdown closes the connection and waits for the session's goroutines.
func (ss *session) shutdown(ctx context.Context) {
	ss.fail(errors.New("amqpstream: session closed"))
	ss.stops.Do(func() { close(ss.stop) })
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > 5*time.Second {
		deadline = time.Now().Add(5 * time.Second)
	}
	_ = ss.conn.CloseDeadline(deadline)
	ss.consMu.Lock()
	c := ss.cons
	ss.consMu.Unlock()
	if c != nil {
		c.kill()
	}
	ss.wg.Wait()
}

// close ends a healthy session gracefully: it stops consuming, hands the
// messages it buffered but never handed out back to the work queue
// without counting an attempt, and closes the connection.
func (ss *session) close(ctx context.Context) error {
	var err error
	ss.consMu.Lock()
	c := ss.cons
	ss.consMu.Unlock()
	if c != nil && !ss.dead() {
		err = c.giveBack(ctx)
	}
	ss.shutdown(ctx)
	return err
}

// channel opens a channel and ends the session when it fails, as a
// publishing or consuming channel must not be lost silently.
func (ss *session) channel() (*amqp.Channel, error) {
	ch, err := ss.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqpstream: opening a channel: %w", err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	ss.wg.Go(func() {
		select {
		case e, ok := <-closed:
			if ok && e != nil {
				ss.fail(fmt.Errorf("amqpstream: channel closed by the broker: %w", e))
			} else {
				ss.fail(errors.New("amqpstream: channel closed"))
			}
		case <-ss.done:
		}
	})
	return ch, nil
}

// topoChannel returns the channel for declarations and inspection,
// opening a new one if the last one was closed by an error. topoMu must
// be held.
func (ss *session) topoChannel() (*amqp.Channel, error) {
	if ss.topo != nil && !ss.topo.IsClosed() {
		return ss.topo, nil
	}
	ch, err := ss.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqpstream: opening a channel: %w", err)
	}
	ss.topo = ch
	return ch, nil
}

// declare declares a durable queue.
func (ss *session) declare(name string, args amqp.Table) error {
	ss.topoMu.Lock()
	defer ss.topoMu.Unlock()
	ch, err := ss.topoChannel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		return explain("declaring queue "+name, err)
	}
	return nil
}

// ensureDelay declares the delay queue with TTL ms once per session and
// returns its name.
func (ss *session) ensureDelay(ms int64) (string, error) {
	name := delayQueue(ss.s.cfg.Queue, ms)
	ss.topoMu.Lock()
	ok := ss.declared[name]
	ss.topoMu.Unlock()
	if ok {
		return name, nil
	}
	if err := ss.declare(name, ss.s.cfg.delayArgs(ms)); err != nil {
		return "", err
	}
	ss.topoMu.Lock()
	ss.declared[name] = true
	ss.topoMu.Unlock()
	return name, nil
}

// forget is called after the broker returned a message to queue name as
// unroutable: an operator deleted the queue. A delay queue is declared
// again on its next use; the work and dead-letter queues at once, so that
// the next publish succeeds.
func (ss *session) forget(name string) {
	cfg := ss.s.cfg
	switch name {
	case cfg.Queue:
		if err := ss.declare(name, cfg.queueArgs()); err != nil {
			cfg.Logger.Warn("amqpstream: declaring a deleted queue again failed", "queue", name, "err", err)
		}
	case deadQueue(cfg.Queue):
		if err := ss.declare(name, cfg.deadArgs()); err != nil {
			cfg.Logger.Warn("amqpstream: declaring a deleted queue again failed", "queue", name, "err", err)
		}
	default:
		ss.topoMu.Lock()
		delete(ss.declared, name)
		ss.topoMu.Unlock()
	}
}

// inspect returns the number of ready messages in queue, or ok false if
// it does not exist.
func (ss *session) inspect(queue string) (n int, ok bool, err error) {
	ss.topoMu.Lock()
	defer ss.topoMu.Unlock()
	ch, err := ss.topoChannel()
	if err != nil {
		return 0, false, err
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotFound {
		return 0, false, nil // the channel is closed; the next call opens another
	}
	if err != nil {
		return 0, false, explain("inspecting queue "+queue, err)
	}
	return q.Messages, true, nil
}

// purge empties queue and returns how many messages it removed; a missing
// queue is empty.
func (ss *session) purge(queue string) (int, error) {
	if _, ok, err := ss.inspect(queue); err != nil || !ok {
		return 0, err
	}
	ss.topoMu.Lock()
	defer ss.topoMu.Unlock()
	ch, err := ss.topoChannel()
	if err != nil {
		return 0, err
	}
	n, err := ch.QueuePurge(queue, false)
	if err != nil {
		return 0, explain("purging queue "+queue, err)
	}
	return n, nil
}

// explain wraps a broker error with what the stream was doing and, for
// the errors a configuration causes, what to do about it.
func explain(doing string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.PreconditionFailed:
			return fmt.Errorf("amqpstream: %s: the queue exists with other arguments (a queue's type, priority and TTL cannot change): "+
				"configure the stream as the queue was declared (Config.Quorum, MaxPriority, KeepDead), or delete the queue: %w", doing, err)
		case amqp.AccessRefused:
			return fmt.Errorf("amqpstream: %s: the broker refused access: grant the user configure, write and read permissions on the stream's queues: %w", doing, err)
		}
	}
	return fmt.Errorf("amqpstream: %s: %w", doing, err)
}

func cloneTable(t amqp.Table) amqp.Table {
	c := make(amqp.Table, len(t)+1)
	for k, v := range t {
		c[k] = v
	}
	return c
}

// publisher publishes on a channel in confirm mode, with the mandatory
// flag, and tells which publishes the broker returned as unroutable.
type publisher struct {
	ss      *session
	ch      *amqp.Channel
	returns chan amqp.Return
	barrier chan chan struct{}
	exited  chan struct{}

	mu       sync.Mutex
	returned map[string]string // returnKey -> the broker's reply text
}

// maxReturned bounds the record of returned messages that no publish
// claimed (their publisher gave up waiting).
const maxReturned = 4096

func newPublisher(ss *session) (*publisher, error) {
	ch, err := ss.channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("amqpstream: enabling publisher confirms: %w", err)
	}
	p := &publisher{
		ss:       ss,
		ch:       ch,
		returns:  ch.NotifyReturn(make(chan amqp.Return)),
		barrier:  make(chan chan struct{}),
		exited:   make(chan struct{}),
		returned: make(map[string]string),
	}
	ss.wg.Go(p.loop)
	return p, nil
}

// loop records returned messages. The broker sends a message's basic.return
// before its confirm, and the client hands it to this unbuffered channel
// before it reads the confirm; so once a publish is confirmed, a barrier
// request served by this loop proves that its return, if any, is recorded.
func (p *publisher) loop() {
	defer close(p.exited)
	for {
		select {
		case r, ok := <-p.returns:
			if !ok {
				return
			}
			p.mu.Lock()
			if len(p.returned) >= maxReturned {
				clear(p.returned)
			}
			p.returned[returnKey(r.RoutingKey, r.MessageId)] = r.ReplyText
			p.mu.Unlock()
			p.ss.s.cfg.Logger.Warn("amqpstream: the broker returned a message it could not route; the queue may have been deleted",
				"queue", r.RoutingKey, "task_id", r.MessageId, "reply", r.ReplyText)
		case reply := <-p.barrier:
			close(reply)
		}
	}
}

func returnKey(queue, id string) string { return queue + "\x00" + id }

// outgoing is one message to publish.
type outgoing struct {
	queue string
	msg   amqp.Publishing
	dc    *amqp.DeferredConfirmation
	err   error
}

// publish publishes every message to its queue through the default
// exchange and waits until the broker has confirmed them all. It sets err
// on each message that was not stored and returns the first error.
func (p *publisher) publish(ctx context.Context, out []outgoing) error {
	var first error
	fail := func(o *outgoing, err error) {
		o.err = err
		if first == nil {
			first = err
		}
	}
	for i := range out {
		o := &out[i]
		if err := ctx.Err(); err != nil {
			fail(o, err)
			continue
		}
		dc, err := p.ch.PublishWithDeferredConfirm("", o.queue, true, false, o.msg)
		if err != nil {
			fail(o, fmt.Errorf("amqpstream: publishing to queue %s: %w", o.queue, err))
			continue
		}
		o.dc = dc
	}
	for i := range out {
		o := &out[i]
		if o.dc == nil {
			continue
		}
		select {
		case <-o.dc.Done():
			if !o.dc.Acked() {
				err := p.ss.cause()
				if err == nil {
					err = errors.New("the broker refused the message (basic.nack)")
				}
				fail(o, fmt.Errorf("amqpstream: publishing to queue %s was not confirmed: %w", o.queue, err))
			}
		case <-ctx.Done():
			fail(o, fmt.Errorf("amqpstream: gave up waiting for the broker to confirm a publish to queue %s (it may be stored): %w", o.queue, ctx.Err()))
		}
	}
	// Wait until every return sent before those confirms is recorded.
	reply := make(chan struct{})
	select {
	case p.barrier <- reply:
		<-reply
	case <-p.exited:
	}
	p.mu.Lock()
	for i := range out {
		o := &out[i]
		k := returnKey(o.queue, o.msg.MessageId)
		if text, ok := p.returned[k]; ok {
			delete(p.returned, k)
			if o.err == nil {
				fail(o, fmt.Errorf("amqpstream: the broker could not route a message to queue %s (%s): %w", o.queue, text, errReturned))
			}
		}
	}
	p.mu.Unlock()
	return first
}

// errReturned is wrapped by the error of a publish that the broker
// returned as unroutable.
var errReturned = errors.New("the queue does not exist (was it deleted?); the stream declares its queues again when it reconnects")

// publishOne publishes one message and waits for its confirm.
func (ss *session) publishOne(ctx context.Context, queue string, msg amqp.Publishing) error {
	out := []outgoing{{queue: queue, msg: msg}}
	err := ss.pub.publish(ctx, out)
	if errors.Is(err, errReturned) {
		ss.forget(queue)
	}
	return err
}

// Delivery states in consumer.state.
const (
	stBuffered = iota + 1 // received, waiting for Poll
	stOut                 // handed out by Poll
	stBusy                // being nacked: republishing before the ack
	stHop                 // with the hopper: a delay hop or an attempt to count
)

// consumer consumes the work queue on one channel, with one or more AMQP
// consumers whose prefetch counts add up to the stream's prefetch. It
// keeps every unacknowledged delivery of the channel, so that it can ack
// many at once (basic.ack with multiple) and tell a current claim from a
// settled one.
type consumer struct {
	ss *session
	ch *amqp.Channel

	setup    sync.Mutex // guards the fields below while consumers are added
	tags     []string   // AMQP consumer tags
	prefetch int        // sum of their prefetch counts
	pumps    sync.WaitGroup

	mu        sync.Mutex
	dead      bool
	state     map[uint64]uint8 // unacked delivery tag -> stBuffered, stOut, stBusy or stHop
	order     []uint64         // unacked delivery tags, ascending from head; settled ones are skipped
	head      int
	contig    uint64              // every tag up to contig has reached a pump
	early     map[uint64]struct{} // tags above contig+1 that reached a pump first
	buf       []*amqp.Delivery    // stBuffered deliveries in arrival order, from bufHead
	bufHead   int
	handedOut int // deliveries in stOut or stBusy

	hops chan *amqp.Delivery
}

// maxConsumers caps the AMQP consumers one stream adds as its prefetch
// grows.
const maxConsumers = 16

// consumer returns the session's consumer, starting it on the first call
// with a prefetch of Config.Prefetch, or else first.
func (ss *session) consumer(first int) (*consumer, error) {
	ss.consMu.Lock()
	c := ss.cons
	if c == nil {
		ch, err := ss.channel()
		if err != nil {
			ss.consMu.Unlock()
			return nil, err
		}
		c = &consumer{
			ss:    ss,
			ch:    ch,
			state: make(map[uint64]uint8),
			early: make(map[uint64]struct{}),
			hops:  make(chan *amqp.Delivery, 256),
		}
		cancelled := ch.NotifyCancel(make(chan string, 1))
		ss.wg.Go(func() {
			select {
			case tag, ok := <-cancelled:
				if ok {
					ss.fail(fmt.Errorf("amqpstream: the broker cancelled consumer %s (was queue %s deleted?)", tag, ss.s.cfg.Queue))
				}
			case <-ss.done:
			}
		})
		ss.wg.Go(func() { c.hopper() })
		ss.cons = c
	}
	ss.consMu.Unlock()

	c.setup.Lock()
	defer c.setup.Unlock()
	if c.prefetch == 0 {
		n := ss.s.cfg.Prefetch
		if n == 0 {
			n = first
		}
		if err := c.add(n); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// grow raises the prefetch after a Poll got short fewer tasks than it
// asked for, if the broker could not send more because all of the
// prefetch was in use: the caller has room that the prefetch denies it.
// Tasks done but not yet acked (a processor batches its acks) hold
// prefetch too, so the prefetch settles at what the caller can hold plus
// what it has in flight to the broker. Each step adds an AMQP consumer
// with its own prefetch count: the broker applies a new count only to new
// consumers.
func (c *consumer) grow(short int) error {
	c.setup.Lock()
	defer c.setup.Unlock()
	c.mu.Lock()
	blocked := len(c.state) >= c.prefetch
	c.mu.Unlock()
	if !blocked || len(c.tags) >= maxConsumers {
		return nil
	}
	step := min(max(short, c.prefetch/8), 65535-c.prefetch)
	if step <= 0 {
		return nil
	}
	return c.add(step)
}

// add starts an AMQP consumer with prefetch n. c.setup must be held.
func (c *consumer) add(n int) error {
	ss := c.ss
	if err := c.ch.Qos(n, 0, false); err != nil {
		return fmt.Errorf("amqpstream: setting the prefetch count: %w", err)
	}
	tag := fmt.Sprintf("%s #%d.%d", ss.s.cfg.Name, ss.id, len(c.tags)+1)
	deliveries, err := c.ch.Consume(ss.s.cfg.Queue, tag, false, false, false, false, nil)
	if err != nil {
		return explain("consuming from queue "+ss.s.cfg.Queue, err)
	}
	c.tags = append(c.tags, tag)
	c.prefetch += n
	c.pumps.Add(1)
	ss.wg.Go(func() {
		defer c.pumps.Done()
		c.pump(deliveries)
	})
	return nil
}

// pump files the deliveries of one AMQP consumer until it ends: a due task
// goes to the buffer for Poll; a task not yet due, or one the broker
// redelivered after its holder's connection was lost, goes to the hopper.
func (c *consumer) pump(deliveries <-chan amqp.Delivery) {
	s := c.ss.s
	for d := range deliveries {
		dp := &d
		kind := uint8(stBuffered)
		m := readMeta(d.Headers)
		if (!m.runAt.IsZero() && time.Now().Before(m.runAt)) || d.Redelivered {
			kind = stHop
		}
		c.mu.Lock()
		if c.dead {
			c.mu.Unlock()
			continue
		}
		c.state[d.DeliveryTag] = kind
		c.insert(d.DeliveryTag)
		wake := false
		if kind == stBuffered {
			c.buf = append(c.buf, dp)
			wake = len(c.buf)-c.bufHead == 1
		}
		c.mu.Unlock()
		if kind == stHop {
			select {
			case c.hops <- dp:
			case <-c.ss.done:
			}
		} else if wake {
			s.signal()
		}
	}
}

// insert adds an unacked tag to order, keeping it ascending, and moves
// contig up. The broker numbers the deliveries of a channel 1, 2, 3...
// across its consumers, but the deliveries of several AMQP consumers can
// reach their pumps slightly out of order. c.mu must be held.
func (c *consumer) insert(tag uint64) {
	c.order = append(c.order, tag)
	for i := len(c.order) - 1; i > c.head && c.order[i-1] > c.order[i]; i-- {
		c.order[i-1], c.order[i] = c.order[i], c.order[i-1]
	}
	if tag != c.contig+1 {
		c.early[tag] = struct{}{}
		return
	}
	c.contig = tag
	for len(c.early) > 0 {
		if _, ok := c.early[c.contig+1]; !ok {
			break
		}
		delete(c.early, c.contig+1)
		c.contig++
	}
}

// lowest returns the lowest unacked tag, or 0 if there is none. c.mu must
// be held.
func (c *consumer) lowest() uint64 {
	for c.head < len(c.order) {
		if _, ok := c.state[c.order[c.head]]; ok {
			break
		}
		c.head++
	}
	if c.head > 1024 && c.head > len(c.order)/2 {
		n := copy(c.order, c.order[c.head:])
		c.order = c.order[:n]
		c.head = 0
	}
	if c.head == len(c.order) {
		return 0
	}
	return c.order[c.head]
}

// take hands out up to max buffered deliveries.
func (c *consumer) take(max int) []*amqp.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(max, len(c.buf)-c.bufHead)
	if n <= 0 || c.dead {
		return nil
	}
	out := make([]*amqp.Delivery, n)
	copy(out, c.buf[c.bufHead:c.bufHead+n])
	clear(c.buf[c.bufHead : c.bufHead+n])
	c.bufHead += n
	if c.bufHead == len(c.buf) {
		c.buf, c.bufHead = c.buf[:0], 0
	} else if c.bufHead > 1024 && c.bufHead > len(c.buf)/2 {
		k := copy(c.buf, c.buf[c.bufHead:])
		clear(c.buf[k:])
		c.buf, c.bufHead = c.buf[:k], 0
	}
	for _, d := range out {
		c.state[d.DeliveryTag] = stOut
	}
	c.handedOut += n
	return out
}

// ack acknowledges handed-out deliveries and returns how many of them it
// could not ack because the channel is gone. Tags that are not handed out
// (already acked or nacked) are skipped. Tags below the lowest remaining
// unacked tag, and not above contig, are acked with one basic.ack
// (multiple): every other tag up to there is settled already. The others
// are acked one by one. The frames are sent under c.mu, so that a
// multiple ack never covers a tag that another call settled but has not
// acked yet.
func (c *consumer) ack(tags []uint64) (lost int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return len(tags)
	}
	mine := tags[:0:0]
	for _, tag := range tags {
		if c.state[tag] == stOut {
			delete(c.state, tag)
			mine = append(mine, tag)
		}
	}
	if len(mine) == 0 {
		return 0
	}
	c.handedOut -= len(mine)
	slices.Sort(mine)
	low := c.lowest()
	i := 0
	for i < len(mine) && (low == 0 || mine[i] < low) && mine[i] <= c.contig {
		i++
	}
	if i > 1 {
		if err := c.ch.Ack(mine[i-1], true); err != nil {
			return len(mine)
		}
	} else if i == 1 {
		if err := c.ch.Ack(mine[0], false); err != nil {
			return len(mine)
		}
	}
	for j, tag := range mine[i:] {
		if err := c.ch.Ack(tag, false); err != nil {
			return len(mine) - i - j
		}
	}
	return 0
}

// begin marks a handed-out delivery as being nacked. It reports false if
// the delivery is not handed out (already acked or nacked) or the channel
// is gone.
func (c *consumer) begin(tag uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || c.state[tag] != stOut {
		return false
	}
	c.state[tag] = stBusy
	return true
}

// finish acks a delivery whose message was republished (a nack or a hop).
// requeue instead returns it to the queue, when republishing failed.
func (c *consumer) finish(tag uint64, requeue bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.state[tag]
	if c.dead || !ok {
		return amqp.ErrClosed
	}
	delete(c.state, tag)
	if st == stBusy {
		c.handedOut--
	}
	if requeue {
		return c.ch.Nack(tag, false, true)
	}
	return c.ch.Ack(tag, false)
}

// kill marks the consumer's deliveries as lost with its session.
func (c *consumer) kill() {
	c.mu.Lock()
	c.dead = true
	clear(c.state)
	clear(c.early)
	c.order, c.head = nil, 0
	clear(c.buf)
	c.buf, c.bufHead = nil, 0
	c.handedOut = 0
	c.mu.Unlock()
}

// giveBack ends consuming and returns the buffered deliveries, which no
// one has seen, to the work queue without counting an attempt: each is
// republished as it was, then acked. (Closing the channel would requeue
// them too, but marked redelivered, which counts an attempt.)
func (c *consumer) giveBack(ctx context.Context) error {
	c.setup.Lock()
	for _, tag := range c.tags {
		_ = c.ch.Cancel(tag, false)
	}
	c.setup.Unlock()
	pumped := make(chan struct{})
	go func() {
		c.pumps.Wait()
		close(pumped)
	}()
	select {
	case <-pumped:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ss.done:
		return nil
	}
	c.mu.Lock()
	left := slices.Clone(c.buf[c.bufHead:])
	c.mu.Unlock()
	if len(left) == 0 {
		return nil
	}
	out := make([]outgoing, len(left))
	maxPrio := c.ss.s.cfg.MaxPriority
	for i, d := range left {
		t := decodeTask(d)
		out[i] = outgoing{queue: c.ss.s.cfg.Queue, msg: repost(d, t, t.Attempt-1, maxPrio)}
	}
	err := c.ss.pub.publish(ctx, out)
	for i, d := range left {
		if out[i].err == nil {
			c.mu.Lock()
			if c.state[d.DeliveryTag] == stBuffered {
				delete(c.state, d.DeliveryTag)
				_ = c.ch.Ack(d.DeliveryTag, false)
			}
			c.mu.Unlock()
		}
	}
	if err != nil {
		return fmt.Errorf("amqpstream: handing back %d buffered tasks at Close: %w; the broker requeues the rest, counting an attempt", len(left), err)
	}
	return nil
}

// hopper republishes the deliveries that the pump set aside, so that Poll
// never waits for them: a task not yet due goes to the next delay queue
// (no attempt counts); a task the broker redelivered goes back to the work
// queue with the lost attempt counted, or to the dead-letter queue if that
// was its last (so a task that crashes its processor cannot crash-loop the
// fleet). Each message is acked once its copy is confirmed; a failure is
// retried with a growing wait while the session lives, so a persistent
// error (a delay queue declared with other arguments) cannot hot-loop.
func (c *consumer) hopper() {
	ss := c.ss
	wait := 50 * time.Millisecond
	var batch []*amqp.Delivery
	for {
		if len(batch) == 0 {
			select {
			case d := <-c.hops:
				batch = append(batch, d)
			case <-ss.done:
				return
			}
		}
	more:
		for len(batch) < 256 {
			select {
			case d := <-c.hops:
				batch = append(batch, d)
			default:
				break more
			}
		}
		failed := c.hop(batch)
		batch = append(batch[:0], failed...)
		if len(failed) == 0 {
			wait = 50 * time.Millisecond
			continue
		}
		timer := time.NewTimer(jitter(wait))
		select {
		case <-timer.C:
		case <-ss.done:
			timer.Stop()
			return
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// hop republishes a batch for the hopper and returns the deliveries that
// could not be.
func (c *consumer) hop(batch []*amqp.Delivery) (failed []*amqp.Delivery) {
	ss := c.ss
	cfg := ss.s.cfg
	// A lost session nacks every pending confirm, so this timeout only
	// bounds a broker that stopped answering.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	out := make([]outgoing, 0, len(batch))
	sent := make([]*amqp.Delivery, 0, len(batch))
	var firstErr error
	for _, d := range batch {
		t := decodeTask(d)
		attempts := t.Attempt - 1
		queue := cfg.Queue
		msg := amqp.Publishing{}
		switch remaining := time.Until(t.RunAt); {
		case !t.RunAt.IsZero() && remaining > 0:
			name, err := ss.ensureDelay(bucketFor(remaining))
			if err != nil {
				firstErr = cmpErr(firstErr, err)
				failed = append(failed, d)
				continue
			}
			queue = name
			msg = repost(d, t, attempts, cfg.MaxPriority)
		case !d.Redelivered:
			// It fell due on its way here: back to the work queue as it is.
			msg = repost(d, t, attempts, cfg.MaxPriority)
		case t.MaxAttempts > 0 && attempts+1 >= t.MaxAttempts:
			reason := fmt.Sprintf("out of attempts (%d of %d): the connection of the processor running it was lost, on its last attempt; "+
				"a task that crashes its processor would otherwise crash-loop", attempts+1, t.MaxAttempts)
			queue = deadQueue(cfg.Queue)
			t.LastError = reason
			msg = repost(d, t, attempts+1, cfg.MaxPriority)
			markDead(msg.Headers, reason)
		default:
			msg = repost(d, t, attempts+1, cfg.MaxPriority)
		}
		out = append(out, outgoing{queue: queue, msg: msg})
		sent = append(sent, d)
	}
	if len(out) > 0 {
		_ = ss.pub.publish(ctx, out)
	}
	for i, d := range sent {
		if err := out[i].err; err != nil {
			firstErr = cmpErr(firstErr, err)
			if errors.Is(err, errReturned) {
				ss.forget(out[i].queue)
			}
			failed = append(failed, d)
			continue
		}
		_ = c.finish(d.DeliveryTag, false)
	}
	if firstErr != nil && !ss.dead() {
		cfg.Logger.Warn("amqpstream: could not move delayed or redelivered tasks; retrying", "queue", cfg.Queue,
			"tasks", len(failed), "err", firstErr)
	}
	return failed
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// markDead adds the dead-letter headers.
func markDead(h amqp.Table, reason string) {
	h[headerDeadReason] = truncate(reason, maxReason)
	h[headerDeadAt] = time.Now().UnixMilli()
	if reason != "" {
		h[headerLastError] = truncate(reason, maxReason)
	}
}
