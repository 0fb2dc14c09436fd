package pgstream

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/peonify/peonify"
)

func benchTasks(n int) []*peonify.Task {
	tasks := make([]*peonify.Task, n)
	for i := range tasks {
		tasks[i] = &peonify.Task{Type: "bench", Payload: []byte(`{"user_id":12345,"template":"welcome"}`)}
	}
	return tasks
}

// BenchmarkEnqueueBatch measures Enqueue of batches of several sizes;
// batches over CopyThreshold go through COPY. The unnest and copy variants
// compare the two paths on the same batches.
func BenchmarkEnqueueBatch(b *testing.B) {
	pool := testPool(b)
	ctx := context.Background()
	run := func(name string, size int, enqueue func(s *Stream, tasks []*peonify.Task) error) {
		b.Run(name, func(b *testing.B) {
			s := newTestStream(b, pool, Config{NoListen: true})
			b.Cleanup(func() { _, _ = s.Purge(context.Background(), peonify.StatePending) })
			for b.Loop() {
				if err := enqueue(s, benchTasks(size)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
	for _, size := range []int{1, 10, 100, 1000} {
		run(fmt.Sprintf("size=%d", size), size, func(s *Stream, tasks []*peonify.Task) error {
			return s.Enqueue(ctx, tasks...)
		})
	}
	for _, size := range []int{100, 1000, 10000} {
		run(fmt.Sprintf("unnest-%d", size), size, func(s *Stream, tasks []*peonify.Task) error {
			bt, err := newBatch(tasks)
			if err != nil {
				return err
			}
			_, err = s.insert(ctx, s.pool, bt)
			return err
		})
		run(fmt.Sprintf("copy-%d", size), size, func(s *Stream, tasks []*peonify.Task) error {
			bt, err := newBatch(tasks)
			if err != nil {
				return err
			}
			return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
				_, err := s.copyInsert(ctx, tx, bt)
				return err
			})
		})
	}
}

// BenchmarkPollAck measures draining a queue: claims of up to batch tasks
// and one batched Ack per claim, by 1 and by 4 concurrent consumers (the
// processor's shape: several pollers on one table). Each op is one task.
func BenchmarkPollAck(b *testing.B) {
	for _, bc := range []struct{ batch, consumers int }{{10, 1}, {100, 1}, {10, 4}, {100, 4}} {
		b.Run(fmt.Sprintf("batch=%d/consumers=%d", bc.batch, bc.consumers), func(b *testing.B) {
			pool := testPool(b)
			ctx := context.Background()
			s := newTestStream(b, pool, Config{NoListen: true})
			b.Cleanup(func() { _, _ = s.Purge(context.Background(), peonify.StatePending) })
			for n := b.N; n > 0; n -= 1000 {
				if err := s.Enqueue(ctx, benchTasks(min(n, 1000))...); err != nil {
					b.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			errs := make(chan error, bc.consumers)
			b.ResetTimer()
			for range bc.consumers {
				wg.Go(func() {
					for {
						ds, err := s.Poll(ctx, bc.batch)
						if err != nil {
							errs <- err
							return
						}
						if len(ds) == 0 {
							return
						}
						if err := s.Ack(ctx, ds...); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}
