package peonify

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Acks are batched: workers append successful deliveries to their stream's
// buffer and the flusher acks each buffer in one call, at most ackDelay
// after the first of them, or at once when ackBatch have gathered; no
// Ack call carries more than ackBatch deliveries.
const (
	ackDelay = 2 * time.Millisecond
	ackBatch = 256
)

// ack queues a successful delivery for the flusher.
func (p *Processor) ack(st *streamState, d Delivery) {
	st.ackMu.Lock()
	st.acks = append(st.acks, d)
	n := len(st.acks)
	st.ackMu.Unlock()
	if n == 1 || n >= ackBatch {
		select {
		case p.ackKick <- struct{}{}:
		default:
		}
	}
}

// flusher acks batched deliveries until done is closed.
func (p *Processor) flusher(done <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-done:
			return
		case <-p.ackKick:
		}
		// Gather for a moment unless a batch is already full.
		timer.Reset(ackDelay)
		select {
		case <-done:
			timer.Stop()
			return
		case <-timer.C:
		case <-p.ackKick:
			timer.Stop()
		}
		p.flushAcks()
	}
}

// flushAcks acks every buffered delivery, stream by stream.
func (p *Processor) flushAcks() {
	for _, st := range p.streams {
		st.ackMu.Lock()
		batch := st.acks
		st.acks, st.ackSpin = st.ackSpin[:0], nil
		st.ackMu.Unlock()
		if len(batch) == 0 {
			st.ackMu.Lock()
			st.ackSpin = batch
			st.ackMu.Unlock()
			continue
		}
		// A long backlog of acks (after a slow ack) goes out in bounded
		// calls, so one huge statement cannot outlast its timeout and let
		// leases of finished tasks run out.
		// The calls run side by side (streams are safe for concurrent
		// use), so a stream that confirms each ack call with a round trip
		// keeps up with a fast drain.
		var calls sync.WaitGroup
		for rest := batch; len(rest) > 0; {
			n := min(len(rest), ackBatch)
			chunk := rest[:n]
			calls.Go(func() { p.ackBatch(st, chunk) })
			rest = rest[n:]
		}
		calls.Wait()
		clear(batch) // drop task references
		st.ackMu.Lock()
		st.ackSpin = batch[:0]
		st.ackMu.Unlock()
	}
}

// ackBatch acks one batch, retrying transient errors a few times. If the
// stream still fails, the tasks come back when their leases end and run
// again: at-least-once, never lost.
func (p *Processor) ackBatch(st *streamState, batch []Delivery) {
	wait := 50 * time.Millisecond
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(p.base, 10*time.Second)
		err := st.s.Ack(ctx, batch...)
		cancel()
		if err == nil || errors.Is(err, ErrLeaseLost) {
			return
		}
		if try == 3 {
			p.log.Error("peonify: ack failed; these tasks will run again when their leases end",
				"stream", st.name, "tasks", len(batch), "err", err)
			p.counters.ackErrors.Add(uint64(len(batch)))
			return
		}
		time.Sleep(jitter(wait, 0.5))
		wait *= 4
	}
}
