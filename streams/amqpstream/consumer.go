package amqpstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/backoff"
	amqp "github.com/rabbitmq/amqp091-go"
)

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
	tag := fmt.Sprintf("%s #%d.%d", ss.s.cfg.Identity, ss.id, len(c.tags)+1)
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

// buffered returns how many deliveries wait for Poll.
func (c *consumer) buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf) - c.bufHead
}

// take hands out up to limit buffered deliveries.
func (c *consumer) take(limit int) []*amqp.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(limit, len(c.buf)-c.bufHead)
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
	c.lowest() // lets order drop settled tags when nothing is ever acked
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
	// basic.cancel waits for the broker's reply with no deadline: on a
	// connection that went silent it would wait until the heartbeats give
	// up. It runs in the session's goroutine group, so that Close can
	// give up at its deadline; closing the connection ends it.
	cancelled := make(chan struct{})
	c.ss.wg.Go(func() {
		defer close(cancelled)
		c.setup.Lock()
		defer c.setup.Unlock()
		for _, tag := range c.tags {
			_ = c.ch.Cancel(tag, false)
		}
	})
	select {
	case <-cancelled:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ss.done:
		return nil
	}
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
	err := c.ss.publish(ctx, out)
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
	b := backoff.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
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
			b.Reset()
			continue
		}
		timer := time.NewTimer(b.Next())
		select {
		case <-timer.C:
		case <-ss.done:
			timer.Stop()
			return
		}
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
		_ = ss.publish(ctx, out)
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
	h[headerDeadReason] = peonify.TruncateReason(reason)
	h[headerDeadAt] = time.Now().UnixMilli()
	if reason != "" {
		h[headerLastError] = peonify.TruncateReason(reason)
	}
}
