package peonify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Processor runs tasks from its streams on a pool of workers: the seed's
// Peonify instance. It holds a bounded local queue of tasks that this
// process will attempt, polls its streams when the queue runs low, and
// acknowledges each task when it completes.
//
// Create one with New, register handlers with AddTaskList and sources with
// AddStream, then call Run. A Processor runs once.
type Processor struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex // guards the fields below until Run starts
	handlers map[string]Handler
	streams  []*streamState
	intakes  []Intake
	started  bool

	// Set up by Run; read-only while it runs.
	wrapped map[string]Handler
	types   map[string]*typeStats
	unknown typeStats
	base    context.Context // Run's ctx without its cancellation: parent of task contexts
	// calls is the parent of every call to a stream but Close: base, until
	// the shutdown ends it (endCalls) when its store calls are out of time.
	calls    context.Context
	endCalls context.CancelFunc
	queue    chan job
	slots    []slot
	stopping atomic.Bool   // workers take no new task once set
	stopCh   chan struct{} // closed with stopping set

	capMu   sync.Mutex
	held    atomic.Int64  // tasks in the local queue plus poll reservations
	running atomic.Int64  // handlers running
	waiting atomic.Bool   // a poller may wait on space; stored under capMu
	space   chan struct{} // closed to wake waiting pollers; guarded by capMu

	// The rate at which workers start tasks (see startRate); guarded by
	// capMu.
	rate        float64
	rateAt      time.Time
	rateStarted uint64

	watchKick  chan struct{}
	watchArmed atomic.Int64 // unix nanos of the watchdog's next wake; 0 when disarmed
	renewing   sync.WaitGroup

	ackKick  chan struct{}
	ackCalls sync.WaitGroup // Ack calls in flight

	counters counters
}

// job is a claimed task travelling through the local queue.
type job struct {
	d         Delivery
	st        *streamState
	claimedAt time.Time
}

// New returns a Processor configured by cfg. It reports an error naming the
// field if cfg is invalid.
func New(cfg Config) (*Processor, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Processor{
		cfg:      cfg,
		log:      cfg.Logger,
		handlers: make(map[string]Handler),
	}, nil
}

// AddTaskList registers the handler of each task type in tl. A type that is
// empty, has a nil handler, or is already registered is an error, and then
// nothing from tl is registered. It must be called before Run.
func (p *Processor) AddTaskList(tl TaskList) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return errors.New("peonify: AddTaskList called after Run: register every task type before Run")
	}
	for typ, h := range tl {
		switch {
		case typ == "":
			return &ConfigError{"TaskList", "a task type name is empty"}
		case h == nil:
			return &ConfigError{"TaskList", fmt.Sprintf("handler for task type %q is nil", typ)}
		case p.handlers[typ] != nil:
			return &ConfigError{"TaskList", fmt.Sprintf("task type %q is already registered; each type has one handler", typ)}
		}
	}
	for typ, h := range tl {
		p.handlers[typ] = h
	}
	return nil
}

// TaskTypes returns the registered task types, sorted.
func (p *Processor) TaskTypes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	types := make([]string, 0, len(p.handlers))
	for typ := range p.handlers {
		types = append(types, typ)
	}
	sort.Strings(types)
	return types
}

// StreamOption configures one stream added with AddStream.
type StreamOption func(*streamOptions)

type streamOptions struct {
	weight int
	name   string
	limits []Limit
}

// Weight sets a stream's share of the processor's capacity when several
// streams have work: a stream with weight 2 gets about twice the tasks of a
// stream with weight 1. Defaults to 1; must be at least 1.
func Weight(w int) StreamOption { return func(o *streamOptions) { o.weight = w } }

// StreamName names a stream in logs, stats and events. Defaults to the name
// of the stream's Namer, found through wrappers (see As), else the Go type
// of the innermost stream.
func StreamName(name string) StreamOption { return func(o *streamOptions) { o.name = name } }

// AddStream adds a source of tasks. Any number of streams of any kind may be
// added; they are polled fairly, in proportion to their weights. It must be
// called before Run. AddStream does no I/O: Run starts the stream (see
// Starter) and closes it when Run returns.
func (p *Processor) AddStream(s Stream, opts ...StreamOption) error {
	if s == nil {
		return &ConfigError{"AddStream", "stream is nil"}
	}
	o := streamOptions{weight: 1}
	for _, opt := range opts {
		opt(&o)
	}
	if o.weight < 1 {
		return &ConfigError{"AddStream", fmt.Sprintf("weight %d is below 1", o.weight)}
	}
	if o.name == "" {
		o.name = streamName(s)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return errors.New("peonify: AddStream called after Run: add every stream before Run")
	}
	if len(o.limits) > 0 {
		l, ok := As[Limiter](s)
		if !ok {
			return fmt.Errorf("peonify: stream %s cannot enforce limits (it is not a Limiter): %w", o.name, errors.ErrUnsupported)
		}
		if err := l.SetLimits(o.limits); err != nil {
			return err
		}
	}
	name := o.name
	for i := 2; p.hasStream(name); i++ {
		name = fmt.Sprintf("%s#%d", o.name, i)
	}
	st := &streamState{s: s, name: name, weight: o.weight, index: len(p.streams)}
	// Capabilities are found through wrappers (see As). Wake and MaxPoll
	// are accessors: registering a stream does no I/O; Run starts it.
	st.ext, _ = As[Extender](s)
	st.tracker, _ = As[Tracker](s)
	st.wf, _ = As[WorkflowStore](s)
	st.start, _ = As[Starter](s)
	if l, ok := As[PollLimiter](s); ok && l.MaxPoll() > 0 {
		st.maxPoll = l.MaxPoll()
	}
	if w, ok := As[Waker](s); ok {
		st.wake = w.Wake()
	}
	p.streams = append(p.streams, st)
	return nil
}

func (p *Processor) hasStream(name string) bool {
	for _, st := range p.streams {
		if st.name == name {
			return true
		}
	}
	return false
}

// Intake is a push source, such as an HTTP webhook endpoint or an MQTT
// subscription, that writes the tasks it accepts into a durable stream
// (an Enqueuer) before it acknowledges the sender. Run serves until ctx
// ends and then returns once everything it acknowledged is stored.
type Intake interface {
	Run(ctx context.Context) error
}

// IntakeFunc adapts a function to an Intake.
type IntakeFunc func(ctx context.Context) error

// Run calls f(ctx).
func (f IntakeFunc) Run(ctx context.Context) error { return f(ctx) }

// AddIntake adds a push source that the processor runs for as long as Run
// and stops first at shutdown, before it stops polling, so that nothing is
// accepted from senders once draining begins. If an intake returns before
// shutdown, the processor logs it and shuts down, and Run returns the
// intake's error (or an error saying it stopped): a processor that has lost
// an intake is not healthy. It must be called before Run.
func (p *Processor) AddIntake(in Intake) error {
	if in == nil {
		return &ConfigError{"AddIntake", "intake is nil"}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return errors.New("peonify: AddIntake called after Run: add every intake before Run")
	}
	p.intakes = append(p.intakes, in)
	return nil
}

// Run starts each stream that is a Starter before its first Poll (a Start
// that fails is retried like a Poll that fails, and holds up no other
// stream), processes tasks until ctx ends, then shuts down gracefully and
// returns nil. The whole shutdown takes at most Config.ShutdownTimeout
// (call it T), whatever the store does; a stream call that does not
// return when its context ends is logged and left behind, and Close gets a
// quarter of a second past T to return:
//
//  0. it stops its intakes (see AddIntake) and waits for them;
//  1. it stops polling;
//  2. every task that was claimed but not started is handed back with
//     Nack(OutcomeReleased), which does not count an attempt: all at once,
//     within Config.StoreTimeout, while the running tasks go on;
//  3. running tasks get Config.ShutdownGrace to finish (cut short to leave
//     the steps after it 30% of T, at most 8 seconds), with their leases
//     kept alive; then their contexts are cancelled with cause ErrShutdown,
//     they get as long again to return (at most a tenth of T, and 3
//     seconds), and those that return an error are released too;
//  4. pending acks are flushed; this and every other call to a stream
//     ends a tenth of T (at most 2 seconds) before T runs out;
//  5. every stream is closed, side by side, within what is left of T.
//
// A task that could not be acked or handed back in time, because the store
// did not answer, runs again when its lease ends: at-least-once, never
// lost.
//
// Run never installs signal handlers: wire SIGTERM and SIGINT to ctx with
// signal.NotifyContext. If a handler ignores its cancelled context, Run
// gives up on it, releases its task and returns an error naming it.
func (p *Processor) Run(ctx context.Context) error {
	if err := p.start(ctx); err != nil {
		return err
	}
	defer p.endCalls()
	pollCtx, stopPolling := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPolling()
	// An intake that fails ends the run, as ctx does.
	ctx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	intakeCtx, stopIntakes := context.WithCancel(context.WithoutCancel(ctx))
	defer stopIntakes()
	var intakes sync.WaitGroup
	var intakeErr error
	var intakeErrOnce sync.Once
	for _, in := range p.intakes {
		intakes.Go(func() {
			err := in.Run(intakeCtx)
			if intakeCtx.Err() != nil {
				if err != nil && !errors.Is(err, context.Canceled) {
					p.log.Error("peonify: intake failed while stopping", "err", err)
				}
				return
			}
			if err == nil {
				err = errors.New("intake stopped on its own")
			}
			err = fmt.Errorf("peonify: intake %T: %w", in, err)
			p.log.Error("peonify: an intake stopped; shutting down", "err", err)
			intakeErrOnce.Do(func() { intakeErr = err })
			stopRun(err)
		})
	}

	var pollers, workers, helpers sync.WaitGroup
	for _, st := range p.streams {
		pollers.Go(func() {
			if p.startStream(pollCtx, st) {
				p.pollLoop(pollCtx, st)
			}
		})
	}
	for i := range p.slots {
		s := &p.slots[i]
		s.exited = make(chan struct{})
		workers.Go(func() {
			defer close(s.exited)
			p.work(s)
		})
	}
	watchDone := make(chan struct{})
	helpers.Go(func() { p.watchdog(watchDone) })
	ackDone := make(chan struct{})
	helpers.Go(func() { p.flusher(p.calls, ackDone) })

	<-ctx.Done()
	// The shutdown's timeline: see the steps above.
	t := p.cfg.ShutdownTimeout
	start := time.Now()
	end := start.Add(t)
	graceEnd := start.Add(min(p.cfg.ShutdownGrace, t-shutdownTail(t)))
	cancelEnd := graceEnd.Add(min(p.cfg.ShutdownGrace, t/10, 3*time.Second))
	callsEnd := end.Add(-min(t/10, 2*time.Second))
	endCalls := time.AfterFunc(time.Until(callsEnd), p.endCalls)
	defer endCalls.Stop()
	p.log.Info("peonify: shutting down", "grace", graceEnd.Sub(start), "timeout", t)

	// 0. Accept nothing more from senders.
	stopIntakes()
	if !p.waitUntil(doneCh(&intakes), callsEnd) {
		p.log.Error("peonify: an intake did not stop within the shutdown timeout; going on without it")
	}

	// 1. Stop polling. A poll in flight may still deliver; its tasks go
	// to the queue and are released below.
	stopPolling()
	if !p.waitUntil(doneCh(&pollers), callsEnd) {
		p.log.Error("peonify: a stream's Poll did not return when its context ended; going on without it")
	}

	// 2. Workers take nothing new; hand back what never started while
	// running tasks go on.
	p.stopping.Store(true)
	close(p.stopCh)
	var releasing sync.WaitGroup
	releasing.Go(p.releaseQueued)

	// 3. Let running tasks finish within the grace period.
	var err error
	allDone := doneCh(&workers)
	if !p.waitUntil(allDone, graceEnd) {
		n := p.cancelRunning(ErrShutdown)
		p.log.Warn("peonify: shutdown grace period ended; cancelled running tasks", "tasks", n)
		if !p.waitUntil(allDone, cancelEnd) {
			err = p.abandonRunning()
			// The workers whose handlers returned are settling their tasks;
			// their calls end by callsEnd.
			p.waitSettled(callsEnd)
		}
	}
	releasing.Wait()
	p.releaseQueued() // a worker may have taken a task as shutdown began

	// 4. Flush acks. They end with p.calls, at callsEnd, so a store that
	// stopped answering cannot hold up the exit: acks that fail are tasks
	// that run again. A call that does not return when its context ends
	// is left behind at the deadline.
	close(watchDone)
	close(ackDone)
	helpers.Wait()
	p.flushAcks(p.calls)
	if !p.waitUntil(doneCh(&p.ackCalls), end) {
		p.log.Error("peonify: a stream's Ack did not return when its context ended; going on without it")
	}
	if !p.waitUntil(doneCh(&p.renewing), end) {
		p.log.Error("peonify: a stream's Extend did not return when its context ended; going on without it")
	}

	// 5. Close the streams side by side, within what is left.
	closeCtx, cancel := context.WithDeadline(p.base, end)
	defer cancel()
	var closing sync.WaitGroup
	for _, st := range p.streams {
		closing.Go(func() {
			if cerr := st.s.Close(closeCtx); cerr != nil {
				p.log.Error("peonify: closing stream failed", "stream", st.name, "err", cerr)
			}
		})
	}
	if !p.waitUntil(doneCh(&closing), end.Add(closeSlack)) {
		p.log.Error("peonify: a stream's Close did not return when its context ended; going on without it")
	}
	p.log.Info("peonify: stopped", "succeeded", p.counters.succeeded.Load(), "released", p.counters.released.Load(),
		"took", time.Since(start).Round(time.Millisecond))
	return errors.Join(intakeErr, err)
}

// startStream calls the stream's Start, if it is a Starter, until it
// succeeds, and reports whether it did before ctx ended. A failed Start is
// handled like a failed Poll: logged, counted in the stream's stats and
// tried again after the same backoff, while the other streams go on.
func (p *Processor) startStream(ctx context.Context, st *streamState) bool {
	if st.start == nil {
		return true
	}
	// Until it has started, the stream does not take part in the turns
	// (see reserve), as if its last poll had found nothing.
	p.capMu.Lock()
	st.idled = true
	p.wake()
	p.capMu.Unlock()
	var errWait time.Duration
	for {
		err := p.callStart(ctx, st)
		if err == nil {
			st.backoff.Store(false)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		errWait = min(max(errWait*2, errBackoffMin), errBackoffMax)
		wait := jitter(errWait, 0.5)
		st.pollErrors.Add(1)
		msg := err.Error()
		st.lastErr.Store(&msg)
		st.backoff.Store(true)
		p.log.Error("peonify: starting a stream failed; trying again before polling it", "stream", st.name, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// callStart calls the stream's Start within StoreTimeout, turning a panic
// into an error.
func (p *Processor) callStart(ctx context.Context, st *streamState) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("peonify: stream %s panicked in Start: %v", st.name, r)
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, p.cfg.StoreTimeout)
	defer cancel()
	return timedOut(sctx, "Start", st, p.cfg.StoreTimeout, st.start.Start(sctx))
}

// waitSettled waits, until t at most, for every worker to return but those
// running a handler that shutdown gave up on.
func (p *Processor) waitSettled(t time.Time) {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	for i := range p.slots {
		s := &p.slots[i]
		s.mu.Lock()
		abandoned := s.abandoned
		s.mu.Unlock()
		if abandoned {
			continue
		}
		select {
		case <-s.exited:
		case <-timer.C:
			return
		}
	}
}

// closeSlack is how long after the shutdown's deadline Run waits for
// streams to return from Close once its context has ended.
const closeSlack = 250 * time.Millisecond

// shutdownTail is the part of ShutdownTimeout t that the grace period
// leaves to the steps after it: 30%, at most 8 seconds.
func shutdownTail(t time.Duration) time.Duration { return min(t*3/10, 8*time.Second) }

// waitCtx waits for wg's goroutines, or until ctx ends, and reports
// whether they all returned. Goroutines that call a stream with ctx are
// given a moment past its end to return, since they return only then.
func waitCtx(ctx context.Context, wg *sync.WaitGroup) bool {
	done := doneCh(wg)
	select {
	case <-done:
		return true
	case <-ctx.Done():
	}
	return waitFor(done, closeSlack)
}

// doneCh returns a channel closed when wg's goroutines have all returned.
func doneCh(wg *sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

// start validates that the processor can run and sets up its run state.
func (p *Processor) start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.started:
		return errors.New("peonify: Run called twice: a Processor runs once; create another with New")
	case len(p.streams) == 0:
		return errors.New("peonify: no streams: add at least one with AddStream before Run")
	case len(p.handlers) == 0:
		return errors.New("peonify: no task types: register handlers with AddTaskList before Run")
	}
	p.started = true

	p.wrapped = make(map[string]Handler, len(p.handlers))
	p.types = make(map[string]*typeStats, len(p.handlers))
	for typ, h := range p.handlers {
		for i := len(p.cfg.Middleware) - 1; i >= 0; i-- {
			h = p.cfg.Middleware[i](h)
		}
		p.wrapped[typ] = h
		p.types[typ] = new(typeStats)
	}
	p.base = context.WithoutCancel(ctx)
	p.calls, p.endCalls = context.WithCancel(p.base)
	p.queue = make(chan job, p.cfg.QueueSize)
	p.stopCh = make(chan struct{})
	p.slots = make([]slot, p.cfg.Workers)
	p.space = make(chan struct{})
	p.watchKick = make(chan struct{}, 1)
	p.ackKick = make(chan struct{}, 1)
	return nil
}

// waitFor waits until done is closed or d passes, and reports which.
func waitFor(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// waitUntil waits until done is closed or t passes, and reports which.
func (p *Processor) waitUntil(done <-chan struct{}, t time.Time) bool {
	return waitFor(done, time.Until(t))
}

// releaseCalls bounds the Nack calls that a shutdown makes at once.
const releaseCalls = 64

// releaseQueued hands back every task waiting in the local queue, many at
// once and all within one StoreTimeout: a store that does not answer
// costs the shutdown one timeout, not one per task. A task whose release
// fails comes back when its lease ends; the failures are logged in one
// line.
func (p *Processor) releaseQueued() {
	ctx, cancel := context.WithTimeout(p.calls, p.cfg.StoreTimeout)
	defer cancel()
	var wg sync.WaitGroup
	var pending atomic.Int64 // tasks not handed back (yet)
	var lastErr atomic.Pointer[error]
	sem := make(chan struct{}, releaseCalls)
	for {
		var j job
		select {
		case j = <-p.queue:
		default:
			var err error
			if !waitCtx(ctx, &wg) {
				err = fmt.Errorf("a stream's Nack did not return when its context ended: %w", ctx.Err())
			} else if e := lastErr.Load(); e != nil {
				err = *e
			}
			if err != nil {
				p.log.Error("peonify: could not hand back tasks at shutdown; they return when their leases end",
					"tasks", pending.Load(), "err", err)
			}
			return
		}
		p.dequeued()
		pending.Add(1)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue // out of time: the task is left to its lease
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := p.releaseWith(ctx, j, "processor shutting down before the task started"); err != nil {
				lastErr.Store(&err)
			} else {
				pending.Add(-1)
			}
		})
	}
}

// release hands back a task without counting the attempt, logging a
// failure.
func (p *Processor) release(j job, reason string) {
	ctx, cancel := context.WithTimeout(p.calls, p.cfg.StoreTimeout)
	defer cancel()
	if err := p.releaseWith(ctx, j, reason); err != nil {
		p.logNackError(j.st, j.d, OutcomeReleased, err)
	}
}

// releaseWith hands back a task within ctx and returns the stream's error.
func (p *Processor) releaseWith(ctx context.Context, j job, reason string) error {
	err := p.callNack(ctx, j.st, j.d, NackOptions{Outcome: OutcomeReleased, Reason: reason})
	p.counters.released.Add(1)
	p.emit(Event{Kind: EventReleased, Task: j.d.Task, Stream: j.st.name, Claimed: j.claimedAt})
	return err
}

// cancelRunning cancels the context of every running task with cause and
// returns how many it cancelled.
func (p *Processor) cancelRunning(cause error) int {
	n := 0
	for i := range p.slots {
		s := &p.slots[i]
		s.mu.Lock()
		if s.running && s.cancel != nil {
			s.cancel(cause)
			n++
		}
		s.mu.Unlock()
	}
	return n
}

// abandonRunning gives up on handlers that ignored their cancelled
// context: their tasks are released so another process can run them. The
// slots are marked under their locks and the tasks released after, all at
// once within one StoreTimeout, so that a slow store holds up neither the
// workers nor Stats.
func (p *Processor) abandonRunning() error {
	var js []job
	for i := range p.slots {
		s := &p.slots[i]
		s.mu.Lock()
		if s.running && !s.abandoned {
			s.abandoned = true
			js = append(js, job{d: s.d, st: s.st})
		}
		s.mu.Unlock()
	}
	if len(js) == 0 {
		return nil // the handlers returned; their workers are settling
	}
	ctx, cancel := context.WithTimeout(p.calls, p.cfg.StoreTimeout)
	defer cancel()
	var wg sync.WaitGroup
	ids := make([]string, len(js))
	for i, j := range js {
		ids[i] = j.d.Task.Type + "/" + j.d.Task.ID
		wg.Go(func() {
			err := p.callNack(ctx, j.st, j.d, NackOptions{Outcome: OutcomeReleased, Reason: "handler did not return after shutdown"})
			if err != nil {
				p.logNackError(j.st, j.d, OutcomeReleased, err)
			}
		})
	}
	if !waitCtx(ctx, &wg) {
		p.log.Error("peonify: a stream's Nack did not return when its context ended; going on without it")
	}
	sort.Strings(ids)
	return fmt.Errorf("peonify: %d handlers ignored context cancellation at shutdown; their tasks were released and may run again: %s",
		len(ids), strings.Join(ids, ", "))
}

// nack calls the stream's Nack within StoreTimeout and logs a failure; a
// task whose nack fails comes back when its lease ends.
func (p *Processor) nack(st *streamState, d Delivery, opts NackOptions) {
	ctx, cancel := context.WithTimeout(p.calls, p.cfg.StoreTimeout)
	defer cancel()
	if err := p.callNack(ctx, st, d, opts); err != nil {
		p.logNackError(st, d, opts.Outcome, err)
	}
}

// callNack calls the stream's Nack within ctx, with opts normalized. A
// stale claim is not an error: the task is someone else's now.
func (p *Processor) callNack(ctx context.Context, st *streamState, d Delivery, opts NackOptions) error {
	opts, err := opts.Normalize()
	if err != nil {
		return err
	}
	err = st.s.Nack(ctx, d, opts)
	if err == nil || errors.Is(err, ErrLeaseLost) {
		return nil
	}
	return timedOut(ctx, "Nack", st, p.cfg.StoreTimeout, err)
}

func (p *Processor) logNackError(st *streamState, d Delivery, o Outcome, err error) {
	p.log.Error("peonify: nack failed; the task returns when its lease ends",
		"stream", st.name, "task_id", d.Task.ID, "outcome", o.String(), "err", err)
}

// timedOut wraps err with ErrStoreTimeout if it is the error of call (on
// st) whose context ran out of time.
func timedOut(ctx context.Context, call string, st *streamState, limit time.Duration, err error) error {
	if err == nil || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %s on stream %s did not return within %s: %w",
		ErrStoreTimeout, call, st.name, limit, err)
}

func (p *Processor) emit(e Event) {
	if p.cfg.OnEvent != nil {
		p.cfg.OnEvent(e)
	}
}
