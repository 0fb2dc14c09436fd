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
// FaultStream implements every optional interface; one the wrapped stream
// lacks returns errors.ErrUnsupported (Extend, Enqueue, Inspector methods)
// or never signals (Wake).
type FaultStream struct {
	inner peonify.Stream

	mu      sync.Mutex
	fail    map[Op]int
	failErr map[Op]error
	delay   map[Op]time.Duration
	paused  chan struct{} // closed on Resume; nil when not paused
	calls   map[Op]int
}

// NewFaultStream wraps s. With no fault set it behaves exactly like s.
func NewFaultStream(s peonify.Stream) *FaultStream {
	return &FaultStream{inner: s, fail: map[Op]int{}, failErr: map[Op]error{},
		delay: map[Op]time.Duration{}, calls: map[Op]int{}}
}

// FailNext makes the next n calls of op fail with err (ErrInjected if nil)
// without reaching the wrapped stream.
func (f *FaultStream) FailNext(op Op, n int, err error) {
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
func (f *FaultStream) Delay(op Op, d time.Duration) {
	f.mu.Lock()
	f.delay[op] = d
	f.mu.Unlock()
}

// Pause makes every call block until Resume or until its ctx ends.
func (f *FaultStream) Pause() {
	f.mu.Lock()
	if f.paused == nil {
		f.paused = make(chan struct{})
	}
	f.mu.Unlock()
}

// Resume releases the calls blocked by Pause.
func (f *FaultStream) Resume() {
	f.mu.Lock()
	if f.paused != nil {
		close(f.paused)
		f.paused = nil
	}
	f.mu.Unlock()
}

// Calls returns how many calls of op reached the FaultStream, failed or
// not.
func (f *FaultStream) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// Unwrap returns the wrapped stream.
func (f *FaultStream) Unwrap() peonify.Stream { return f.inner }

// before applies the faults set for op; a non-nil error ends the call.
func (f *FaultStream) before(ctx context.Context, op Op) error {
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
func (f *FaultStream) Poll(ctx context.Context, max int) ([]peonify.Delivery, error) {
	if err := f.before(ctx, OpPoll); err != nil {
		return nil, err
	}
	return f.inner.Poll(ctx, max)
}

// Ack calls the wrapped stream's Ack unless a fault intervenes.
func (f *FaultStream) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	if err := f.before(ctx, OpAck); err != nil {
		return err
	}
	return f.inner.Ack(ctx, ds...)
}

// Nack calls the wrapped stream's Nack unless a fault intervenes.
func (f *FaultStream) Nack(ctx context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	if err := f.before(ctx, OpNack); err != nil {
		return err
	}
	return f.inner.Nack(ctx, d, opts)
}

// Close closes the wrapped stream. It is never disturbed, so that tests
// can always clean up.
func (f *FaultStream) Close(ctx context.Context) error {
	f.Resume()
	return f.inner.Close(ctx)
}

// Extend calls the wrapped stream's Extend unless a fault intervenes.
func (f *FaultStream) Extend(ctx context.Context, d peonify.Delivery, lease time.Duration) (peonify.Delivery, error) {
	e, ok := f.inner.(peonify.Extender)
	if !ok {
		return d, errors.ErrUnsupported
	}
	if err := f.before(ctx, OpExtend); err != nil {
		return d, err
	}
	return e.Extend(ctx, d, lease)
}

// Wake returns the wrapped stream's wake channel, or one that never
// signals.
func (f *FaultStream) Wake() <-chan struct{} {
	if w, ok := f.inner.(peonify.Waker); ok {
		return w.Wake()
	}
	return nil
}

// MaxPoll passes on the wrapped stream's cap on one Poll
// (peonify.PollLimiter), or 0 for none, so that the processor does not take
// a capped batch for a drained stream.
func (f *FaultStream) MaxPoll() int {
	if l, ok := f.inner.(peonify.PollLimiter); ok {
		return l.MaxPoll()
	}
	return 0
}

// Enqueue calls the wrapped stream's Enqueue unless a fault intervenes.
func (f *FaultStream) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	e, ok := f.inner.(peonify.Enqueuer)
	if !ok {
		return errors.ErrUnsupported
	}
	if err := f.before(ctx, OpEnqueue); err != nil {
		return err
	}
	return e.Enqueue(ctx, tasks...)
}

func (f *FaultStream) inspector() (peonify.Inspector, error) {
	if i, ok := f.inner.(peonify.Inspector); ok {
		return i, nil
	}
	return nil, errors.ErrUnsupported
}

// Counts calls the wrapped stream's Inspector. Inspection is never
// disturbed.
func (f *FaultStream) Counts(ctx context.Context) (map[peonify.State]int, error) {
	i, err := f.inspector()
	if err != nil {
		return nil, err
	}
	return i.Counts(ctx)
}

// List calls the wrapped stream's Inspector.
func (f *FaultStream) List(ctx context.Context, opts peonify.ListOptions) ([]peonify.TaskInfo, error) {
	i, err := f.inspector()
	if err != nil {
		return nil, err
	}
	return i.List(ctx, opts)
}

// Get calls the wrapped stream's Inspector.
func (f *FaultStream) Get(ctx context.Context, id string) (peonify.TaskInfo, error) {
	i, err := f.inspector()
	if err != nil {
		return peonify.TaskInfo{}, err
	}
	return i.Get(ctx, id)
}

// Retry calls the wrapped stream's Inspector.
func (f *FaultStream) Retry(ctx context.Context, ids ...string) (int, error) {
	i, err := f.inspector()
	if err != nil {
		return 0, err
	}
	return i.Retry(ctx, ids...)
}

// Delete calls the wrapped stream's Inspector.
func (f *FaultStream) Delete(ctx context.Context, ids ...string) (int, error) {
	i, err := f.inspector()
	if err != nil {
		return 0, err
	}
	return i.Delete(ctx, ids...)
}

// Purge calls the wrapped stream's Inspector.
func (f *FaultStream) Purge(ctx context.Context, state peonify.State) (int, error) {
	i, err := f.inspector()
	if err != nil {
		return 0, err
	}
	return i.Purge(ctx, state)
}

var (
	_ peonify.Stream    = (*FaultStream)(nil)
	_ peonify.Extender  = (*FaultStream)(nil)
	_ peonify.Waker     = (*FaultStream)(nil)
	_ peonify.Enqueuer  = (*FaultStream)(nil)
	_ peonify.Inspector = (*FaultStream)(nil)
)
