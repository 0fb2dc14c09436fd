package amqpstream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/listing"
)

// maxBrowse bounds how many dead tasks one List, Get, Retry or Delete
// reads.
const maxBrowse = 10000

// The Stream implements peonify.Inspector within what AMQP lets a client
// see: RabbitMQ counts a queue's messages, but cannot look a message up by
// ID, nor list a queue without taking its messages. Where the broker
// cannot answer, the methods return an error wrapping errors.ErrUnsupported
// that says why, so that a tool can tell "cannot say" from "none" (see
// the package documentation).
var _ peonify.Inspector = (*Stream)(nil)

// Counts returns the number of tasks in each state: pending (ready in the
// work queue, and received by this stream but not handed out), scheduled
// (in the delay queues), dead, and running: the deliveries this stream has
// handed out and not settled, as other processes' are not visible over
// AMQP. There are no done tasks.
func (s *Stream) Counts(ctx context.Context) (map[peonify.State]int, error) {
	ss, err := s.session(ctx, true)
	if err != nil {
		return nil, err
	}
	counts := make(map[peonify.State]int, 4)
	n, _, err := ss.inspect(s.cfg.Queue)
	if err != nil {
		return nil, err
	}
	counts[peonify.StatePending] = n
	if n, _, err = ss.inspect(deadQueue(s.cfg.Queue)); err != nil {
		return nil, err
	}
	counts[peonify.StateDead] = n
	for _, q := range allDelayQueues(s.cfg.Queue) {
		n, _, err := ss.inspect(q)
		if err != nil {
			return nil, err
		}
		counts[peonify.StateScheduled] += n
	}
	ss.consMu.Lock()
	c := ss.cons
	ss.consMu.Unlock()
	if c != nil {
		c.mu.Lock()
		counts[peonify.StateRunning] = c.handedOut
		counts[peonify.StatePending] += len(c.buf) - c.bufHead
		c.mu.Unlock()
	}
	return counts, nil
}

// List returns dead tasks ordered by ID. There are no done tasks: the
// broker deletes a message when it is acked. For pending, scheduled and
// running tasks it returns an error wrapping errors.ErrUnsupported.
func (s *Stream) List(ctx context.Context, opts peonify.ListOptions) ([]peonify.TaskInfo, error) {
	opts, err := opts.Normalize()
	if err != nil {
		return nil, fmt.Errorf("amqpstream: %w", err)
	}
	switch opts.State {
	case peonify.StateDead:
	case peonify.StateDone, peonify.StateWaiting, peonify.StateCancelled:
		return nil, nil
	case peonify.StatePending, peonify.StateScheduled, peonify.StateRunning:
		return nil, fmt.Errorf("amqpstream: cannot list %s tasks: RabbitMQ cannot list a queue without taking its messages; only dead tasks can be listed: %w",
			opts.State, errors.ErrUnsupported)
	default:
		return nil, fmt.Errorf("amqpstream: cannot list tasks in state %q: list pending, scheduled, running, dead or done tasks", opts.State)
	}
	page := listing.Infos(opts)
	err = s.browse(ctx, func(d *amqp.Delivery) action {
		if ti := deadInfo(d); opts.Key == "" || ti.Task.Key == opts.Key {
			page.Add(ti)
		}
		return keep
	})
	if err != nil {
		return nil, err
	}
	return page.Items(), nil
}

// Get returns a dead task. A task that is not dead (pending, scheduled or
// running) cannot be found by ID over AMQP, nor told from a task that does
// not exist: for an ID that is not among the dead tasks Get returns an
// error wrapping errors.ErrUnsupported.
func (s *Stream) Get(ctx context.Context, id string) (peonify.TaskInfo, error) {
	var (
		info  peonify.TaskInfo
		found bool
	)
	err := s.browse(ctx, func(d *amqp.Delivery) action {
		if !found && d.MessageId == id {
			info, found = deadInfo(d), true
			return stop
		}
		return keep
	})
	if err != nil {
		return info, err
	}
	if !found {
		return info, fmt.Errorf("amqpstream: task %s is not among the dead tasks of queue %s, and RabbitMQ cannot look up a pending, scheduled or running task by ID: %w",
			id, s.cfg.Queue, errors.ErrUnsupported)
	}
	return info, nil
}

// Retry moves dead tasks back to the work queue with a fresh attempt
// count (all of them when ids is empty) and returns how many it moved.
// IDs of tasks that are not dead are not retried.
func (s *Stream) Retry(ctx context.Context, ids ...string) (int, error) {
	n, _, err := s.remove(ctx, ids, true)
	return n, err
}

// Delete removes dead tasks and returns how many it removed. Pending,
// scheduled and running tasks cannot be found by ID over AMQP: if some of
// the ids are not among the dead tasks, Delete removes the others and
// returns an error wrapping errors.ErrUnsupported that names them. Purge
// empties the queue of a state.
func (s *Stream) Delete(ctx context.Context, ids ...string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	n, missing, err := s.remove(ctx, ids, false)
	if err != nil || len(missing) == 0 {
		return n, err
	}
	slices.Sort(missing)
	return n, fmt.Errorf("amqpstream: deleted %d dead %s; %s not among the dead tasks of queue %s, and RabbitMQ cannot find a pending, scheduled or running task by ID (purge a state to empty its queue): %w",
		n, plural(n, "task", "tasks"), listIDs(missing), s.cfg.Queue, errors.ErrUnsupported)
}

// listIDs names task IDs in an error message: "task a", "tasks a, b", or
// the first few and how many more.
func listIDs(ids []string) string {
	const show = 5
	if len(ids) == 1 {
		return "task " + ids[0] + " is"
	}
	if len(ids) <= show {
		return "tasks " + strings.Join(ids, ", ") + " are"
	}
	return fmt.Sprintf("tasks %s and %d more are", strings.Join(ids[:show], ", "), len(ids)-show)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// Purge removes every task in state: StatePending empties the work queue
// (and drops what this stream has received but not handed out; other
// processes' prefetched messages are beyond its reach), StateScheduled
// the delay queues and StateDead the dead-letter queue. It returns how
// many it removed. StateDone has nothing to remove; running
// tasks cannot be purged.
func (s *Stream) Purge(ctx context.Context, state peonify.State) (int, error) {
	var queues []string
	switch state {
	case peonify.StatePending:
		queues = []string{s.cfg.Queue}
	case peonify.StateScheduled:
		queues = allDelayQueues(s.cfg.Queue)
	case peonify.StateDead:
		queues = []string{deadQueue(s.cfg.Queue)}
	case peonify.StateDone, peonify.StateWaiting, peonify.StateCancelled:
		return 0, nil
	default:
		return 0, fmt.Errorf("amqpstream: cannot purge %q tasks: purge pending, scheduled or dead tasks", state)
	}
	ss, err := s.session(ctx, true)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, q := range queues {
		n, err := ss.purge(q)
		total += n
		if err != nil {
			return total, err
		}
	}
	if state == peonify.StatePending {
		// The broker does not purge what it has sent to consumers: remove
		// what this stream holds for Poll, which Counts counts as pending.
		ss.consMu.Lock()
		c := ss.cons
		ss.consMu.Unlock()
		if c != nil {
			total += c.discard()
		}
	}
	return total, nil
}

// discard removes (acks) the deliveries that wait for Poll and returns how
// many it removed.
func (c *consumer) discard() int {
	ds := c.take(math.MaxInt)
	tags := make([]uint64, len(ds))
	for i, d := range ds {
		tags[i] = d.DeliveryTag
	}
	return len(tags) - c.ack(tags)
}

// remove retries (republishes to the work queue) or deletes the dead tasks
// named by ids, or every dead task if ids is empty. It returns how many it
// removed and which of the ids it did not find.
func (s *Stream) remove(ctx context.Context, ids []string, retry bool) (n int, missing []string, err error) {
	want := make(map[string]bool, len(ids)) // id -> found
	for _, id := range ids {
		want[id] = false
	}
	ss, err := s.session(ctx, true)
	if err != nil {
		return 0, nil, err
	}
	err = s.browse(ctx, func(d *amqp.Delivery) action {
		if len(want) > 0 {
			if _, ok := want[d.MessageId]; !ok {
				return keep
			}
			want[d.MessageId] = true
		}
		if retry {
			t := decodeTask(d)
			t.RunAt = time.Time{}
			msg := repost(d, t, 0, s.cfg.MaxPriority)
			delete(msg.Headers, headerDeadReason)
			delete(msg.Headers, headerDeadAt)
			if err := ss.publishOne(ctx, s.cfg.Queue, msg); err != nil {
				return abort(err)
			}
		}
		n++
		return take
	})
	for id, found := range want {
		if !found {
			missing = append(missing, id)
		}
	}
	return n, missing, err
}

// action is what a browse callback does with a dead message.
type action struct {
	take, stop bool
	err        error
}

var (
	keep = action{}
	take = action{take: true}
	stop = action{stop: true}
)

func abort(err error) action { return action{stop: true, err: err} }

// browse reads the dead-letter queue with basic.get on a channel of its
// own, calls fn for each message, acks (removes) those fn takes, and puts
// back the others by closing the channel, which requeues them in their
// places.
func (s *Stream) browse(ctx context.Context, fn func(d *amqp.Delivery) action) error {
	ss, err := s.session(ctx, true)
	if err != nil {
		return err
	}
	ch, err := ss.conn.Channel()
	if err != nil {
		return fmt.Errorf("amqpstream: opening a channel: %w", err)
	}
	defer ch.Close()
	queue := deadQueue(s.cfg.Queue)
	for range maxBrowse {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, ok, err := ch.Get(queue, false)
		if err != nil {
			return explain("reading queue "+queue, err)
		}
		if !ok {
			return nil
		}
		a := fn(&d)
		if a.take {
			if err := ch.Ack(d.DeliveryTag, false); err != nil {
				return fmt.Errorf("amqpstream: removing a dead task from queue %s: %w", queue, err)
			}
		}
		if a.stop {
			return a.err
		}
	}
	return nil
}

// deadInfo describes a message of the dead-letter queue.
func deadInfo(d *amqp.Delivery) peonify.TaskInfo {
	t := decodeTask(d)
	info := peonify.TaskInfo{
		State:     peonify.StateDead,
		Attempts:  t.Attempt - 1,
		LastError: t.LastError,
	}
	if r, ok := d.Headers[headerDeadReason]; ok {
		info.LastError = stringHeader(r)
	}
	if ms, ok := intHeader(d.Headers[headerDeadAt]); ok && ms > 0 {
		info.UpdatedAt = time.UnixMilli(ms)
	}
	t.Attempt = 0
	info.Task = *t
	return info
}
