package peonifytest

import (
	"errors"

	"github.com/peonify/peonify"
)

// testPollBelowOne checks that a Poll with a limit below 1, which asks for
// nothing, returns no deliveries and a nil error, and claims nothing: the
// task waiting meanwhile comes with Attempt 1. After Close it still
// returns an error wrapping peonify.ErrClosed, as every call does.
func testPollBelowOne(h *harness) {
	ctx := h.ctx()
	h.enqueue(h.newTask())
	for _, limit := range []int{0, -1} {
		noPanic(h.t, "Poll(limit<1)", func() {
			ds, err := h.s.Poll(ctx, limit)
			if err != nil {
				h.t.Errorf("Poll(limit=%d) returned %v, want no error: a limit below 1 asks for nothing", limit, err)
			}
			if len(ds) != 0 {
				h.t.Errorf("Poll(limit=%d) returned %s, want nothing", limit, describe(ds))
			}
		})
	}
	d := h.next()
	if d.Task.Attempt != 1 {
		h.t.Errorf("after Poll(limit<1), the task came with Attempt %d: that Poll claimed it without returning it", d.Task.Attempt)
	}
	h.ack(d)

	if err := h.s.Close(ctx); err != nil {
		h.t.Fatalf("Close: %v", err)
	}
	noPanic(h.t, "Poll(limit=0) after Close", func() {
		if _, err := h.s.Poll(ctx, 0); !errors.Is(err, peonify.ErrClosed) {
			h.t.Errorf("Poll(limit=0) after Close returned %v, want an error wrapping peonify.ErrClosed", err)
		}
	})
}
