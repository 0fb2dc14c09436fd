package peonifytest

import (
	"errors"
	"time"

	"github.com/peonify/peonify"
)

// testWake checks that a Waker signals after a task is enqueued, once the
// stream is started if it is a Starter.
func testWake(h *harness) {
	w, ok := peonify.As[peonify.Waker](h.s)
	if !ok {
		h.t.Skipf("%T does not implement peonify.Waker", h.s)
	}
	ch := w.Wake()
	if ch == nil {
		h.t.Fatal("Wake returned a nil channel")
	}
	if w.Wake() != ch {
		h.t.Error("Wake returned another channel on its second call: it must be an accessor of one channel")
	}
	if st, ok := peonify.As[peonify.Starter](h.s); ok {
		if err := st.Start(h.ctx()); err != nil {
			h.t.Fatalf("Start: %v", err)
		}
	}
	for drained := false; !drained; {
		select {
		case _, ok := <-ch:
			if !ok {
				h.t.Fatal("the Wake channel is closed: it must never be closed")
			}
		default:
			drained = true
		}
	}
	h.enqueue(h.newTask())
	timer := time.NewTimer(h.f.Timeout)
	defer timer.Stop()
	select {
	case _, ok := <-ch:
		if !ok {
			h.t.Fatal("the Wake channel is closed: it must never be closed")
		}
	case <-timer.C:
		h.t.Fatalf("the Wake channel did not receive within %s of an Enqueue", h.f.Timeout)
	}
	h.ack(h.next())
}

// testBadInput checks that out-of-contract calls return errors rather than
// panic, and do not disturb a claim.
func testBadInput(h *harness) {
	ctx := h.ctx()
	h.enqueue(h.newTask())
	d := h.next()

	noPanic(h.t, "Ack(Delivery{})", func() { _ = h.s.Ack(ctx, peonify.Delivery{}) })
	noPanic(h.t, "Nack(Delivery{})", func() {
		_ = h.s.Nack(ctx, peonify.Delivery{}, peonify.NackOptions{Outcome: peonify.OutcomeFailed})
	})
	for _, o := range []peonify.Outcome{0, 99} {
		noPanic(h.t, "Nack with an invalid Outcome", func() {
			if err := h.s.Nack(ctx, d, peonify.NackOptions{Outcome: o}); err == nil {
				h.t.Errorf("Nack with Outcome %d returned nil, want an error naming the valid outcomes", o)
			}
		})
	}
	if h.ext != nil {
		noPanic(h.t, "Extend(Delivery{})", func() {
			if _, err := h.ext.Extend(ctx, peonify.Delivery{}, time.Second); err == nil {
				h.t.Error("Extend of an empty Delivery returned nil, want an error")
			}
		})
	}
	h.ack(d)
	h.nothingUntil(h.afterLease(d.Deadline), "the task was acked")
}

// testStart checks that Start is idempotent, that a started stream works
// and closes cleanly (goleak, in the stream's own tests, sees a goroutine
// that Close left behind), and that Start after Close fails.
func testStart(h *harness) {
	st, ok := peonify.As[peonify.Starter](h.s)
	if !ok {
		h.t.Skipf("%T does not implement peonify.Starter", h.s)
	}
	ctx := h.ctx()
	for i := range 2 {
		if err := st.Start(ctx); err != nil {
			h.t.Fatalf("Start (call %d): %v", i+1, err)
		}
	}
	h.enqueue(h.newTask())
	h.ack(h.next())
	if err := h.s.Close(ctx); err != nil {
		h.t.Fatalf("Close: %v", err)
	}
	noPanic(h.t, "Start after Close", func() {
		if err := st.Start(ctx); !errors.Is(err, peonify.ErrClosed) {
			h.t.Errorf("Start after Close returned %v, want an error wrapping peonify.ErrClosed", err)
		}
	})
}

// testClose checks that Close is idempotent and that a closed stream
// reports ErrClosed.
func testClose(h *harness) {
	ctx := h.ctx()
	if err := h.s.Close(ctx); err != nil {
		h.t.Fatalf("Close: %v", err)
	}
	if err := h.s.Close(ctx); err != nil {
		h.t.Errorf("a second Close returned %v, want nil: Close must be idempotent", err)
	}
	noPanic(h.t, "Poll after Close", func() {
		if _, err := h.s.Poll(ctx, 1); !errors.Is(err, peonify.ErrClosed) {
			h.t.Errorf("Poll after Close returned %v, want an error wrapping peonify.ErrClosed", err)
		}
	})
	if h.enq != nil {
		noPanic(h.t, "Enqueue after Close", func() {
			if err := h.enq.Enqueue(ctx, h.newTask()); !errors.Is(err, peonify.ErrClosed) {
				h.t.Errorf("Enqueue after Close returned %v, want an error wrapping peonify.ErrClosed", err)
			}
		})
	}
}
