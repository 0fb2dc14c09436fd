package natsstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/peonify/peonify"
)

// enqueueWindow is how many publishes of one Enqueue wait for their
// acknowledgements at once.
const enqueueWindow = 512

// enqueueAckWait is how long an Enqueue of several tasks waits for the
// next acknowledgement before it reports the rest as unsure, whatever its
// context allows. An asynchronous publish has no timeout of its own: one
// sent to a stream leader whose node then died is never answered, and
// Enqueue waited until its context ended (for ever without a deadline)
// although the cluster had elected a new leader after a few seconds
// (chaostest's leaderfail cell). It is nats.go's default timeout of a
// single publish.
const enqueueAckWait = 5 * time.Second

// Enqueue stores tasks with JetStream publishes, each with its task ID as
// Nats-Msg-Id, and returns when the server has acknowledged every one (on
// file storage, the task is then on disk). A task with a RunAt ahead goes
// to the scheduler, which moves it to Config.Subject when it is due.
//
// Duplicates are detected by JetStream within Config.DuplicateWindow: a
// task whose ID was stored less than that long ago, whether it is still
// waiting, running or already done, is not stored again, and Enqueue
// returns a *peonify.DuplicateError naming it after storing the others.
// An older ID is stored again. Task.UniqueKey and Task.Priority are
// carried in headers but not enforced (see README.md).
//
// Enqueue validates every task before publishing any. If it fails midway
// some tasks may be stored: calling it again with the same tasks is safe,
// because the stored ones are then reported as duplicates.
func (s *Stream) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	for _, t := range tasks {
		if err := t.Validate(); err != nil {
			return err
		}
		if err := checkHeaders(t); err != nil {
			return err
		}
	}
	now := time.Now()
	limit := s.nc.MaxPayload()
	msgs := make([]*nats.Msg, len(tasks))
	for i, t := range tasks {
		_ = t.Prepare(now) // validated above
		subject := s.subj.work
		if t.RunAt.After(now) {
			subject = s.subj.scheduled
		}
		m := encodeTask(t, subject)
		if size := int64(m.Size() - len(m.Subject)); limit > 0 && size > limit {
			return &peonify.InvalidTaskError{ID: t.ID, Reason: fmt.Sprintf(
				"the task is %d bytes with its headers, more than the server's max_payload of %d bytes: "+
					"store large data elsewhere and pass a reference, or raise max_payload in the server's configuration", size, limit)}
		}
		msgs[i] = m
	}
	var dups []string
	if len(msgs) == 1 {
		pa, err := s.js.PublishMsg(ctx, msgs[0])
		if err != nil {
			return s.publishError(err, 1, 1)
		}
		if pa.Duplicate {
			dups = append(dups, tasks[0].ID)
		}
	} else {
		for lo := 0; lo < len(msgs); lo += enqueueWindow {
			hi := min(lo+enqueueWindow, len(msgs))
			d, err := s.publishAsync(ctx, tasks[lo:hi], msgs[lo:hi])
			dups = append(dups, d...)
			if err != nil {
				return s.publishError(err, len(msgs)-lo, len(msgs))
			}
		}
	}
	if len(dups) > 0 {
		return &peonify.DuplicateError{IDs: dups}
	}
	return nil
}

// publishAsync publishes msgs without waiting between them, then waits for
// every acknowledgement, and returns the IDs the server reported as
// duplicates.
func (s *Stream) publishAsync(ctx context.Context, tasks []*peonify.Task, msgs []*nats.Msg) ([]string, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	var perr error
	for _, m := range msgs {
		f, err := s.js.PublishMsgAsync(m)
		if err != nil {
			perr = err
			break
		}
		futures = append(futures, f)
	}
	var dups []string
	timer := time.NewTimer(enqueueAckWait)
	defer timer.Stop()
	for i, f := range futures {
		select {
		case pa := <-f.Ok():
			if pa.Duplicate {
				dups = append(dups, tasks[i].ID)
			}
		case err := <-f.Err():
			if perr == nil {
				perr = err
			}
		case <-ctx.Done():
			return dups, ctx.Err()
		case <-timer.C:
			return dups, fmt.Errorf("%w: no acknowledgement from the stream for %s (in a JetStream cluster, its leader may have failed)",
				nats.ErrTimeout, enqueueAckWait)
		}
		timer.Reset(enqueueAckWait) // each acknowledgement gives the next its own wait
	}
	return dups, perr
}

// publishError explains a failed Enqueue.
func (s *Stream) publishError(err error, unsure, total int) error {
	hint := ""
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		// In a JetStream cluster, only the stream's leader takes
		// publishes: while the replicas elect a new one (seconds after
		// the leader's node failed), nobody answers either.
		hint = ": no stream answered on subject " + s.subj.work + ": run natsstream.Setup with the same Config first, " +
			"or, in a JetStream cluster, the stream is electing a leader (a few seconds after a node failed): enqueue again"
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, context.DeadlineExceeded):
		hint = ": the tasks may or may not be stored; enqueue them again, the stored ones are then reported as duplicates"
	}
	what := "the task"
	if total > 1 {
		what = strconv.Itoa(unsure) + " of " + strconv.Itoa(total) + " tasks"
	}
	return fmt.Errorf("natsstream: publishing %s to stream %s: %w%s", what, s.cfg.Stream, err, hint)
}
