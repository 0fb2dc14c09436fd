package amqpstream

import (
	"context"
	"fmt"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// benchPayload is the body of every benchmark task.
var benchPayload = []byte(`{"user_id":12345,"template":"welcome"}`)

// BenchmarkDrain compares draining a backlog through a Processor with
// the ceiling: a plain consume loop written directly on amqp091-go, with
// the same prefetch, acking each message as it comes (the usual loop), or
// acking a quarter of the prefetch at once (basic.ack with multiple). Each op is one task; run with a fixed count,
// e.g. -benchtime=20000x, so every variant drains the same backlog.
func BenchmarkDrain(b *testing.B) {
	for _, prefetch := range []int{40, 200} {
		b.Run(fmt.Sprintf("raw/ack-each/prefetch=%d", prefetch), func(b *testing.B) {
			benchRaw(b, prefetch, 1)
		})
		b.Run(fmt.Sprintf("raw/ack-multiple/prefetch=%d", prefetch), func(b *testing.B) {
			benchRaw(b, prefetch, prefetch/4)
		})
	}
	// Workers + QueueSize: 20 + 20 = 40 and 100 + 100 = 200, the
	// prefetch counts of the raw loops above.
	for _, workers := range []int{20, 100} {
		b.Run(fmt.Sprintf("processor/workers=%d", workers), func(b *testing.B) {
			benchProcessor(b, workers)
		})
	}
}

// benchRaw drains b.N messages with a plain consumer that acks every
// ackEvery messages (with multiple when more than one).
func benchRaw(b *testing.B, prefetch, ackEvery int) {
	s := newTestStream(b, Config{})
	streamtest.Backlog(b, s, b.N, benchPayload)
	conn, err := amqp.Dial(testURL(b))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	deliveries, err := ch.Consume(s.Queue(), "", false, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := 1; i <= b.N; i++ {
		d := <-deliveries
		if i%ackEvery == 0 || i == b.N {
			if err := d.Ack(ackEvery > 1); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// benchProcessor drains b.N tasks through a Processor whose handler does
// nothing, so the figure is the cost of the stream and the processor.
func benchProcessor(b *testing.B, workers int) {
	streamtest.Drain{Workers: workers, Payload: benchPayload}.Run(b, newTestStream(b, Config{}))
}

// BenchmarkEnqueue measures Enqueue, which waits for the broker's
// publisher confirms, in batches of several sizes. Each op is one task.
func BenchmarkEnqueue(b *testing.B) {
	for _, size := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := newTestStream(b, Config{})
			ctx := context.Background()
			for i := 0; i < b.N; i += size {
				batch := make([]*peonify.Task, min(size, b.N-i))
				for j := range batch {
					batch[j] = &peonify.Task{Type: "bench", Payload: benchPayload}
				}
				if err := s.Enqueue(ctx, batch...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}
