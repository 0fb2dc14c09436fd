package streamkit

import (
	"context"
	"errors"

	"github.com/peonify/peonify"
)

// CheckPoll makes the checks at the top of a stream's Poll, in this order:
// after Close (closed) it returns peonify.ErrClosed; for a limit below 1,
// which asks for nothing, nil; once ctx has ended, ctx's error. done
// reports whether Poll returns at once, with no deliveries and err.
func CheckPoll(ctx context.Context, closed bool, limit int) (done bool, err error) {
	switch {
	case closed:
		return true, peonify.ErrClosed
	case limit <= 0:
		return true, nil
	}
	if err := ctx.Err(); err != nil {
		return true, err
	}
	return false, nil
}

// CheckDelivery makes the checks at the top of a stream's Nack or Extend
// (op) of d: after Close (closed) it returns peonify.ErrClosed, and for a
// delivery without a Task an error that says so, prefixed with the
// stream's package name (pkg).
func CheckDelivery(closed bool, d peonify.Delivery, pkg, op string) error {
	if closed {
		return peonify.ErrClosed
	}
	if d.Task == nil {
		return errors.New(pkg + ": " + op + " of a delivery without a Task")
	}
	return nil
}
