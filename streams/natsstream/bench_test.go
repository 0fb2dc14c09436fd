package natsstream

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// BenchmarkProcessorDrain measures what users see: a Processor draining a
// backlog from the stream with a handler that does nothing, so the figure
// is the cost of fetching, dispatching and acknowledging. Each op is one
// task; cpu-ns/task is this process's CPU time (the server's is not
// counted) and tasks/poll the processor's mean fetch size. Compare it with
// BenchmarkFetchAckLoop at the same fetch size: the same server and client
// without Peonify. A round trip per fetch dominates, so a larger local
// queue (QueueSize), which makes the fetches larger, drains faster.
func BenchmarkProcessorDrain(b *testing.B) {
	for _, c := range []struct{ workers, queue int }{{20, 0}, {20, 200}, {100, 0}} {
		b.Run(fmt.Sprintf("workers=%d/queue=%d", c.workers, c.queue), func(b *testing.B) {
			s, _ := newTestStream(b, testJS(b), Config{})
			streamtest.Drain{Workers: c.workers, QueueSize: c.queue}.Run(b, s)
		})
	}
}

// BenchmarkFetchAckLoop is the ceiling for BenchmarkProcessorDrain: one
// goroutine fetching batches from the same consumer with FetchNoWait and
// acknowledging each message, on the nats.go client alone. Each op is one
// message.
func BenchmarkFetchAckLoop(b *testing.B) {
	for _, batch := range []int{10, 20, 200} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			js := testJS(b)
			s, cfg := newTestStream(b, js, Config{})
			streamtest.Backlog(b, s, b.N, nil)
			cons, err := js.Consumer(context.Background(), cfg.Stream, cfg.Consumer)
			if err != nil {
				b.Fatal(err)
			}
			cpu := streamtest.CPUTime()
			b.ResetTimer()
			for got := 0; got < b.N; {
				msgs, err := cons.FetchNoWait(batch)
				if err != nil {
					b.Fatal(err)
				}
				for m := range msgs.Messages() {
					if err := m.Ack(); err != nil {
						b.Fatal(err)
					}
					got++
				}
				if err := msgs.Error(); err != nil {
					b.Fatal(err)
				}
			}
			if err := js.Conn().Flush(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(streamtest.CPUTime()-cpu)/float64(b.N), "cpu-ns/msg")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkEnqueue measures durable enqueue: one task per call, and
// batches of 100 published together and confirmed at once.
func BenchmarkEnqueue(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run("batch="+strconv.Itoa(n), func(b *testing.B) {
			js := testJS(b)
			s, _ := newTestStream(b, js, Config{})
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i += n {
				tasks := make([]*peonify.Task, min(n, b.N-i))
				for j := range tasks {
					tasks[j] = &peonify.Task{Type: "bench", Payload: []byte(`{"n":1}`)}
				}
				if err := s.Enqueue(ctx, tasks...); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

// BenchmarkPollAckLoop is BenchmarkFetchAckLoop through the Stream, with
// no processor: Poll a batch, Ack it. The difference from the fetch loop
// is the stream's own cost per task.
func BenchmarkPollAckLoop(b *testing.B) {
	for _, batch := range []int{10, 200} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			js := testJS(b)
			s, _ := newTestStream(b, js, Config{})
			streamtest.Backlog(b, s, b.N, nil)
			cpu := streamtest.CPUTime()
			b.ResetTimer()
			streamtest.PollAck(b, s, b.N, batch)
			b.StopTimer()
			b.ReportMetric(float64(streamtest.CPUTime()-cpu)/float64(b.N), "cpu-ns/task")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}
