package peonify_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// BenchmarkProcessor measures the processor's own cost per task: b.N
// no-op tasks are enqueued on a memstream before the timer starts, then a
// processor drains them. ns/op and allocs/op are per task, end to end
// (poll, queue, worker, context, batched ack, shutdown).
func BenchmarkProcessor(b *testing.B) {
	for _, workers := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			ms := memstream.New(memstream.Config{})
			tasks := make([]*peonify.Task, b.N)
			for i := range tasks {
				tasks[i] = &peonify.Task{Type: "noop"}
			}
			if err := ms.Enqueue(context.Background(), tasks...); err != nil {
				b.Fatal(err)
			}
			drain(b, workers, ms)
		})
	}
}

// genStream hands out the same no-op task forever and drops acks: it
// isolates the processor's own overhead from any store's.
type genStream struct{ task peonify.Task }

func (g *genStream) Poll(_ context.Context, limit int) ([]peonify.Delivery, error) {
	ds := make([]peonify.Delivery, limit)
	for i := range ds {
		ds[i].Task = &g.task
	}
	return ds, nil
}
func (*genStream) Ack(context.Context, ...peonify.Delivery) error                    { return nil }
func (*genStream) Nack(context.Context, peonify.Delivery, peonify.NackOptions) error { return nil }
func (*genStream) Close(context.Context) error                                       { return nil }

// BenchmarkProcessorOverhead is BenchmarkProcessor on a stream with no
// storage at all: what remains is the processor.
func BenchmarkProcessorOverhead(b *testing.B) {
	for _, workers := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			drain(b, workers, &genStream{task: peonify.Task{ID: "x", Type: "noop"}})
		})
	}
}

// drain runs a processor with workers on s, from the timer's reset until
// its no-op handler has run b.N times; ns/op and allocs/op are per task.
func drain(b *testing.B, workers int, s peonify.Stream) {
	var done atomic.Int64
	finished := make(chan struct{})
	n := int64(b.N)
	p, err := peonify.New(peonify.Config{Workers: workers, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	_ = p.AddTaskList(peonify.TaskList{"noop": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		if done.Add(1) == n {
			close(finished)
		}
		return nil
	})})
	_ = p.AddStream(s)
	ctx, cancel := context.WithCancel(context.Background())
	b.ReportAllocs()
	b.ResetTimer()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	<-finished
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}
