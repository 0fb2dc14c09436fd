package amqpstream

import (
	"context"
	"errors"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

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

// newPublisher opens a publishing channel. Unlike the consuming channel,
// its failure does not end the session: the broker closes a channel for a
// publish it refuses (a message over its size limit), and that must not
// make every delivery of the session stale. The next publish opens
// another.
func newPublisher(ss *session) (*publisher, error) {
	ch, err := ss.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqpstream: opening a channel: %w", err)
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

// publish publishes on the session's publishing channel, opening a new
// one if the broker closed the last (see newPublisher).
func (ss *session) publish(ctx context.Context, out []outgoing) error {
	ss.pubMu.Lock()
	p := ss.pub
	if p == nil || p.ch.IsClosed() {
		var err error
		if p, err = newPublisher(ss); err != nil {
			ss.pubMu.Unlock()
			for i := range out {
				out[i].err = err
			}
			return err
		}
		ss.pub = p
	}
	ss.pubMu.Unlock()
	return p.publish(ctx, out)
}

// publishOne publishes one message and waits for its confirm.
func (ss *session) publishOne(ctx context.Context, queue string, msg amqp.Publishing) error {
	out := []outgoing{{queue: queue, msg: msg}}
	err := ss.publish(ctx, out)
	if errors.Is(err, errReturned) {
		ss.forget(queue)
	}
	return err
}
