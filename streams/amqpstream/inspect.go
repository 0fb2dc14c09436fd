package amqpstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify"
)

// maxBrowse bounds how many dead tasks one List, Get, Retry or Delete
// reads.
const maxBrowse = 10000

// Inspector shows and repairs what the broker can show of a stream's
// queues. It implements peonify.Inspector with these limits, which come
// from AMQP: RabbitMQ counts a queue's messages, but cannot look a message
// up by ID, nor list a queue without taking its messages.
//
//   - Counts reports pending (ready messages in the work queue, including
//     delayed tasks passing through it between two delay queues),
//     scheduled (messages in the delay queues), dead (the dead-letter
//     queue) and running: the deliveries this stream has handed out and
//     not yet settled. Other processes' running tasks are not visible over
//     AMQP (the management plugin shows them as "unacked").
//   - List, Get, Retry and Delete see dead tasks only. They read the
//     dead-letter queue with basic.get, at most 10,000 messages, and put
//     back what they do not remove. Meanwhile those messages are invisible
//     to another Inspector, which may then see fewer. Get of a task that is
//     not dead returns peonify.ErrNotFound; List of another state returns
//     an error wrapping errors.ErrUnsupported.
//   - Purge empties the queues of one state: pending (the work queue),
//     scheduled (the delay queues) or dead.
type Inspector struct{ s *Stream }

var _ peonify.Inspector = (*Inspector)(nil)

// Inspector returns the stream's Inspector.
func (s *Stream) Inspector() *Inspector { return &Inspector{s: s} }

// Counts returns the number of tasks in each state that the broker can
// count (see Inspector).
func (in *Inspector) Counts(ctx context.Context) (map[peonify.State]int, error) {
	ss, err := in.s.session(ctx, true)
	if err != nil {
		return nil, err
	}
	counts := make(map[peonify.State]int, 4)
	n, _, err := ss.inspect(in.s.cfg.Queue)
	if err != nil {
		return nil, err
	}
	counts[peonify.StatePending] = n
	if n, _, err = ss.inspect(deadQueue(in.s.cfg.Queue)); err != nil {
		return nil, err
	}
	counts[peonify.StateDead] = n
	for _, q := range allDelayQueues(in.s.cfg.Queue) {
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
		c.mu.Unlock()
	}
	return counts, nil
}

// List returns dead tasks ordered by ID (see Inspector). For another
// state it returns an error wrapping errors.ErrUnsupported.
func (in *Inspector) List(ctx context.Context, opts peonify.ListOptions) ([]peonify.TaskInfo, error) {
	if opts.State != peonify.StateDead {
		return nil, fmt.Errorf("amqpstream: cannot list %q tasks: RabbitMQ cannot list a queue without taking its messages; only dead tasks can be listed: %w",
			opts.State, errors.ErrUnsupported)
	}
	limit := opts.Limit
	if limit <= 0 {
		limit = 100
	}
	var infos []peonify.TaskInfo
	err := in.browse(ctx, func(d *amqp.Delivery) action {
		info := deadInfo(d)
		if (opts.Type == "" || info.Task.Type == opts.Type) && info.Task.ID > opts.After {
			infos = append(infos, info)
		}
		return keep
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(infos, func(a, b peonify.TaskInfo) int { return cmp.Compare(a.Task.ID, b.Task.ID) })
	return infos[:min(limit, len(infos))], nil
}

// Get returns a dead task. A task that is not dead (pending, scheduled or
// running) cannot be found by ID over AMQP: Get then returns an error
// wrapping peonify.ErrNotFound, as for an unknown ID.
func (in *Inspector) Get(ctx context.Context, id string) (peonify.TaskInfo, error) {
	var (
		info  peonify.TaskInfo
		found bool
	)
	err := in.browse(ctx, func(d *amqp.Delivery) action {
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
		return info, fmt.Errorf("amqpstream: task %s is not among the dead tasks of queue %s (pending and scheduled tasks cannot be looked up by ID): %w",
			id, in.s.cfg.Queue, peonify.ErrNotFound)
	}
	return info, nil
}

// Retry moves dead tasks back to the work queue with a fresh attempt
// count (all of them when ids is empty) and returns how many it moved.
func (in *Inspector) Retry(ctx context.Context, ids ...string) (int, error) {
	return in.remove(ctx, ids, true)
}

// Delete removes dead tasks and returns how many it removed. Pending and
// scheduled tasks cannot be found by ID, so Delete does not remove them;
// Purge empties their queues.
func (in *Inspector) Delete(ctx context.Context, ids ...string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	return in.remove(ctx, ids, false)
}

// Purge removes every task in state: StatePending empties the work queue,
// StateScheduled the delay queues and StateDead the dead-letter queue. It
// returns how many it removed. StateDone has nothing to remove; running
// tasks cannot be purged.
func (in *Inspector) Purge(ctx context.Context, state peonify.State) (int, error) {
	var queues []string
	switch state {
	case peonify.StatePending:
		queues = []string{in.s.cfg.Queue}
	case peonify.StateScheduled:
		queues = allDelayQueues(in.s.cfg.Queue)
	case peonify.StateDead:
		queues = []string{deadQueue(in.s.cfg.Queue)}
	case peonify.StateDone:
		return 0, nil
	default:
		return 0, fmt.Errorf("amqpstream: cannot purge %q tasks: purge pending, scheduled or dead tasks", state)
	}
	ss, err := in.s.session(ctx, true)
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
	return total, nil
}

// remove retries (republishes to the work queue) or deletes the dead tasks
// named by ids, or every dead task if ids is empty.
func (in *Inspector) remove(ctx context.Context, ids []string, retry bool) (int, error) {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	ss, err := in.s.session(ctx, true)
	if err != nil {
		return 0, err
	}
	n := 0
	err = in.browse(ctx, func(d *amqp.Delivery) action {
		if len(want) > 0 && !want[d.MessageId] {
			return keep
		}
		if retry {
			t := decodeTask(d)
			t.RunAt = time.Time{}
			msg := repost(d, t, 0, in.s.cfg.MaxPriority)
			delete(msg.Headers, headerDeadReason)
			delete(msg.Headers, headerDeadAt)
			if err := ss.publishOne(ctx, in.s.cfg.Queue, msg); err != nil {
				return abort(err)
			}
		}
		n++
		return take
	})
	return n, err
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
func (in *Inspector) browse(ctx context.Context, fn func(d *amqp.Delivery) action) error {
	ss, err := in.s.session(ctx, true)
	if err != nil {
		return err
	}
	ch, err := ss.conn.Channel()
	if err != nil {
		return fmt.Errorf("amqpstream: opening a channel: %w", err)
	}
	defer ch.Close()
	queue := deadQueue(in.s.cfg.Queue)
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
