package amqpstream

import (
	"context"
	"fmt"
	"log/slog"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/crashtest"
	"github.com/peonify/peonify/internal/streamtest"
)

// scaleEnv carries a child's scaleOrders from TestScaleOut to
// TestScaleChild in the re-executed test binary.
const scaleEnv = "AMQPSTREAM_SCALE_CHILD"

// scaleOrders tell a child which queue to drain and where to log.
type scaleOrders struct {
	Queue  string
	Ledger string // the ledger file every child records in
	Child  int
}

// TestScaleOut drains 20,000 tasks with 4 processor processes on one
// queue and SIGKILLs one of them mid-run. Every task must complete, and the
// only tasks completed twice may be those the killed process held (claimed
// and not acked, as the ledger says; what it had prefetched and not yet
// claimed never ran there).
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills child processes; skipped with -short")
	}
	const n, children = 20000, 4
	s := newTestStream(t, Config{})
	ids := streamtest.Backfill(t, s, n, "scale", func(i int) string { return fmt.Sprintf("task-%05d", i) })

	ledger := filepath.Join(t.TempDir(), "ledger")
	crashtest.ScaleOut{
		IDs:      ids,
		Ledger:   ledger,
		Children: children,
		Start: func(t *testing.T, i int) *streamtest.Child {
			return streamtest.StartChild(t, "TestScaleChild", scaleEnv, scaleOrders{s.Queue(), ledger, i})
		},
		// The queue counts no unacked message, so all tasks done is the
		// end of the drain.
		Drained: func(*testing.T) (bool, string) { return true, "" },
	}.Run(t)
	streamtest.WantEmpty(t, s, peonify.StatePending, peonify.StateDead, peonify.StateScheduled)
}

// prefetch returns the stream's current prefetch count, 0 before it
// consumes.
func (s *Stream) prefetch() int {
	s.mu.Lock()
	ss := s.cur
	s.mu.Unlock()
	if ss == nil {
		return 0
	}
	ss.consMu.Lock()
	c := ss.cons
	ss.consMu.Unlock()
	if c == nil {
		return 0
	}
	c.setup.Lock()
	defer c.setup.Unlock()
	return c.prefetch
}

// TestScaleChild is the processor process that TestScaleOut starts. It
// records its work in the ledger and runs until SIGTERM or SIGKILL.
func TestScaleChild(t *testing.T) {
	var o scaleOrders
	streamtest.Orders(t, scaleEnv, &o)
	s, err := New(testURL(t), Config{Queue: o.Queue, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	cfg := peonify.Config{Workers: 16, Logger: slog.New(slog.DiscardHandler)}
	crashtest.RunChild(t, ctx, o.Ledger, cfg, s, "scale", func(context.Context, *peonify.Task) error {
		return nil // the ledger records the run
	})
}
