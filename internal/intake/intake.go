// Package intake holds the mechanics that Peonify's push intakes
// (webhookstream, wsstream, mqttstream) share around their store: an
// Enqueue bounded in time, after which a task that was already stored
// counts as stored, the batching of the messages that wait for the
// store, and reading a task's key (Task.Key) from a message. Their resend window is package resend; their conformance suite
// and test kit, package intaketest.
package intake

import (
	"context"
	"errors"
	"time"

	"github.com/peonify/peonify"
)

// Enqueue stores tasks in store, bounding the call by timeout. A task
// that was already stored counts as stored: Enqueue returns a nil err
// when every task is stored, now or before, and then dup is what the
// store said of the tasks it already held (an error matching
// peonify.ErrDuplicate, usually a *peonify.DuplicateError), or nil. The
// caller chooses whether ctx ending cancels the call: an intake that must
// acknowledge what a finished call stored passes context.WithoutCancel.
func Enqueue(ctx context.Context, store peonify.Enqueuer, timeout time.Duration, tasks ...*peonify.Task) (dup, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = store.Enqueue(ctx, tasks...)
	if errors.Is(err, peonify.ErrDuplicate) {
		return err, nil
	}
	return nil, err
}
