package pgstream

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/peonify/peonify"
)

// BenchmarkProcessorDrain measures what users see: a Processor draining a
// backlog from the stream with a handler that does nothing, so the figure is
// the cost of claiming, dispatching and completing. Each op is one task. A
// larger local queue lets each claim take more tasks per round trip.
func BenchmarkProcessorDrain(b *testing.B) {
	for _, c := range []struct{ workers, queue int }{{20, 0}, {20, 400}, {100, 0}} {
		b.Run(fmt.Sprintf("workers=%d/queue=%d", c.workers, c.queue), func(b *testing.B) {
			pool := testPool(b)
			ctx := context.Background()
			s := newTestStream(b, pool, Config{})
			for n := b.N; n > 0; n -= 1000 {
				if err := s.Enqueue(ctx, benchTasks(min(n, 1000))...); err != nil {
					b.Fatal(err)
				}
			}
			var done atomic.Int64
			all := make(chan struct{})
			p, err := peonify.New(peonify.Config{
				Workers:   c.workers,
				QueueSize: c.queue,
				Logger:    slog.New(slog.NewTextHandler(b.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
				OnEvent: func(e peonify.Event) {
					if e.Kind == peonify.EventSucceeded && done.Add(1) == int64(b.N) {
						close(all)
					}
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			noop := peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil })
			if err := p.AddTaskList(peonify.TaskList{"bench": noop}); err != nil {
				b.Fatal(err)
			}
			if err := p.AddStream(s); err != nil {
				b.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			errc := make(chan error, 1)
			b.ResetTimer()
			go func() { errc <- p.Run(runCtx) }()
			<-all
			b.StopTimer()
			stop()
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}
