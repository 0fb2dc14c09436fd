package peonify

import (
	"context"
	"errors"
)

// Forward returns a Handler that stores each task it runs in dst, keeping
// its ID, Type, Key, Payload, Headers, Priority, MaxAttempts, UniqueKey and
// RunAt, and succeeds once dst holds it: a task that dst already holds (an
// earlier attempt stored it) counts as stored, so a forward that runs
// twice stores the task once.
//
// Register it for the task types to move, on a processor that reads a
// stream that cannot do what those tasks need: a broker that cannot
// enforce Limits, say, forwarding into a store that does, whose processors
// then run the tasks under the limits. The source acknowledges a task only
// after dst has stored it, so nothing is lost between the two.
func Forward(dst Enqueuer) Handler {
	return HandlerFunc(func(ctx context.Context, t *Task) error {
		err := dst.Enqueue(ctx, &Task{
			ID: t.ID, Type: t.Type, Key: t.Key, Payload: t.Payload, Headers: t.Headers,
			Priority: t.Priority, MaxAttempts: t.MaxAttempts, UniqueKey: t.UniqueKey,
			EnqueuedAt: t.EnqueuedAt, RunAt: t.RunAt,
		})
		if errors.Is(err, ErrDuplicate) {
			return nil
		}
		return err
	})
}
