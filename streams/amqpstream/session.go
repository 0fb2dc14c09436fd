package amqpstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// session is one connection to the broker and the channels the stream uses
// on it. A session never reconnects: when its connection or its consuming
// channel fails, the session ends (done is closed) and the stream opens a
// new one. Delivery tags are numbers of the consuming channel, so a claim
// made on an ended session is stale: its ack could never reach the
// broker, which has already put the message back.
type session struct {
	s     *Stream
	id    uint64
	conn  *amqp.Connection
	pubMu sync.Mutex
	pub   *publisher // reopened after the broker closes its channel
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
		cfg.Properties["connection_name"] = s.cfg.Identity + " " + s.cfg.Queue
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
// mode, and the work and dead-letter queues declared. The connection and
// the consuming channel (opened by the first Poll) live as long as the
// session.
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
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 1))
	ss.wg.Go(func() {
		for b := range blocked {
			if b.Active {
				s.cfg.Logger.Warn("amqpstream: the broker blocks publishing on this connection (a resource alarm); Enqueue and Nack wait",
					"queue", s.cfg.Queue, "reason", b.Reason)
			} else {
				s.cfg.Logger.Info("amqpstream: the broker unblocked publishing", "queue", s.cfg.Queue)
			}
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

// channel opens a channel and ends the session when it fails, as the
// consuming channel must not be lost silently.
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
