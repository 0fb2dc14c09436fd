package pgstream

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// BenchmarkLimitsPerKey measures what a PerKey limit costs: the same
// drain of 20,000 tasks over 1,000 keys (claims of up to 100 tasks and one
// Ack per claim, by 4 concurrent consumers) with no limits and with a
// PerKey Concurrency 1 limit, reported as tasks/s of each and their ratio
// (the goal is at least 0.5). Each op is one pair of drains.
func BenchmarkLimitsPerKey(b *testing.B) {
	const tasks, keys, batch, consumers = 20000, 1000, 100, 4
	pool := testPool(b)
	ctx := context.Background()
	drain := func(limits []peonify.Limit) float64 {
		b.StopTimer()
		s := newTestStream(b, pool, Config{NoListen: true})
		if err := s.SetLimits(limits); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < tasks; i += 1000 {
			ts := benchTasks(1000)
			for j, t := range ts {
				t.Key = fmt.Sprintf("key-%04d", (i+j)%keys)
			}
			if err := s.Enqueue(ctx, ts...); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := pool.Exec(ctx, "ANALYZE "+testSchema+".peonify_tasks"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		var done atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, consumers)
		for range consumers {
			wg.Go(func() {
				for done.Load() < tasks {
					ds, err := s.Poll(ctx, batch)
					if err != nil {
						errs <- err
						return
					}
					if len(ds) == 0 {
						time.Sleep(time.Millisecond) // keys busy with the other consumers' tasks
						continue
					}
					if err := s.Ack(ctx, ds...); err != nil {
						errs <- err
						return
					}
					done.Add(int64(len(ds)))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		return float64(tasks) / time.Since(start).Seconds()
	}
	var free, limited float64
	for b.Loop() {
		free += drain(nil)
		limited += drain([]peonify.Limit{{PerKey: true, Concurrency: 1}})
	}
	b.ReportMetric(free/float64(b.N), "unlimited-tasks/s")
	b.ReportMetric(limited/float64(b.N), "perkey1-tasks/s")
	b.ReportMetric(limited/free, "ratio")
}
