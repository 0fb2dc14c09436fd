package peonify

import (
	"context"
	"errors"
	"time"
)

// Acks are batched: workers append successful deliveries to their stream's
// buffer, and the flusher sends the buffer at most ackDelay after the
// oldest delivery in it, or at once when ackBatch have gathered or nothing
// else runs or waits in the processor (an idle processor has no batch to
// wait for, and a workflow's next step waits for this ack). No Ack
// call carries more than ackBatch deliveries, and each stream has up to
// ackCalls calls in flight, so a stream that confirms every call with a
// round trip keeps up with a fast drain instead of making each batch wait
// for the one before.
const (
	ackDelay = 2 * time.Millisecond
	ackBatch = 256
	ackCalls = 4
)

// ackQueue is a stream's buffer of deliveries waiting to be acked. Its
// fields are guarded by streamState.ackMu.
type ackQueue struct {
	acks   []Delivery // successful deliveries waiting for the flusher
	oldest time.Time  // when the first of acks was added
	calls  int        // Ack calls in flight
	spare  []Delivery // an emptied array for acks to reuse
}

// ack queues a successful delivery for the flusher.
func (p *Processor) ack(st *streamState, d Delivery) {
	st.ackMu.Lock()
	q := &st.ackQ
	q.acks = append(q.acks, d)
	n := len(q.acks)
	if n == 1 {
		q.oldest = time.Now()
		if p.running.Load() == 0 && len(p.queue) == 0 {
			// Nothing runs or waits, so no ack will come to share the
			// batch: send it at once. A workflow's next step, or a
			// producer waiting for the result, is then not held back by
			// the batching delay.
			q.oldest = q.oldest.Add(-ackDelay)
		}
	}
	st.ackMu.Unlock()
	if n == 1 || n == ackBatch {
		p.kickAcks()
	}
}

// kickAcks wakes the flusher.
func (p *Processor) kickAcks() {
	select {
	case p.ackKick <- struct{}{}:
	default:
	}
}

// flusher sends batched acks until done is closed; the calls it starts,
// which give up when ctx ends, may still be running when it returns.
func (p *Processor) flusher(ctx context.Context, done <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-done:
			return
		case <-p.ackKick:
		}
		for {
			// Gather until the oldest waiting ack is ackDelay old, unless
			// a batch is full or the waiting acks are old already (they
			// waited for a free call).
			wait, _ := p.sendAcks(ctx, false)
			if wait <= 0 {
				break
			}
			timer.Reset(wait)
			select {
			case <-done:
				timer.Stop()
				return
			case <-timer.C:
			case <-p.ackKick:
				timer.Stop()
			}
		}
	}
}

// sendAcks starts an Ack call for each full batch, and for each batch whose
// oldest delivery is due, while the stream has a call free. It returns how
// long until the next partial batch is due, or 0 if none waits (or all
// that wait need a free call, whose end kicks the flusher), and whether
// any delivery is left waiting. With now, every batch is due. The calls
// give up when ctx ends.
func (p *Processor) sendAcks(ctx context.Context, now bool) (next time.Duration, left bool) {
	t := time.Now()
	for _, st := range p.streams {
		st.ackMu.Lock()
		q := &st.ackQ
		for len(q.acks) > 0 && q.calls < ackCalls {
			n := len(q.acks)
			if n < ackBatch && !now {
				if due := ackDelay - t.Sub(q.oldest); due > 0 {
					if next == 0 || due < next {
						next = due
					}
					break
				}
			}
			n = min(n, ackBatch)
			// A batch of everything takes the array, and acks go on in the
			// spare one; otherwise the batch keeps its part of the array and
			// later appends go past it.
			batch, whole := q.acks[:n], n == len(q.acks)
			if whole {
				q.acks, q.spare = q.spare, nil
			} else {
				batch = batch[:n:n]
				q.acks = q.acks[n:]
			}
			q.calls++
			p.ackCalls.Add(1)
			go p.ackBatch(ctx, st, batch, whole)
		}
		left = left || len(q.acks) > 0
		st.ackMu.Unlock()
	}
	return next, left
}

// flushAcks sends every waiting ack, within the limit of calls in flight,
// until ctx ends; the calls it starts give up when ctx ends. The caller
// waits for them. The flusher must have stopped.
func (p *Processor) flushAcks(ctx context.Context) {
	for {
		if _, left := p.sendAcks(ctx, true); !left {
			return
		}
		select {
		case <-p.ackKick: // a call ended with acks waiting
		case <-ctx.Done():
			p.dropAcks()
			return
		}
	}
}

// dropAcks gives up on the acks still waiting when the shutdown ran out
// of time for them: their tasks run again when their leases end.
func (p *Processor) dropAcks() {
	for _, st := range p.streams {
		st.ackMu.Lock()
		n := len(st.ackQ.acks)
		clear(st.ackQ.acks)
		st.ackQ.acks = st.ackQ.acks[:0]
		st.ackMu.Unlock()
		if n > 0 {
			p.counters.ackErrors.Add(uint64(n))
			p.log.Error("peonify: shutdown ran out of time to ack these tasks; they will run again when their leases end",
				"stream", st.name, "tasks", n)
		}
	}
}

// ackBatch acks one batch, retrying transient errors a few times while ctx
// lasts. If the stream still fails, the tasks come back when their leases
// end and run again: at-least-once, never lost. An array that the batch
// owns (whole) becomes the stream's spare afterwards.
func (p *Processor) ackBatch(ctx context.Context, st *streamState, batch []Delivery, whole bool) {
	defer func() {
		clear(batch) // drop task references
		st.ackMu.Lock()
		if whole && st.ackQ.spare == nil {
			st.ackQ.spare = batch[:0]
		}
		st.ackQ.calls--
		waiting := len(st.ackQ.acks) > 0
		st.ackMu.Unlock()
		p.ackCalls.Done()
		if waiting {
			p.kickAcks()
		}
	}()
	wait := 50 * time.Millisecond
	for try := 1; ; try++ {
		callCtx, cancel := context.WithTimeout(ctx, p.cfg.StoreTimeout)
		err := timedOut(callCtx, "Ack", st, p.cfg.StoreTimeout, st.s.Ack(callCtx, batch...))
		cancel()
		if err == nil || errors.Is(err, ErrLeaseLost) {
			return
		}
		// Wait before the next try, unless ctx ends meanwhile.
		if try == 3 || waitFor(ctx.Done(), jitter(wait, 0.5)) {
			p.log.Error("peonify: ack failed; these tasks will run again when their leases end",
				"stream", st.name, "tasks", len(batch), "err", err)
			p.counters.ackErrors.Add(uint64(len(batch)))
			return
		}
		wait *= 4
	}
}
