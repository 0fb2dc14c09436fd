package peonify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

const (
	// MaxResultLen is the largest result, in bytes, that a handler can set
	// (see SetResult).
	MaxResultLen = 1 << 20

	// MaxProgressMessageLen is the most of a progress message, in bytes,
	// that is kept (see ReportProgress).
	MaxProgressMessageLen = 255

	// ProgressInterval is how often, at most, the processor writes a
	// running task's progress to its store: ReportProgress may be called
	// in a tight loop, and the store sees at most one write per task per
	// interval, with the latest report.
	ProgressInterval = time.Second
)

// Progress is what a running task reported of its progress.
type Progress struct {
	Fraction  float64   // from 0 to 1
	Message   string    // at most MaxProgressMessageLen bytes
	UpdatedAt time.Time // when the task reported it; zero if it never did
}

// Tracker is implemented by stores that keep the state of their tasks
// beyond delivery: results, progress, cancellation and waiting. The
// embedded store, Postgres, Redis and memstream are Trackers; brokers that
// forget a message once it is acked (NATS, RabbitMQ) are not.
//
// A Tracker stores Delivery.Result with the task in the same write as its
// Ack, keeps done tasks that have a result or belong to a workflow for a
// retention period of its own (see each store's options), and reports
// them with StateDone, their Result and their last Progress.
type Tracker interface {
	// Results returns the results of the done tasks among ids; a task
	// that is not done, or done without a result, is missing from the
	// map. Unknown IDs are not an error.
	Results(ctx context.Context, ids ...string) (map[string][]byte, error)

	// SetProgress records p as the progress of the task that d delivered.
	// It is fenced like Ack: for a claim that is no longer current it
	// returns an error wrapping ErrLeaseLost, and for a task cancelled
	// meanwhile one wrapping ErrCancelled.
	SetProgress(ctx context.Context, d Delivery, p Progress) error

	// Cancel cancels the tasks with these ids that have not finished:
	// waiting, pending and scheduled ones move to StateCancelled and never
	// run; running ones move to StateCancelled at once too, and the next
	// Extend (or SetProgress) of their claim returns an error wrapping
	// ErrCancelled, so that the processor running them cancels their
	// context within a third of the lease; their Ack and Nack are then
	// stale and ignored. Dependents of a cancelled task in a workflow are
	// cancelled with it, unless they allow failed parents. Cancel returns
	// how many of ids it cancelled; finished and unknown ids are skipped.
	Cancel(ctx context.Context, ids ...string) (int, error)

	// Wait waits until the task with this id has finished (StateDone,
	// StateDead or StateCancelled) and returns it. It is woken by the
	// store, not by polling it in a tight loop. It returns an error
	// wrapping ErrNotFound if no such task is stored (or a done one was
	// not kept), and ctx's error when ctx ends first.
	Wait(ctx context.Context, id string) (TaskInfo, error)
}

// run is the state of one handler run that the functions for handlers
// (SetResult, ReportProgress, ParentResults, Spawn) reach through the
// task's context.
type run struct {
	p       *Processor
	s       *slot
	st      *streamState
	task    *Task
	tracker Tracker       // nil if the stream does not keep state
	wf      WorkflowStore // nil if the stream has no workflows

	mu        sync.Mutex
	done      bool // the handler returned
	result    []byte
	resultErr error // the last SetResult's result was too large
	spawned   int   // children spawned with generated IDs
	prog      Progress
	progDirty bool
	progBusy  bool // a write is in flight
	progLast  time.Time
	progTimer *time.Timer
}

type runKey struct{}

// runOf returns the run of the task whose context ctx is, or nil.
func runOf(ctx context.Context) *run {
	r, _ := ctx.Value(runKey{}).(*run)
	return r
}

// delivery returns the current claim of the run's task: the slot's, which
// extensions renew.
func (r *run) delivery() Delivery {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.s.d
}

// finish ends the run: later calls of the functions for handlers do
// nothing, and a progress write that waits is dropped. It returns the
// result to store with the ack, and the error of the last SetResult if its
// result was too large (the task then fails for good).
func (r *run) finish() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = true
	if r.progTimer != nil {
		r.progTimer.Stop()
		r.progTimer = nil
	}
	return r.result, r.resultErr
}

var errNotInTask = errors.New("peonify: not called with a task's context: call it from a Handler with the context it was given")

// SetResult sets the result of the running task whose context ctx is: on
// a store that keeps results (a Tracker), the result is stored with the
// task when the handler returns nil, in the same write as its ack, and
// producers read it with Inspector.Get, Tracker.Results or Tracker.Wait.
// A later call replaces the result; a failed attempt's result is
// discarded. SetResult copies result.
//
// It returns an error if ctx is not a task's context, wrapping
// errors.ErrUnsupported if the task's stream does not keep results, and
// if result is longer than MaxResultLen. A result that is too long is not
// kept, and fails the task for good (it goes dead with the error as its
// reason, as with SkipRetry) unless a later SetResult replaces it, even
// if the handler ignores the error and returns nil: a result is never
// dropped silently.
func SetResult(ctx context.Context, result []byte) error {
	r := runOf(ctx)
	if r == nil {
		return errNotInTask
	}
	if r.tracker == nil {
		return fmt.Errorf("peonify: stream %s does not keep task results: %w", r.st.name, errors.ErrUnsupported)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(result) > MaxResultLen {
		err := fmt.Errorf("peonify: result of task %s is %d bytes, more than MaxResultLen (%d): store large results elsewhere and return a reference",
			r.task.ID, len(result), MaxResultLen)
		if !r.done {
			r.result, r.resultErr = nil, err
		}
		return err
	}
	if !r.done {
		r.result, r.resultErr = bytes.Clone(result), nil
		if r.result == nil {
			r.result = []byte{}
		}
	}
	return nil
}

// JSONResult returns a Handler that decodes the task payload as JSON into a
// T, as JSON does, calls fn with it, and stores what fn returns, encoded as
// JSON, as the task's result (see SetResult). A result that does not
// encode or is longer than MaxResultLen is a permanent failure: the task
// goes to the dead-letter state with the reason. On a stream that does
// not keep results the result is dropped and the task succeeds.
func JSONResult[T, R any](fn func(ctx context.Context, args T) (R, error)) Handler {
	return HandlerFunc(func(ctx context.Context, t *Task) error {
		var args T
		if len(bytes.TrimSpace(t.Payload)) > 0 {
			if err := json.Unmarshal(t.Payload, &args); err != nil {
				return SkipRetry(fmt.Errorf("payload of %q task does not decode as the handler's JSON: %w", t.Type, err))
			}
		}
		res, err := fn(ctx, args)
		if err != nil {
			return err
		}
		b, err := json.Marshal(res)
		if err != nil {
			return SkipRetry(fmt.Errorf("result of %q task does not encode as JSON: %w", t.Type, err))
		}
		if err := SetResult(ctx, b); err != nil && !errors.Is(err, errors.ErrUnsupported) {
			return SkipRetry(err)
		}
		return nil
	})
}

// ReportProgress reports the progress of the running task whose context ctx
// is: fraction from 0 to 1 (values outside are clamped) and a short
// message (cut to MaxProgressMessageLen bytes). On a store that keeps
// progress (a Tracker) the processor writes the latest report at most once
// per ProgressInterval per task, in the background: ReportProgress never
// waits for the store and is cheap to call in a loop.
//
// It returns an error if ctx is not a task's context or fraction is NaN,
// or, wrapping errors.ErrUnsupported, if the task's stream does not keep
// progress.
func ReportProgress(ctx context.Context, fraction float64, message string) error {
	r := runOf(ctx)
	if r == nil {
		return errNotInTask
	}
	if math.IsNaN(fraction) {
		return fmt.Errorf("peonify: progress of task %s is NaN: report a fraction from 0 to 1", r.task.ID)
	}
	if r.tracker == nil {
		return fmt.Errorf("peonify: stream %s does not keep task progress: %w", r.st.name, errors.ErrUnsupported)
	}
	p := Progress{Fraction: min(max(fraction, 0), 1), Message: truncate(message, MaxProgressMessageLen), UpdatedAt: time.Now()}
	r.mu.Lock()
	if r.done {
		r.mu.Unlock()
		return nil
	}
	r.prog, r.progDirty = p, true
	start := r.progNext(p.UpdatedAt)
	r.mu.Unlock()
	if start {
		r.p.renewing.Go(r.writeProgress)
	}
	return nil
}

// progNext decides, with r.mu held, what happens to a waiting progress
// report: it returns true if a write should start now (and marks it
// busy), or arms a timer for when the interval since the last write ends.
func (r *run) progNext(now time.Time) bool {
	if r.done || !r.progDirty || r.progBusy || r.progTimer != nil {
		return false
	}
	if wait := r.progLast.Add(ProgressInterval).Sub(now); wait > 0 {
		r.progTimer = time.AfterFunc(wait, func() {
			r.mu.Lock()
			r.progTimer = nil
			start := r.progNext(time.Now())
			r.mu.Unlock()
			if start {
				r.p.renewing.Go(r.writeProgress)
			}
		})
		return false
	}
	r.progBusy = true
	return true
}

// writeProgress writes the latest progress report to the store.
func (r *run) writeProgress() {
	r.mu.Lock()
	p := r.prog
	r.progDirty = false
	r.progLast = time.Now()
	r.mu.Unlock()

	d := r.delivery()
	if d.Task == r.task {
		ctx, cancel := context.WithTimeout(r.p.calls, r.p.cfg.StoreTimeout)
		err := r.tracker.SetProgress(ctx, d, p)
		cancel()
		switch {
		case err == nil || errors.Is(err, ErrLeaseLost):
		case errors.Is(err, ErrCancelled):
			r.p.cancelled(r.s, d)
		default:
			r.p.log.Warn("peonify: storing a task's progress failed", "stream", r.st.name, "task_id", r.task.ID, "err", err)
		}
	}

	r.mu.Lock()
	r.progBusy = false
	start := r.progNext(time.Now())
	r.mu.Unlock()
	if start {
		r.p.renewing.Go(r.writeProgress)
	}
}

// ParentResults returns the results of the parents of the running task
// whose context ctx is (see Task.Parents), by parent ID. A parent that
// succeeded without setting a result is missing from the map, and so is
// one that failed, when the task allows failed parents. It returns an
// empty map for a task without parents, and an error wrapping
// errors.ErrUnsupported if the task's stream does not keep results.
func ParentResults(ctx context.Context) (map[string][]byte, error) {
	r := runOf(ctx)
	if r == nil {
		return nil, errNotInTask
	}
	if len(r.task.Parents) == 0 {
		return map[string][]byte{}, nil
	}
	if r.tracker == nil {
		return nil, fmt.Errorf("peonify: stream %s does not keep task results: %w", r.st.name, errors.ErrUnsupported)
	}
	return r.tracker.Results(ctx, r.task.Parents...)
}
