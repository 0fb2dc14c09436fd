package wsstream

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// BenchmarkSend measures acknowledged tasks per second through one
// client connection, from many goroutines, into an in-memory store: the
// cost of the protocol and the batching.
func BenchmarkSend(b *testing.B) {
	benchmarkSend(b, intaketest.NewMem(b))
}

// BenchmarkSendSQLite is BenchmarkSend into the durable embedded store,
// each acknowledgement waiting for a synced commit (shared by the tasks
// of a batch).
func BenchmarkSendSQLite(b *testing.B) {
	store, err := sqlitestream.Open(filepath.Join(b.TempDir(), "tasks.db"), sqlitestream.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = store.Close(context.Background()) })
	benchmarkSend(b, store)
}

func benchmarkSend(b *testing.B, store peonify.Enqueuer) {
	quiet := slog.New(slog.DiscardHandler)
	_, url := serve(b, store, Config{Logger: quiet})
	c := dial(b, url, DialOptions{Logger: quiet})
	payload := []byte(`{"to":"ada@example.com","subject":"hello","n":12345}`)
	var n atomic.Int64
	b.SetParallelism(16) // 16 senders per CPU, each waiting for its ack
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprint("b", n.Add(1))
			if err := c.Send(context.Background(), &peonify.Task{ID: id, Type: "email", Payload: payload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}
