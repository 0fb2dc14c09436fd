package peonify

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// streamState is the processor's view of one added stream.
type streamState struct {
	s       Stream
	name    string
	weight  int
	index   int
	pass    float64         // stride-scheduling position, guarded by capMu
	ready   bool            // waiting in reserve, guarded by capMu
	idled   bool            // the last poll had less than asked, guarded by capMu
	inPoll  bool            // between a reservation and the end of its Poll, guarded by capMu
	ext     Extender        // nil if the stream's claims do not expire
	tracker Tracker         // nil if the stream keeps no task state
	wf      WorkflowStore   // nil if the stream has no workflows
	start   Starter         // nil if the stream has nothing to start
	maxPoll int             // most tasks one Poll returns; 0: no limit
	wake    <-chan struct{} // nil if the stream is not a Waker

	lease      time.Duration // lease of the last claims, 0 if none; guarded by capMu
	leaseKnown bool          // st has returned claims, so lease is known; guarded by capMu

	ackMu sync.Mutex
	ackQ  ackQueue // guarded by ackMu

	polls      atomic.Uint64
	polled     atomic.Uint64 // tasks delivered
	pollErrors atomic.Uint64
	lastErr    atomic.Pointer[string]
	backoff    atomic.Bool // in error backoff
}

// Error backoff for a failing stream: from errMin doubling to errMax, with
// jitter, so a broker outage never turns into a hot loop or a reconnect
// storm, and the other streams go on.
const (
	errBackoffMin = 100 * time.Millisecond
	errBackoffMax = 30 * time.Second
)

// pollLoop polls one stream until ctx ends. Each stream has its own loop,
// so a slow or failing stream never holds up the others.
func (p *Processor) pollLoop(ctx context.Context, st *streamState) {
	idle := p.cfg.MinPollInterval
	errWait := time.Duration(0)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	for {
		n := p.reserve(ctx, st)
		if n == 0 {
			return
		}
		ds, err := p.poll(ctx, st, n)
		claimedAt := time.Now()
		if len(ds) > n {
			p.log.Error("peonify: stream returned more tasks than asked; releasing the extra ones",
				"stream", st.name, "asked", n, "got", len(ds))
			for _, d := range ds[n:] {
				p.nack(st, d, NackOptions{Outcome: OutcomeReleased, Reason: "stream returned more tasks than asked"})
			}
			ds = ds[:n]
		}
		var lease time.Duration
		if len(ds) > 0 && st.ext != nil && !ds[0].Deadline.IsZero() {
			lease = ds[0].Deadline.Sub(claimedAt)
		}
		p.polled(st, n, len(ds), lease)
		for _, d := range ds {
			p.queue <- job{d: d, st: st, claimedAt: claimedAt} // never blocks: space was reserved
		}
		st.polls.Add(1)
		st.polled.Add(uint64(len(ds)))
		p.counters.polled.Add(uint64(len(ds)))

		var wait time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			errWait = min(max(errWait*2, errBackoffMin), errBackoffMax)
			wait = jitter(errWait, 0.5)
			st.pollErrors.Add(1)
			msg := err.Error()
			st.lastErr.Store(&msg)
			st.backoff.Store(true)
			p.log.Error("peonify: poll failed; backing off this stream", "stream", st.name, "retry_in", wait, "err", err)
		case len(ds) == n:
			errWait, idle = 0, p.cfg.MinPollInterval
			st.backoff.Store(false)
			continue // the stream may have more: poll again at once
		case len(ds) > 0:
			// A partial batch: the stream is drained for now.
			errWait, idle = 0, p.cfg.MinPollInterval
			st.backoff.Store(false)
			wait = jitter(idle, 0.2)
		default:
			errWait = 0
			st.backoff.Store(false)
			wait = jitter(idle, 0.2)
			idle = min(idle*2, p.cfg.PollInterval)
		}

		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-st.wake: // nil for streams without Waker: never ready
			if err == nil {
				idle = p.cfg.MinPollInterval
			}
			if !timer.Stop() {
				<-timer.C
			}
		}
	}
}

// poll calls the stream's Poll within StoreTimeout, turning a panic into
// an error. A Poll that runs out of time fails with an error wrapping
// ErrStoreTimeout.
func (p *Processor) poll(ctx context.Context, st *streamState, n int) (ds []Delivery, err error) {
	defer func() {
		if r := recover(); r != nil {
			ds, err = nil, fmt.Errorf("peonify: stream %s panicked in Poll: %v", st.name, r)
		}
	}()
	pctx, cancel := context.WithTimeout(ctx, p.cfg.StoreTimeout)
	defer cancel()
	ds, err = st.s.Poll(pctx, n)
	return ds, timedOut(pctx, "Poll", st, p.cfg.StoreTimeout, err)
}

// reserve waits until the local queue is at or below its low watermark
// and it is st's turn, then reserves all free space for st's next poll. It
// returns 0 when ctx ends.
//
// Turns follow stride scheduling: each stream's pass grows by the number
// of tasks it claimed divided by its weight, and among the streams waiting
// to poll the one with the lowest pass goes first. Over time each busy
// stream claims tasks in proportion to its weight, while a stream that is
// idle, backing off or in a slow Poll never holds up the others.
func (p *Processor) reserve(ctx context.Context, st *streamState) int {
	p.capMu.Lock()
	defer p.capMu.Unlock()
	// A stream coming back from idle starts level with the waiting ones
	// rather than with credit saved up while it had no work.
	if low, ok := p.lowestPass(nil); ok && st.pass < low && st.idled {
		st.pass = low
	}
	st.ready = true
	for {
		// waiting is set before held is read, and dequeued changes held
		// before it reads waiting, so a wake-up cannot be missed.
		p.waiting.Store(true)
		if held := int(p.held.Load()); held <= p.cfg.LowWatermark {
			if low, ok := p.lowestPass(st); !ok || st.pass < low || (st.pass == low && p.firstAtPass(st)) {
				n := p.cfg.QueueSize - held
				if st.maxPoll > 0 {
					n = min(n, st.maxPoll)
				}
				if limit, ok := p.startable(st); ok {
					// The limit has a low watermark of its own, half of it,
					// so that polls stay batches.
					if held > limit/2 {
						n = 0
					}
					n = min(n, limit-held)
				}
				if n > 0 {
					p.held.Add(int64(n)) // only pollers add, and they hold capMu
					st.ready, st.inPoll = false, true
					p.waiting.Store(p.anyReady())
					return n
				}
				// As many wait as can start within a third of the lease:
				// wait for some to start.
			}
		}
		space := p.space
		p.capMu.Unlock()
		select {
		case <-ctx.Done():
			p.capMu.Lock()
			st.ready = false
			p.wake()
			return 0
		case <-space:
		}
		p.capMu.Lock()
	}
}

// startable returns how many tasks of st may wait in the local queue, for
// a stream whose claims have a lease: as many as the workers start within
// a third of the lease, at the rate they have been starting tasks, and at
// least Workers. A task that waited longer would have its lease renewed
// before it starts, and one that waited the whole lease would be lost, run
// by another processor meanwhile; and a processor that holds more than it
// can soon start keeps work from the others. Until a stream that can
// extend leases has returned claims, their lease is unknown and the limit
// is Workers. It reports false for a stream without leases. capMu must be
// held.
func (p *Processor) startable(st *streamState) (int, bool) {
	switch {
	case st.ext == nil || (st.leaseKnown && st.lease <= 0):
		return 0, false
	case !st.leaseKnown:
		return p.cfg.Workers, true
	}
	rate := p.startRate(time.Now())
	return max(p.cfg.Workers, int(rate*st.lease.Seconds()/3)), true
}

// startRate returns how many tasks per second the workers have been
// starting: measured over at least rateWindow or Workers starts, whichever
// comes first, and averaged over about a second. capMu must be held.
func (p *Processor) startRate(now time.Time) float64 {
	el := now.Sub(p.rateAt)
	n := p.counters.started.Load()
	if el <= 0 || (el < rateWindow && n-p.rateStarted < uint64(p.cfg.Workers)) {
		return p.rate
	}
	inst := float64(n-p.rateStarted) / el.Seconds()
	if w := el.Seconds(); p.rate == 0 || w >= 1 {
		p.rate = inst
	} else {
		p.rate = p.rate*(1-w) + inst*w
	}
	p.rateAt, p.rateStarted = now, n
	return p.rate
}

// rateWindow is the shortest time over which startRate measures.
const rateWindow = 10 * time.Millisecond

// competing reports whether the stream takes part in the turns: it waits
// to poll, or it just polled a full batch and is on its way back to wait.
// A stream in a Poll, or resting after an empty or failed one, does not
// hold up the others. capMu must be held.
func (st *streamState) competing() bool {
	return st.ready || (!st.inPoll && !st.idled)
}

// lowestPass returns the lowest pass among competing streams other than
// except. capMu must be held.
func (p *Processor) lowestPass(except *streamState) (float64, bool) {
	low, found := 0.0, false
	for _, o := range p.streams {
		if o != except && o.competing() && (!found || o.pass < low) {
			low, found = o.pass, true
		}
	}
	return low, found
}

// firstAtPass breaks a tie: st goes first if no waiting stream added
// before it has the same pass. capMu must be held.
func (p *Processor) firstAtPass(st *streamState) bool {
	for _, o := range p.streams[:st.index] {
		if o.competing() && o.pass == st.pass {
			return false
		}
	}
	return true
}

// polled settles a poll of st that reserved n places and claimed got
// tasks, with the given lease (0 if they have none that expires): unused
// places are given back and st's pass advances.
func (p *Processor) polled(st *streamState, n, got int, lease time.Duration) {
	p.capMu.Lock()
	if got > 0 {
		st.lease, st.leaseKnown = lease, true
	}
	st.pass += float64(got) / float64(st.weight)
	st.idled, st.inPoll = got < n, false
	if int(p.held.Add(-int64(n-got))) <= p.cfg.LowWatermark {
		p.wake()
	}
	p.capMu.Unlock()
}

// dequeued records that a task left the local queue. It is on every
// task's path, so it takes the lock only when a poller waits for space.
func (p *Processor) dequeued() {
	if int(p.held.Add(-1)) <= p.cfg.LowWatermark && p.waiting.Load() {
		p.capMu.Lock()
		p.wake()
		p.capMu.Unlock()
	}
}

// anyReady reports whether a stream waits to poll. capMu must be held.
func (p *Processor) anyReady() bool {
	for _, o := range p.streams {
		if o.ready {
			return true
		}
	}
	return false
}

// wake wakes every waiting poller. capMu must be held.
func (p *Processor) wake() {
	if p.waiting.Load() {
		p.waiting.Store(false)
		close(p.space)
		p.space = make(chan struct{})
	}
}
