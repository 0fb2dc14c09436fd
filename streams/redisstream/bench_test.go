package redisstream

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/redis/go-redis/v9"
)

// cpuMeter measures the CPU time used by this process and by the Redis
// server between start and report, per op: on a shared machine these are
// steadier than wall time, and they show where the cost is.
type cpuMeter struct {
	client redis.UniversalClient
	proc   float64
	server float64
}

func startCPU(c redis.UniversalClient) *cpuMeter {
	return &cpuMeter{client: c, proc: streamtest.CPUTime().Seconds(), server: serverCPU(c)}
}

// report adds client-µs/op and redis-µs/op to b's results.
func (m *cpuMeter) report(b *testing.B, ops int) {
	proc, server := streamtest.CPUTime().Seconds()-m.proc, serverCPU(m.client)-m.server
	if m.proc > 0 {
		b.ReportMetric(proc*1e6/float64(ops), "client-µs/op")
	}
	if m.server > 0 {
		b.ReportMetric(server*1e6/float64(ops), "redis-µs/op")
	}
}

// serverCPU returns the CPU time the Redis server has used, in seconds,
// or 0 if INFO does not say.
func serverCPU(c redis.UniversalClient) float64 {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		return 0
	}
	total := 0.0
	for _, line := range strings.Split(info, "\n") {
		name, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (name == "used_cpu_sys" || name == "used_cpu_user") {
			v, _ := strconv.ParseFloat(value, 64)
			total += v
		}
	}
	return total
}

func benchTasks(n int) []*peonify.Task {
	tasks := make([]*peonify.Task, n)
	for i := range tasks {
		tasks[i] = &peonify.Task{Type: "bench", Payload: benchPayload}
	}
	return tasks
}

// benchPayload is the payload of the tasks that the drains run.
var benchPayload = []byte(`{"user_id":12345,"template":"welcome"}`)

// BenchmarkProcessorDrain measures what users see: a Processor draining a
// backlog from the stream with a handler that does nothing, so the figure
// is the cost of claiming, dispatching and completing. Each op is one
// task. A larger local queue lets each claim take more tasks per round
// trip. redis-µs/op is the server's CPU time.
func BenchmarkProcessorDrain(b *testing.B) {
	for _, c := range []struct{ workers, queue int }{{20, 0}, {20, 400}, {50, 5000}} {
		b.Run(fmt.Sprintf("workers=%d/queue=%d", c.workers, c.queue), func(b *testing.B) {
			client := testClient(b)
			s := newTestStream(b, client, Config{DedupWindow: -1})
			streamtest.Drain{
				Workers:   c.workers,
				QueueSize: c.queue,
				Payload:   benchPayload,
				Meter: func(b *testing.B) func() {
					cpu := startCPU(client)
					return func() { cpu.report(b, b.N) }
				},
			}.Run(b, s)
		})
	}
}

// BenchmarkRawCeiling is the ceiling of the same drain written directly on
// the client, without Peonify: one goroutine reads batches with
// XREADGROUP while another acks each batch with a pipelined XACK and XDEL,
// as a processor overlaps its polls and acks; no fencing, no task index,
// no processor. The gap to BenchmarkProcessorDrain is what Peonify costs.
func BenchmarkRawCeiling(b *testing.B) {
	for _, batch := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			client := testClient(b)
			ctx := context.Background()
			key := uniquePrefix(b, client) + ":{raw}:stream"
			payload := benchPayload
			for n := b.N; n > 0; n -= 1000 {
				pipe := client.Pipeline()
				for range min(n, 1000) {
					pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"type", "bench", "payload", payload}})
				}
				if _, err := pipe.Exec(ctx); err != nil {
					b.Fatal(err)
				}
			}
			if err := client.XGroupCreate(ctx, key, Group, "0").Err(); err != nil {
				b.Fatal(err)
			}
			batches := make(chan []string, 4)
			acked := make(chan error, 1)
			b.ResetTimer()
			cpu := startCPU(client)
			go func() {
				for ids := range batches {
					pipe := client.Pipeline()
					pipe.XAck(ctx, key, Group, ids...)
					pipe.XDel(ctx, key, ids...)
					if _, err := pipe.Exec(ctx); err != nil {
						acked <- err
						return
					}
				}
				acked <- nil
			}()
			for got := 0; got < b.N; {
				res, err := client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: Group, Consumer: "raw", Streams: []string{key, ">"}, Count: int64(batch), Block: -1}).Result()
				if err != nil {
					b.Fatal(err)
				}
				ids := make([]string, 0, batch)
				for _, m := range res[0].Messages {
					ids = append(ids, m.ID)
				}
				batches <- ids
				got += len(ids)
			}
			close(batches)
			if err := <-acked; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			cpu.report(b, b.N)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

// BenchmarkPollAck measures the stream alone: Poll batches and one Ack
// per batch, by one consumer. Each op is one task.
func BenchmarkPollAck(b *testing.B) {
	for _, batch := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			client := testClient(b)
			s := newTestStream(b, client, Config{DedupWindow: -1})
			streamtest.Backlog(b, s, b.N, benchPayload)
			b.ReportAllocs()
			b.ResetTimer()
			cpu := startCPU(client)
			streamtest.PollAck(b, s, b.N, batch)
			b.StopTimer()
			cpu.report(b, b.N)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

// BenchmarkEnqueue measures Enqueue of batches of several sizes. Each op is
// one task.
func BenchmarkEnqueue(b *testing.B) {
	for _, size := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			client := testClient(b)
			s := newTestStream(b, client, Config{})
			ctx := context.Background()
			b.ResetTimer()
			cpu := startCPU(client)
			for n := b.N; n > 0; n -= size {
				if err := s.Enqueue(ctx, benchTasks(min(n, size))...); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu.report(b, b.N)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

// BenchmarkIdlePickup measures how long an idle processor takes to start a
// task enqueued by another client: from before the Enqueue call to the
// start of the handler. Each op is 20ms of idleness, so that the
// processor's polls back off and only Wake brings the task in at once,
// then one task; p50 and p99 of the pickup are reported. Run it with
// -benchtime=1000x for a steady p99.
func BenchmarkIdlePickup(b *testing.B) {
	client := testClient(b)
	producerClient := testClient(b)
	s := newTestStream(b, client, Config{})
	producer := newTestStream(b, producerClient, Config{Prefix: s.cfg.Prefix, Queue: s.cfg.Queue})
	started := make(chan time.Time, 1)
	p, err := peonify.New(peonify.Config{Workers: 4, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	_ = p.AddTaskList(peonify.TaskList{"bench": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		started <- time.Now()
		return nil
	})})
	_ = p.AddStream(s)
	defer streamtest.Run(b, p)()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		time.Sleep(20 * time.Millisecond)
		begin := time.Now()
		if err := producer.Enqueue(context.Background(), benchTasks(1)...); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, (<-started).Sub(begin))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)*99/100, len(lat)-1)].Microseconds())/1000, "p99-ms")
}

// BenchmarkLimits compares the throughput of claims under limits with the
// same run unlimited: 20,000 tasks over 1,000 keys, with a PerKey
// Concurrency 1 limit or none. Each op is one run of both. It reports the
// tasks/s of each and their ratio (the goal is at least 0.5), and, steadier
// on a shared machine, the CPU time per task of this process and of the
// Redis server for each, and the ratio of their sums (cpu-ratio:
// unlimited CPU per task over limited). "poll" claims and acks batches of
// 100 directly on the stream, the stream's own cost; "processor" drains
// with a Processor of 50 workers and a no-op handler, what users see.
func BenchmarkLimits(b *testing.B) {
	const tasks, keys = 20000, 1000
	limit := peonify.Limit{PerKey: true, Concurrency: 1}
	backlog := func(b *testing.B, s *Stream) {
		ctx := context.Background()
		for i := 0; i < tasks; i += 1000 {
			batch := make([]*peonify.Task, 1000)
			for j := range batch {
				batch[j] = &peonify.Task{Type: streamtest.BenchType, Key: "tenant-" + strconv.Itoa((i+j)%keys), Payload: benchPayload}
			}
			if err := s.Enqueue(ctx, batch...); err != nil {
				b.Fatal(err)
			}
		}
	}
	type result struct{ rate, client, server, perPoll float64 }
	measure := func(client redis.UniversalClient, drain func()) result {
		proc, server := streamtest.CPUTime().Seconds(), serverCPU(client)
		start := time.Now()
		drain()
		return result{
			rate:   tasks / time.Since(start).Seconds(),
			client: (streamtest.CPUTime().Seconds() - proc) * 1e6 / tasks,
			server: (serverCPU(client) - server) * 1e6 / tasks,
		}
	}
	pollRun := func(b *testing.B, limits ...peonify.Limit) result {
		client := testClient(b)
		s := newTestStream(b, client, Config{DedupWindow: -1})
		if err := s.SetLimits(limits); err != nil {
			b.Fatal(err)
		}
		backlog(b, s)
		return measure(client, func() { streamtest.PollAck(b, s, tasks, 100) })
	}
	drainRun := func(b *testing.B, limits ...peonify.Limit) result {
		client := testClient(b)
		s := newTestStream(b, client, Config{DedupWindow: -1})
		backlog(b, s)
		var done atomic.Int64
		all := make(chan struct{})
		p, err := peonify.New(peonify.Config{Workers: 50, Logger: slog.New(slog.DiscardHandler),
			OnEvent: func(e peonify.Event) {
				if e.Kind == peonify.EventSucceeded && done.Add(1) == tasks {
					close(all)
				}
			}})
		if err != nil {
			b.Fatal(err)
		}
		_ = p.AddTaskList(peonify.TaskList{streamtest.BenchType: peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil })})
		var opts []peonify.StreamOption
		if len(limits) > 0 {
			opts = append(opts, peonify.Limits(limits...))
		}
		if err := p.AddStream(s, opts...); err != nil {
			b.Fatal(err)
		}
		var stop func()
		r := measure(client, func() {
			stop = streamtest.Run(b, p)
			<-all
		})
		if st := p.Stats(); len(st.Streams) == 1 && st.Streams[0].Polls > 0 {
			r.perPoll = float64(st.Polled) / float64(st.Streams[0].Polls)
		}
		stop()
		return r
	}
	for _, mode := range []struct {
		name string
		run  func(*testing.B, ...peonify.Limit) result
	}{{"poll", pollRun}, {"processor", drainRun}} {
		b.Run(mode.name, func(b *testing.B) {
			var u, l result
			for range b.N {
				ur, lr := mode.run(b), mode.run(b, limit)
				u.rate, u.client, u.server = u.rate+ur.rate, u.client+ur.client, u.server+ur.server
				l.rate, l.client, l.server = l.rate+lr.rate, l.client+lr.client, l.server+lr.server
				u.perPoll, l.perPoll = u.perPoll+ur.perPoll, l.perPoll+lr.perPoll
			}
			n := float64(b.N)
			b.ReportMetric(u.rate/n, "unlimited-tasks/s")
			b.ReportMetric(l.rate/n, "perkey-tasks/s")
			b.ReportMetric(l.rate/u.rate, "ratio")
			b.ReportMetric(u.client/n, "unlimited-client-µs/task")
			b.ReportMetric(u.server/n, "unlimited-redis-µs/task")
			b.ReportMetric(l.client/n, "perkey-client-µs/task")
			b.ReportMetric(l.server/n, "perkey-redis-µs/task")
			b.ReportMetric((u.client+u.server)/(l.client+l.server), "cpu-ratio")
			if u.perPoll > 0 {
				b.ReportMetric(u.perPoll/n, "unlimited-tasks/poll")
				b.ReportMetric(l.perPoll/n, "perkey-tasks/poll")
			}
		})
	}
}

// BenchmarkFanOut compares, through a processor with 50 workers, 10,000
// plain tasks with a workflow of a root, 10,000 children and a sink that
// waits for them all (the fan-in), from the enqueue to the last task done.
// Each op is one run of 10,000 tasks; tasks/s is the figure to compare
// (the spec asks the workflow for at least half the plain throughput).
//
//	go test -run '^$' -bench BenchmarkFanOut -benchtime 3x ./streams/redisstream/
func BenchmarkFanOut(b *testing.B) {
	const n = 10000
	for _, mode := range []string{"plain", "workflow"} {
		b.Run(mode, func(b *testing.B) {
			client := testClient(b)
			s := newTestStream(b, client, Config{DedupWindow: -1})
			var done atomic.Int64
			all := make(chan struct{}, 1)
			want := int64(n)
			if mode == "workflow" {
				want = n + 2
			}
			noop := peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
				if done.Add(1) == want {
					all <- struct{}{}
				}
				return nil
			})
			p := streamtest.Processor(b, peonify.Config{Workers: 50, Logger: slog.New(slog.DiscardHandler)}, s,
				peonify.TaskList{"bench": noop, "root": noop, "sink": noop})
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { errc <- p.Run(ctx) }()
			defer func() {
				cancel()
				<-errc
			}()
			time.Sleep(100 * time.Millisecond)
			start := time.Now()
			for b.Loop() {
				done.Store(0)
				if mode == "plain" {
					for i := 0; i < n; i += 1000 {
						if err := s.Enqueue(ctx, benchTasks(1000)...); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					w := &peonify.Workflow{}
					root := w.Add(&peonify.Task{Type: "root"})
					kids := make([]*peonify.Task, n)
					for i := range kids {
						kids[i] = w.Add(&peonify.Task{Type: "bench", Payload: benchPayload}, root)
					}
					w.Add(&peonify.Task{Type: "sink"}, kids...)
					t0 := time.Now()
					if err := s.EnqueueWorkflow(ctx, w); err != nil {
						b.Fatal(err)
					}
					b.Logf("EnqueueWorkflow of %d tasks: %s", n+2, time.Since(t0).Round(time.Millisecond))
				}
				select {
				case <-all:
				case <-time.After(2 * time.Minute):
					b.Fatalf("%d of %d tasks done after 2 minutes", done.Load(), want)
				}
			}
			b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "tasks/s")
		})
	}
}
