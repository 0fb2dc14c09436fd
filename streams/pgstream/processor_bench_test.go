package pgstream

import (
	"fmt"
	"testing"

	"github.com/peonify/peonify/internal/streamtest"
)

// BenchmarkProcessorDrain measures what users see: a Processor draining a
// backlog from the stream with a handler that does nothing, so the figure is
// the cost of claiming, dispatching and completing. Each op is one task. A
// larger local queue lets each claim take more tasks per round trip.
func BenchmarkProcessorDrain(b *testing.B) {
	for _, c := range []struct{ workers, queue int }{{20, 0}, {20, 400}, {100, 0}} {
		b.Run(fmt.Sprintf("workers=%d/queue=%d", c.workers, c.queue), func(b *testing.B) {
			s := newTestStream(b, testPool(b), Config{})
			payload := []byte(`{"user_id":12345,"template":"welcome"}`)
			streamtest.Drain{Workers: c.workers, QueueSize: c.queue, Payload: payload}.Run(b, s)
		})
	}
}
