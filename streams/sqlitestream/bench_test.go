package sqlitestream

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// The benchmarks commit durably (SynchronousFull unless the name says
// otherwise) to a file in a temporary directory.

var benchPayload = []byte(`{"to":"someone@example.com","template":"welcome","locale":"en"}`)

func benchTask() *peonify.Task { return &peonify.Task{Type: "email", Payload: benchPayload} }

func reportTasks(b *testing.B, tasks int) {
	b.ReportMetric(float64(tasks)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkEnqueue stores one task per call: one goroutine alone, then many
// at once, whose calls group commit shares out over fewer transactions.
func BenchmarkEnqueue(b *testing.B) {
	for _, sync := range []Synchronous{SynchronousFull, SynchronousNormal} {
		b.Run("sync="+sync.String()+"/serial", func(b *testing.B) {
			s := openTest(b, Config{Synchronous: sync}, nil)
			ctx := context.Background()
			for b.Loop() {
				if err := s.Enqueue(ctx, benchTask()); err != nil {
					b.Fatal(err)
				}
			}
			reportTasks(b, b.N)
		})
		b.Run("sync="+sync.String()+"/parallel", func(b *testing.B) {
			s := openTest(b, Config{Synchronous: sync}, nil)
			ctx := context.Background()
			b.SetParallelism(32) // 32 producers per CPU
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.Enqueue(ctx, benchTask()); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportTasks(b, b.N)
		})
	}
}

// BenchmarkEnqueueBatch stores 100 tasks per call in one transaction.
func BenchmarkEnqueueBatch(b *testing.B) {
	const size = 100
	s := openTest(b, Config{}, nil)
	ctx := context.Background()
	batch := make([]*peonify.Task, size)
	for b.Loop() {
		for i := range batch {
			batch[i] = benchTask()
		}
		if err := s.Enqueue(ctx, batch...); err != nil {
			b.Fatal(err)
		}
	}
	reportTasks(b, b.N*size)
}

// BenchmarkPollAck claims and acks tasks that are already stored, as a
// processor does: one op is one task claimed and acked. serial claims 10
// at a time and acks them together; parallel runs 8 consumers that claim
// one task at a time and ack it alone, leaving the batching to group
// commit.
func BenchmarkPollAck(b *testing.B) {
	fill := func(b *testing.B, s *Stream, n int) {
		b.Helper()
		ctx := context.Background()
		for n > 0 {
			batch := make([]*peonify.Task, min(n, 1000))
			for i := range batch {
				batch[i] = benchTask()
			}
			if err := s.Enqueue(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			n -= len(batch)
		}
	}
	b.Run("serial", func(b *testing.B) {
		s := openTest(b, Config{}, nil)
		fill(b, s, b.N)
		ctx := context.Background()
		b.ResetTimer()
		for done := 0; done < b.N; {
			ds, err := s.Poll(ctx, 10)
			if err != nil {
				b.Fatal(err)
			}
			if len(ds) == 0 {
				b.Fatalf("poll found nothing after %d of %d tasks", done, b.N)
			}
			if err := s.Ack(ctx, ds...); err != nil {
				b.Fatal(err)
			}
			done += len(ds)
		}
		reportTasks(b, b.N)
	})
	b.Run("parallel", func(b *testing.B) {
		s := openTest(b, Config{}, nil)
		fill(b, s, b.N)
		ctx := context.Background()
		var acked atomic.Int64
		b.ResetTimer()
		b.SetParallelism(4) // 4 consumers per CPU
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				ds, err := s.Poll(ctx, 1)
				if err != nil || len(ds) != 1 {
					b.Errorf("poll: %d tasks, %v", len(ds), err)
					return
				}
				if err := s.Ack(ctx, ds...); err != nil {
					b.Error(err)
					return
				}
				acked.Add(1)
			}
		})
		reportTasks(b, int(acked.Load()))
	})
}

// BenchmarkPollIdle measures a poll that finds nothing, the cost of an
// idle processor's polling.
func BenchmarkPollIdle(b *testing.B) {
	s := openTest(b, Config{}, nil)
	ctx := context.Background()
	// Scheduled tasks must not slow an empty poll down.
	for i := range 1000 {
		if err := s.Enqueue(ctx, &peonify.Task{ID: fmt.Sprint(i), Type: "later", RunAt: time.Now().Add(time.Hour)}); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if ds, err := s.Poll(ctx, 10); err != nil || len(ds) != 0 {
			b.Fatalf("poll: %d tasks, %v", len(ds), err)
		}
	}
}
