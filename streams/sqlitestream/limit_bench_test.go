package sqlitestream

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// BenchmarkLimits compares the throughput of claiming and acking the same
// 20,000 tasks, 20 for each of 1,000 keys, with a PerKey limit of
// Concurrency 1 and with no limits. Each op drains a fresh file both ways,
// with 8 consumers that poll up to 10 tasks and ack them, as a processor's
// fetch does; it reports both throughputs and their ratio
// (limited/unlimited; the goal is at least 0.5). interleaved enqueues the
// keys in turn; grouped enqueues each key's 20 tasks together, so that a
// claim reads past the waiting tasks of the keys that run.
//
//	go test -run '^$' -bench Limits -benchtime 3x ./streams/sqlitestream
func BenchmarkLimits(b *testing.B) {
	const keys, perKey = 1000, 20
	for _, grouped := range []bool{false, true} {
		name := "interleaved"
		if grouped {
			name = "grouped"
		}
		b.Run(name, func(b *testing.B) {
			var limited, unlimited time.Duration
			for b.Loop() {
				unlimited += drainBench(b, keys, perKey, grouped, nil)
				limited += drainBench(b, keys, perKey, grouped, []peonify.Limit{{PerKey: true, Concurrency: 1}})
			}
			n := float64(b.N * keys * perKey)
			b.ReportMetric(n/unlimited.Seconds(), "unlimited-tasks/s")
			b.ReportMetric(n/limited.Seconds(), "limited-tasks/s")
			b.ReportMetric(unlimited.Seconds()/limited.Seconds(), "ratio")
		})
	}
}

// drainBench fills a new file with keys*perKey tasks and returns how long
// 8 consumers take to claim and ack them all under limits.
func drainBench(b *testing.B, keys, perKey int, grouped bool, limits []peonify.Limit) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	s, err := Open(b.TempDir()+"/tasks.db", Config{WatchInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	if err := s.SetLimits(limits); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	batch := make([]*peonify.Task, 0, 1000)
	for i := range keys * perKey {
		key := i % keys
		if grouped {
			key = i / perKey
		}
		batch = append(batch, &peonify.Task{Type: "email", Payload: benchPayload, Key: fmt.Sprint("tenant-", key)})
		if len(batch) == cap(batch) {
			if err := s.Enqueue(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := s.Enqueue(ctx, batch...); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	start := time.Now()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		done int
	)
	total := keys * perKey
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				finished := done == total
				mu.Unlock()
				if finished {
					return
				}
				ds, err := s.Poll(ctx, 10)
				if err != nil {
					b.Error(err)
					return
				}
				if len(ds) == 0 {
					select { // every ready task is held: wait for an ack
					case <-s.Wake():
					case <-time.After(10 * time.Millisecond):
					}
					continue
				}
				if err := s.Ack(ctx, ds...); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				done += len(ds)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	return elapsed
}
