package peonify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
)

// Handler executes tasks of one type: the seed's TaskImplementation.
//
// Execute returns nil when the task is done; the processor then acks it. An
// error fails the attempt and the RetryPolicy decides what happens next;
// wrap it with SkipRetry, RetryAfter or return Snooze to choose. Execute
// must honour ctx: it ends on the task timeout, on a lost lease and at the
// end of the shutdown grace period (see context.Cause). Delivery is
// at-least-once, so Execute must be idempotent: use Task.ID as the
// idempotency key.
type Handler interface {
	Execute(ctx context.Context, t *Task) error
}

// HandlerFunc adapts an ordinary function to a Handler.
type HandlerFunc func(ctx context.Context, t *Task) error

// Execute calls f(ctx, t).
func (f HandlerFunc) Execute(ctx context.Context, t *Task) error { return f(ctx, t) }

// Middleware wraps a Handler with behaviour shared by every task type, such
// as logging, tracing or metrics.
type Middleware func(Handler) Handler

// TaskList maps task type names to their handlers: the seed's task list.
type TaskList map[string]Handler

// JSON returns a Handler that decodes the task payload as JSON into a T and
// calls fn with it. A payload that does not decode is a permanent failure:
// the task goes to the dead-letter state with a reason naming the type and
// the decoding error, and is never retried. An empty payload decodes as the
// zero T.
func JSON[T any](fn func(ctx context.Context, args T) error) Handler {
	return HandlerFunc(func(ctx context.Context, t *Task) error {
		var args T
		if len(bytes.TrimSpace(t.Payload)) > 0 {
			// Unmarshal checks the whole payload, so trailing data is an
			// error too, and costs less than a Decoder per task.
			if err := json.Unmarshal(t.Payload, &args); err != nil {
				return SkipRetry(fmt.Errorf("payload of %q task does not decode as the handler's JSON: %w", t.Type, err))
			}
		}
		return fn(ctx, args)
	})
}
