package pgstream

import (
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestMaxPoll checks that the stream tells the processor (as
// peonify.PollLimiter) how many tasks one Poll claims at most, and that
// a Poll asked for more claims exactly that many from a longer queue.
func TestMaxPoll(t *testing.T) {
	var s peonify.Stream = newTestStream(t, testPool(t), Config{})
	l, ok := s.(peonify.PollLimiter)
	if !ok {
		t.Fatal("pgstream.Stream does not implement peonify.PollLimiter, so the processor takes a capped claim for a drained queue")
	}
	ctx := streamtest.Context(t)
	n := l.MaxPoll()
	tasks := make([]*peonify.Task, n+1)
	for i := range tasks {
		tasks[i] = &peonify.Task{Type: "t"}
	}
	if err := s.(peonify.Enqueuer).Enqueue(ctx, tasks...); err != nil {
		t.Fatal(err)
	}
	ds, err := s.Poll(ctx, n+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != n {
		t.Errorf("Poll(%d) of a queue of %d tasks claimed %d, want MaxPoll, %d", n+1, n+1, len(ds), n)
	}
}
