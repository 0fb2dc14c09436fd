package amqpstream

import (
	"context"
	"fmt"
	"log/slog"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// scaleEnv carries a child's scaleOrders from TestScaleOut to
// TestScaleChild in the re-executed test binary.
const scaleEnv = "AMQPSTREAM_SCALE_CHILD"

// scaleOrders tell a child which queue to drain and where to log.
type scaleOrders struct {
	Queue  string
	Ledger streamtest.Ledger
	Child  int
}

// TestScaleOut drains 20,000 tasks with 4 processor processes on one
// queue and SIGKILLs one of them mid-run. Every task must complete, and the
// tasks completed twice must be no more than the killed process held
// (its prefetch: tasks it had received and not acked).
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills child processes; skipped with -short")
	}
	const n, children = 20000, 4
	s := newTestStream(t, Config{})
	ids := streamtest.Backfill(t, s, n, "scale", func(i int) string { return fmt.Sprintf("task-%05d", i) })

	ledger := streamtest.NewLedger(t)
	streamtest.ScaleOut{
		IDs:      ids,
		Children: children,
		Start: func(t *testing.T, i int) *streamtest.Child {
			return streamtest.StartChild(t, "TestScaleChild", scaleEnv, scaleOrders{s.Queue(), ledger, i})
		},
		Runs: func(t *testing.T) []streamtest.Run { return ledger.Runs(t, children) },
		Held: func(t *testing.T) streamtest.Held {
			return streamtest.Held{Count: readPrefetch(t, ledger, 0)}
		},
		// The queue counts no unacked message, so all tasks done is the
		// end of the drain.
		Drained: func(*testing.T) (bool, string) { return true, "" },
	}.Run(t)
	streamtest.WantEmpty(t, s, peonify.StatePending, peonify.StateDead, peonify.StateScheduled)
}

// prefetchLog is the log of the prefetch counts that child i reached.
func prefetchLog(i int) string { return fmt.Sprintf("prefetch-%d.log", i) }

// readPrefetch returns the largest prefetch count child i reported.
func readPrefetch(t *testing.T, ledger streamtest.Ledger, i int) int {
	t.Helper()
	high := 0
	for _, f := range ledger.Read(t, prefetchLog(i)) {
		if n, err := strconv.Atoi(f); err == nil {
			high = max(high, n)
		}
	}
	return high
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
// logs each task it completes, and every prefetch count its stream
// reaches, then runs until SIGTERM or SIGKILL.
func TestScaleChild(t *testing.T) {
	var o scaleOrders
	streamtest.Orders(t, scaleEnv, &o)
	done, prefetch := o.Ledger.Open(t, streamtest.ChildLog(o.Child)), o.Ledger.Open(t, prefetchLog(o.Child))
	s, err := New(testURL(t), Config{Queue: o.Queue, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { // report the prefetch before the stream can hold more
		last := 0
		for ctx.Err() == nil {
			if n := s.prefetch(); n != last {
				last = n
				_ = prefetch.Add(strconv.Itoa(n))
			}
			time.Sleep(time.Millisecond)
		}
	})
	cfg := peonify.Config{Workers: 16, Logger: slog.New(slog.DiscardHandler)}
	streamtest.RunProcessor(t, ctx, cfg, s, "scale", func(_ context.Context, tk *peonify.Task) error {
		return done.Add(tk.ID) // one write per line, unbuffered, so a kill loses none
	})
	stop()
	wg.Wait()
}
