package streamtest

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/peonify/peonify"
)

// BenchType is the type of the tasks that Backlog enqueues and Drain's
// handler runs.
const BenchType = "bench"

// Backlog enqueues n tasks of type BenchType with payload on e, in
// batches of 1000. A nil payload is {"n":1}.
func Backlog(tb testing.TB, e peonify.Enqueuer, n int, payload []byte) {
	tb.Helper()
	if payload == nil {
		payload = []byte(`{"n":1}`)
	}
	for n > 0 {
		tasks := make([]*peonify.Task, min(n, 1000))
		for i := range tasks {
			tasks[i] = &peonify.Task{Type: BenchType, Payload: payload}
		}
		if err := e.Enqueue(context.Background(), tasks...); err != nil {
			tb.Fatal(err)
		}
		n -= len(tasks)
	}
}

// Drain is a benchmark of what users see: a Processor draining a backlog
// of b.N tasks from a stream with a handler that does nothing, so the
// figure is the cost of fetching, dispatching and acknowledging. Each op is
// one task. It reports cpu-ns/task (this process's CPU time; a server's is
// not counted unless Meter counts it), tasks/poll (the processor's mean
// fetch size) and tasks/s.
type Drain struct {
	// Workers and QueueSize configure the processor; zero takes
	// peonify's defaults.
	Workers   int
	QueueSize int

	// Payload is the payload of every task. Defaults to {"n":1}.
	Payload []byte

	// Meter, when set, starts a measurement of the stream's own (the
	// server's CPU time, say) when the timer starts; the function it
	// returns reports it with b.ReportMetric once the backlog is drained.
	Meter func(b *testing.B) (report func())
}

// Run fills s, which must be empty, with b.N tasks and drains it.
func (d Drain) Run(b *testing.B, s Stream) {
	Backlog(b, s, b.N, d.Payload)
	var done atomic.Int64
	all := make(chan struct{})
	noop := peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil })
	p := Processor(b, peonify.Config{
		Workers:   d.Workers,
		QueueSize: d.QueueSize,
		Logger:    Logger(b),
		OnEvent: func(e peonify.Event) {
			if e.Kind == peonify.EventSucceeded && done.Add(1) == int64(b.N) {
				close(all)
			}
		},
	}, s, peonify.TaskList{BenchType: noop})
	ctx, stop := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	b.ResetTimer()
	cpu := CPUTime()
	report := func() {}
	if d.Meter != nil {
		report = d.Meter(b)
	}
	go func() { errc <- p.Run(ctx) }()
	<-all
	b.StopTimer()
	report()
	if cpu := CPUTime() - cpu; cpu > 0 {
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/task")
	}
	if st := p.Stats(); len(st.Streams) == 1 && st.Streams[0].Polls > 0 {
		b.ReportMetric(float64(st.Polled)/float64(st.Streams[0].Polls), "tasks/poll")
	}
	stop()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// PollAck polls s for up to batch tasks at a time and acks them until n
// tasks have come, failing the benchmark on an error.
func PollAck(b *testing.B, s peonify.Stream, n, batch int) {
	ctx := context.Background()
	for got := 0; got < n; {
		ds, err := s.Poll(ctx, batch)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Ack(ctx, ds...); err != nil {
			b.Fatal(err)
		}
		got += len(ds)
	}
}
