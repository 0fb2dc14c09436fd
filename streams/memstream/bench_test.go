package memstream_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// BenchmarkEnqueuePollAck measures one task's whole trip through the
// stream: Enqueue (which copies the task), Poll of one, Ack.
func BenchmarkEnqueuePollAck(b *testing.B) {
	ctx := context.Background()
	s := memstream.New(memstream.Config{})
	defer s.Close(ctx)
	task := &peonify.Task{Type: "bench", Payload: []byte(`{"n":1}`)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		task.ID = strconv.Itoa(i)
		if err := s.Enqueue(ctx, task); err != nil {
			b.Fatal(err)
		}
		ds, err := s.Poll(ctx, 1)
		if err != nil || len(ds) != 1 {
			b.Fatalf("Poll: %d, %v", len(ds), err)
		}
		if err := s.Ack(ctx, ds...); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPollAck measures the processor's side only: Poll in batches of
// 16 from a backlog of up to 100,000 tasks, and Ack each batch. Reported
// per task; refilling the backlog is not timed.
func BenchmarkPollAck(b *testing.B) {
	benchPollAck(b, func(s *memstream.Stream, ds []peonify.Delivery) error {
		return s.Ack(context.Background(), ds...)
	})
}

// BenchmarkPollAckOneByOne is BenchmarkPollAck with each delivery acked on
// its own, as workers that finish at different times do.
func BenchmarkPollAckOneByOne(b *testing.B) {
	benchPollAck(b, func(s *memstream.Stream, ds []peonify.Delivery) error {
		for _, d := range ds {
			if err := s.Ack(context.Background(), d); err != nil {
				return err
			}
		}
		return nil
	})
}

func benchPollAck(b *testing.B, ack func(*memstream.Stream, []peonify.Delivery) error) {
	const (
		batch   = 16
		backlog = 100_000
	)
	ctx := context.Background()
	s := memstream.New(memstream.Config{})
	defer s.Close(ctx)
	next := 0
	refill := func() {
		next = preload(b, s, next, backlog)
	}
	refill()
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; {
		ds, err := s.Poll(ctx, min(batch, b.N-n))
		if err != nil {
			b.Fatal(err)
		}
		if len(ds) == 0 {
			b.StopTimer()
			refill()
			b.StartTimer()
			continue
		}
		if err := ack(s, ds); err != nil {
			b.Fatal(err)
		}
		n += len(ds)
	}
}

// BenchmarkParallelEnqueuePollAck runs the whole trip from 16 goroutines at
// once, to show lock contention.
func BenchmarkParallelEnqueuePollAck(b *testing.B) {
	ctx := context.Background()
	s := memstream.New(memstream.Config{})
	defer s.Close(ctx)
	var id atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		task := &peonify.Task{Type: "bench", Payload: []byte(`{"n":1}`)}
		for pb.Next() {
			task.ID = strconv.FormatInt(id.Add(1), 10)
			if err := s.Enqueue(ctx, task); err != nil {
				b.Fatal(err)
			}
			ds, err := s.Poll(ctx, 1)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Ack(ctx, ds...); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// preload enqueues n tasks with IDs from first on, and returns the next
// free ID.
func preload(b *testing.B, s *memstream.Stream, first, n int) int {
	b.Helper()
	const chunk = 1024
	tasks := make([]*peonify.Task, 0, chunk)
	for i := first; i < first+n; i++ {
		tasks = append(tasks, &peonify.Task{ID: strconv.Itoa(i), Type: "bench", Payload: []byte(`{"n":1}`)})
		if len(tasks) == chunk || i == first+n-1 {
			if err := s.Enqueue(context.Background(), tasks...); err != nil {
				b.Fatal(err)
			}
			tasks = tasks[:0]
		}
	}
	return first + n
}

// BenchmarkDrainKeys drains 20,000 tasks over 1,000 keys with Poll(16) and
// Ack, as 16 workers would, without limits and with a PerKey Concurrency
// 1 limit: the cost of the limit-aware claim. Reported per task.
func BenchmarkDrainKeys(b *testing.B) {
	const (
		tasks = 20_000
		keys  = 1_000
		batch = 16
	)
	for _, bc := range []struct {
		name   string
		limits []peonify.Limit
	}{
		{"unlimited", nil},
		{"perkey", []peonify.Limit{{PerKey: true, Concurrency: 1}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				s := memstream.New(memstream.Config{})
				if err := s.SetLimits(bc.limits); err != nil {
					b.Fatal(err)
				}
				all := make([]*peonify.Task, tasks)
				for i := range all {
					all[i] = &peonify.Task{ID: strconv.Itoa(i), Type: "bench", Key: strconv.Itoa(i % keys)}
				}
				if err := s.Enqueue(ctx, all...); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				for done := 0; done < tasks; {
					ds, err := s.Poll(ctx, batch)
					if err != nil || len(ds) == 0 {
						b.Fatalf("Poll: %d tasks, %v", len(ds), err)
					}
					if err := s.Ack(ctx, ds...); err != nil {
						b.Fatal(err)
					}
					done += len(ds)
				}
				b.StopTimer()
				_ = s.Close(ctx)
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tasks), "ns/task")
		})
	}
}
