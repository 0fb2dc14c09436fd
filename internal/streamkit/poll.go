package streamkit

import (
	"context"

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
