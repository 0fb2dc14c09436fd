package peonify

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

var (
	// ErrLeaseLost means a claim is no longer current: its lease ended and
	// the task may have been claimed again. A task's context is cancelled
	// with this cause when the processor cannot extend its lease.
	ErrLeaseLost = errors.New("peonify: lease lost")

	// ErrTaskTimeout is the cause of a task context cancelled because the
	// task ran longer than Config.TaskTimeout.
	ErrTaskTimeout = errors.New("peonify: task timed out")

	// ErrShutdown is the cause of a task context cancelled because the
	// processor's shutdown grace period ended. Such a task is released,
	// not counted as a failed attempt.
	ErrShutdown = errors.New("peonify: processor shutting down")

	// ErrStoreTimeout is wrapped by the error of a call to a stream that
	// did not return within Config.StoreTimeout: the store, or the network
	// to it, stopped answering.
	ErrStoreTimeout = errors.New("peonify: the store did not answer within Config.StoreTimeout")

	// ErrUnknownType is wrapped by the dead reason of a task whose type has
	// no handler.
	ErrUnknownType = errors.New("peonify: no handler for task type")

	// ErrDuplicate is matched by the error of an Enqueue that found a task
	// already stored.
	ErrDuplicate = errors.New("peonify: task already enqueued")

	// ErrNotFound is returned by Inspector.Get for an unknown ID.
	ErrNotFound = errors.New("peonify: task not found")

	// ErrClosed is returned by a stream used after Close.
	ErrClosed = errors.New("peonify: stream closed")

	// ErrCancelled means a task was cancelled (see Tracker.Cancel). A
	// running task's context is cancelled with this cause when its
	// processor learns of it, at the latest when it next extends the
	// lease; the task is not retried and its result is discarded.
	// Extend and SetProgress on a cancelled task return an error
	// wrapping it.
	ErrCancelled = errors.New("peonify: task cancelled")
)

// DuplicateError reports the tasks an Enqueue did not store because they
// were already stored. The other tasks of the call were stored.
type DuplicateError struct {
	IDs []string // IDs of the duplicate tasks, as given (or generated)
}

// Error names the duplicate tasks.
func (e *DuplicateError) Error() string {
	if len(e.IDs) == 1 {
		return fmt.Sprintf("peonify: task %s already enqueued (same ID or UniqueKey); not stored again", e.IDs[0])
	}
	return fmt.Sprintf("peonify: %d tasks already enqueued (same ID or UniqueKey); not stored again: %s",
		len(e.IDs), strings.Join(e.IDs, ", "))
}

// Is makes errors.Is(err, ErrDuplicate) true.
func (e *DuplicateError) Is(target error) bool { return target == ErrDuplicate }

// InvalidTaskError reports a task that cannot be enqueued.
type InvalidTaskError struct {
	ID     string
	Reason string
}

// Error names the task, if it has an ID, and what is wrong with it.
func (e *InvalidTaskError) Error() string {
	if e.ID == "" {
		return "peonify: invalid task: " + e.Reason
	}
	return fmt.Sprintf("peonify: invalid task %s: %s", e.ID, e.Reason)
}

// ConfigError reports an invalid Config field or argument.
type ConfigError struct {
	Field  string // e.g. "Config.Workers"
	Reason string
}

// Error names the field and what is wrong with it.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("peonify: invalid %s: %s", e.Field, e.Reason)
}

// skipRetryError marks an error as permanent.
type skipRetryError struct{ err error }

func (e *skipRetryError) Error() string { return e.err.Error() }
func (e *skipRetryError) Unwrap() error { return e.err }

// SkipRetry wraps err so that the task goes straight to the dead-letter
// state instead of being retried. Use it for failures that no retry can fix,
// such as a malformed payload. SkipRetry(nil) returns nil.
func SkipRetry(err error) error {
	if err == nil {
		return nil
	}
	return &skipRetryError{err}
}

// retryAfterError asks for a retry at a chosen time.
type retryAfterError struct {
	delay  time.Duration
	err    error
	snooze bool
}

func (e *retryAfterError) Error() string {
	if e.snooze {
		return fmt.Sprintf("snoozed for %s", e.delay)
	}
	return e.err.Error()
}

func (e *retryAfterError) Unwrap() error { return e.err }

// RetryAfter wraps err so that the failed attempt is retried after d rather
// than after the RetryPolicy's backoff, for example when a remote service
// answered 429 with a Retry-After. The attempt counts towards MaxAttempts.
// RetryAfter(d, nil) returns nil.
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{delay: max(d, 0), err: err}
}

// Snooze returns an error that hands the task back to run again after d
// without counting the attempt: the task was not ready to run yet (a
// resource is busy, a precondition is not met).
func Snooze(d time.Duration) error {
	return &retryAfterError{delay: max(d, 0), snooze: true}
}

// IsSnooze reports whether err came from Snooze, and if so the delay it
// asked for. Middleware uses it to tell a snooze from a failure.
func IsSnooze(err error) (time.Duration, bool) {
	var ra *retryAfterError
	if errors.As(err, &ra) && ra.snooze {
		return ra.delay, true
	}
	return 0, false
}

// PanicError is the error recorded for a task whose handler panicked.
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the goroutine's stack at the panic
}

// Error gives the value passed to panic; Stack has the stack.
func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }
