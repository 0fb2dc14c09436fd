package peonifytest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/peonify/peonify"
)

// Op names a Stream method that a FaultStream can disturb.
type Op string

// The operations a FaultStream can disturb.
const (
	OpPoll    Op = "Poll"
	OpAck     Op = "Ack"
	OpNack    Op = "Nack"
	OpExtend  Op = "Extend"
	OpEnqueue Op = "Enqueue"
)

// ErrInjected is the error a FaultStream returns for an injected failure
// when FailNext was given a nil error.
var ErrInjected = errors.New("peonifytest: injected fault")

// FaultStream wraps a real stream to inject faults into a processor's view
// of it: failures of the next calls, added latency, and a pause during which
// every call blocks (as when a broker stalls or a network partition holds
// packets). It is for users' own tests of handlers and configurations, and
// for chaos tests: the wrapped stream stays real.
//
// Its Unwrap returns the wrapped stream, so that peonify.As, and with it
// the processor, finds every optional interface of the wrapped stream
// through it. Of those, a FaultStream intercepts only peonify.Extender and
// peonify.Enqueuer, to disturb their calls; its dynamic type implements
// each of the two exactly when the wrapped stream does (call one with
// fs.(peonify.Enqueuer).Enqueue(ctx, tasks...) or through peonify.As).
// Every other capability (Waker, PollLimiter, Starter, Namer, Inspector)
// is the wrapped stream's, found by peonify.As and never disturbed; Close
// only ends a pause.
type FaultStream interface {
	peonify.Stream

	// FailNext makes the next n calls of op fail with err (ErrInjected if
	// nil) without reaching the wrapped stream.
	FailNext(op Op, n int, err error)

	// Delay adds d of latency before every call of op reaches the wrapped
	// stream; zero removes it. A delayed call still ends early when its
	// ctx does.
	Delay(op Op, d time.Duration)

	// Pause makes every call of an Op block until Resume or until its ctx
	// ends.
	Pause()

	// Resume releases the calls blocked by Pause.
	Resume()

	// Calls returns how many calls of op reached the FaultStream, failed
	// or not.
	Calls(op Op) int

	// Unwrap returns the wrapped stream.
	Unwrap() peonify.Stream
}

// faultStream is a FaultStream with both optional methods it intercepts;
// NewFaultStream hides those that the wrapped stream lacks.
type faultStream struct {
	inner peonify.Stream
	ext   peonify.Extender // the inner stream's, found with peonify.As; nil if none
	enq   peonify.Enqueuer // likewise

	mu      sync.Mutex
	fail    map[Op]int
	failErr map[Op]error
	delay   map[Op]time.Duration
	paused  chan struct{} // closed on Resume; nil when not paused
	calls   map[Op]int
}

// NewFaultStream wraps s. With no fault set it behaves exactly like s, and
// peonify.As finds through it the optional interfaces that s has, no more.
func NewFaultStream(s peonify.Stream) FaultStream {
	f := &faultStream{inner: s, fail: map[Op]int{}, failErr: map[Op]error{},
		delay: map[Op]time.Duration{}, calls: map[Op]int{}}
	f.ext, _ = peonify.As[peonify.Extender](s)
	f.enq, _ = peonify.As[peonify.Enqueuer](s)
	switch ext, enq := f.ext != nil, f.enq != nil; {
	case ext && enq:
		return struct {
			FaultStream
			peonify.Extender
			peonify.Enqueuer
		}{f, f, f}
	case ext:
		return struct {
			FaultStream
			peonify.Extender
		}{f, f}
	case enq:
		return struct {
			FaultStream
			peonify.Enqueuer
		}{f, f}
	}
	return struct{ FaultStream }{f}
}

// FailNext makes the next n calls of op fail with err (ErrInjected if nil)
// without reaching the wrapped stream.
func (f *faultStream) FailNext(op Op, n int, err error) {
	if err == nil {
		err = ErrInjected
	}
	f.mu.Lock()
	f.fail[op], f.failErr[op] = n, err
	f.mu.Unlock()
}

// Delay adds d of latency before every call of op reaches the wrapped
// stream; zero removes it. A delayed call still ends early when its ctx
// does.
func (f *faultStream) Delay(op Op, d time.Duration) {
	f.mu.Lock()
	f.delay[op] = d
	f.mu.Unlock()
}

// Pause makes every call block until Resume or until its ctx ends.
func (f *faultStream) Pause() {
	f.mu.Lock()
	if f.paused == nil {
		f.paused = make(chan struct{})
	}
	f.mu.Unlock()
}

// Resume releases the calls blocked by Pause.
func (f *faultStream) Resume() {
	f.mu.Lock()
	if f.paused != nil {
		close(f.paused)
		f.paused = nil
	}
	f.mu.Unlock()
}

// Calls returns how many calls of op reached the FaultStream, failed or
// not.
func (f *faultStream) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *faultStream) Unwrap() peonify.Stream { return f.inner }

// before applies the faults set for op; a non-nil error ends the call.
func (f *faultStream) before(ctx context.Context, op Op) error {
	f.mu.Lock()
	f.calls[op]++
	paused, d := f.paused, f.delay[op]
	var err error
	if f.fail[op] > 0 {
		f.fail[op]--
		err = f.failErr[op]
	}
	f.mu.Unlock()
	if paused != nil {
		select {
		case <-paused:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

// Poll calls the wrapped stream's Poll unless a fault intervenes.
func (f *faultStream) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	if err := f.before(ctx, OpPoll); err != nil {
		return nil, err
	}
	return f.inner.Poll(ctx, limit)
}

// Ack calls the wrapped stream's Ack unless a fault intervenes.
func (f *faultStream) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	if err := f.before(ctx, OpAck); err != nil {
		return err
	}
	return f.inner.Ack(ctx, ds...)
}

// Nack calls the wrapped stream's Nack unless a fault intervenes.
func (f *faultStream) Nack(ctx context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	if err := f.before(ctx, OpNack); err != nil {
		return err
	}
	return f.inner.Nack(ctx, d, opts)
}

// Close closes the wrapped stream. It is never disturbed, so that tests
// can always clean up.
func (f *faultStream) Close(ctx context.Context) error {
	f.Resume()
	return f.inner.Close(ctx)
}

// Extend calls the wrapped stream's Extend unless a fault intervenes.
func (f *faultStream) Extend(ctx context.Context, d peonify.Delivery, lease time.Duration) (peonify.Delivery, error) {
	if err := f.before(ctx, OpExtend); err != nil {
		return d, err
	}
	return f.ext.Extend(ctx, d, lease)
}

// Enqueue calls the wrapped stream's Enqueue unless a fault intervenes.
func (f *faultStream) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	if err := f.before(ctx, OpEnqueue); err != nil {
		return err
	}
	return f.enq.Enqueue(ctx, tasks...)
}

var (
	_ FaultStream      = (*faultStream)(nil)
	_ peonify.Extender = (*faultStream)(nil)
	_ peonify.Enqueuer = (*faultStream)(nil)
)
