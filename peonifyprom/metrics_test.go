package peonifyprom_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifyprom"
	"github.com/peonify/peonify/streams/memstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rig is a processor over a memstream named "mem", with Metrics attached
// and registered on a fresh registry. Events are forwarded to events after
// Metrics saw them, which is also how a user chains an OnEvent of their own.
type rig struct {
	m      *peonifyprom.Metrics
	p      *peonify.Processor
	store  *memstream.Stream
	reg    *prometheus.Registry
	events chan peonify.Event
	cancel context.CancelFunc
	done   chan error
}

func newRig(t *testing.T, cfg peonify.Config, tl peonify.TaskList) *rig {
	t.Helper()
	m, err := peonifyprom.New(peonifyprom.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{m: m, events: make(chan peonify.Event, 100), reg: prometheus.NewRegistry()}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.OnEvent = func(e peonify.Event) { m.OnEvent(e); r.events <- e }
	cfg.Retry = peonify.RetryPolicy{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	if r.p, err = peonify.New(cfg); err != nil {
		t.Fatal(err)
	}
	if err := r.p.AddTaskList(tl); err != nil {
		t.Fatal(err)
	}
	r.store = memstream.New(memstream.Config{Name: "mem"})
	if err := r.p.AddStream(r.store); err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(r.p); err != nil {
		t.Fatal(err)
	}
	if err := r.reg.Register(m); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.p.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
}

// stop shuts the processor down and waits for Run to return.
func (r *rig) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	if err := <-r.done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func (r *rig) enqueue(t *testing.T, tasks ...*peonify.Task) {
	t.Helper()
	if err := r.store.Enqueue(context.Background(), tasks...); err != nil {
		t.Fatal(err)
	}
}

// wait returns the next n events, failing after a deadline.
func (r *rig) wait(t *testing.T, n int) []peonify.Event {
	t.Helper()
	var got []peonify.Event
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case e := <-r.events:
			got = append(got, e)
		case <-timeout:
			t.Fatalf("saw %d of %d events: %v", len(got), n, got)
		}
	}
	return got
}

// family returns the gathered family name, or fails.
func family(t *testing.T, g prometheus.Gatherer, name string) *dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	t.Fatalf("no metric %s gathered", name)
	return nil
}

// sample returns the metric of family name with the given label values
// (name=value pairs), or nil.
func sample(t *testing.T, g prometheus.Gatherer, name string, labels ...string) *dto.Metric {
	t.Helper()
	for _, m := range family(t, g, name).GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			ok = ok && have[labels[i]] == labels[i+1]
		}
		if ok {
			return m
		}
	}
	return nil
}

func TestMetricsOverAProcessor(t *testing.T) {
	var flaky, snoozed atomic.Int32
	blockStarted, unblock := make(chan struct{}), make(chan struct{})
	ok := peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil })
	r := newRig(t, peonify.Config{Workers: 4}, peonify.TaskList{
		"ok": ok,
		"flaky": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
			if flaky.Add(1) == 1 {
				return errors.New("first attempt fails")
			}
			return nil
		}),
		"poison": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
			return peonify.SkipRetry(errors.New("never works"))
		}),
		"snooze": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
			if snoozed.Add(1) == 1 {
				return peonify.Snooze(time.Millisecond)
			}
			return nil
		}),
		"block": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			close(blockStarted)
			<-unblock
			return nil
		}),
	})

	// Before Run the stats gauges are there already.
	if got := sample(t, r.reg, "peonify_workers").GetGauge().GetValue(); got != 4 {
		t.Errorf("peonify_workers before Run = %v, want 4", got)
	}

	past := time.Now().Add(-time.Hour)
	r.enqueue(t,
		&peonify.Task{Type: "ok"}, &peonify.Task{Type: "ok"}, &peonify.Task{Type: "ok"},
		&peonify.Task{Type: "flaky"},
		&peonify.Task{Type: "poison"},
		&peonify.Task{Type: "no-such-type"},
		&peonify.Task{Type: "snooze"},
		&peonify.Task{Type: "block", EnqueuedAt: past}, // waited an hour end to end
	)
	r.start(t)
	<-blockStarted
	r.wait(t, 9) // ok×3, flaky retried+succeeded, poison dead, unknown dead, snooze snoozed+succeeded

	// While "block" runs, the in-flight gauge shows it.
	if got := sample(t, r.reg, "peonify_tasks_in_flight", "stream", "mem", "type", "block"); got.GetGauge().GetValue() != 1 {
		t.Errorf("in flight {mem, block} = %v, want 1", got)
	}
	if got := sample(t, r.reg, "peonify_tasks_in_flight", "stream", "mem", "type", "ok"); got.GetGauge().GetValue() != 0 {
		t.Errorf("in flight {mem, ok} = %v, want a zero series", got)
	}
	if got := sample(t, r.reg, "peonify_task_oldest_running_seconds"); got.GetGauge().GetValue() <= 0 {
		t.Errorf("oldest running = %v, want > 0 while a task runs", got)
	}
	close(unblock)
	r.wait(t, 1)
	r.stop(t)

	const want = `
# HELP peonify_tasks_succeeded_total Tasks whose handler returned nil and that were acked.
# TYPE peonify_tasks_succeeded_total counter
peonify_tasks_succeeded_total{stream="mem",type="block"} 1
peonify_tasks_succeeded_total{stream="mem",type="flaky"} 1
peonify_tasks_succeeded_total{stream="mem",type="ok"} 3
peonify_tasks_succeeded_total{stream="mem",type="poison"} 0
peonify_tasks_succeeded_total{stream="mem",type="snooze"} 1
peonify_tasks_succeeded_total{stream="mem",type="unknown"} 0
# HELP peonify_tasks_retried_total Failed attempts scheduled for another attempt.
# TYPE peonify_tasks_retried_total counter
peonify_tasks_retried_total{stream="mem",type="block"} 0
peonify_tasks_retried_total{stream="mem",type="flaky"} 1
peonify_tasks_retried_total{stream="mem",type="ok"} 0
peonify_tasks_retried_total{stream="mem",type="poison"} 0
peonify_tasks_retried_total{stream="mem",type="snooze"} 0
peonify_tasks_retried_total{stream="mem",type="unknown"} 0
# HELP peonify_tasks_dead_total Tasks dead-lettered: permanent errors, out of attempts, or unknown type.
# TYPE peonify_tasks_dead_total counter
peonify_tasks_dead_total{stream="mem",type="block"} 0
peonify_tasks_dead_total{stream="mem",type="flaky"} 0
peonify_tasks_dead_total{stream="mem",type="ok"} 0
peonify_tasks_dead_total{stream="mem",type="poison"} 1
peonify_tasks_dead_total{stream="mem",type="snooze"} 0
peonify_tasks_dead_total{stream="mem",type="unknown"} 1
# HELP peonify_tasks_failed_total Failed tasks: the sum of retried and dead.
# TYPE peonify_tasks_failed_total counter
peonify_tasks_failed_total{stream="mem",type="block"} 0
peonify_tasks_failed_total{stream="mem",type="flaky"} 1
peonify_tasks_failed_total{stream="mem",type="ok"} 0
peonify_tasks_failed_total{stream="mem",type="poison"} 1
peonify_tasks_failed_total{stream="mem",type="snooze"} 0
peonify_tasks_failed_total{stream="mem",type="unknown"} 1
# HELP peonify_tasks_snoozed_total Tasks that asked to run again later, not counted as attempts.
# TYPE peonify_tasks_snoozed_total counter
peonify_tasks_snoozed_total{stream="mem",type="block"} 0
peonify_tasks_snoozed_total{stream="mem",type="flaky"} 0
peonify_tasks_snoozed_total{stream="mem",type="ok"} 0
peonify_tasks_snoozed_total{stream="mem",type="poison"} 0
peonify_tasks_snoozed_total{stream="mem",type="snooze"} 1
peonify_tasks_snoozed_total{stream="mem",type="unknown"} 0
# HELP peonify_tasks_polled_total Tasks delivered by the stream.
# TYPE peonify_tasks_polled_total counter
peonify_tasks_polled_total{stream="mem"} 10
# HELP peonify_stream_poll_errors_total Poll calls that failed.
# TYPE peonify_stream_poll_errors_total counter
peonify_stream_poll_errors_total{stream="mem"} 0
# HELP peonify_stream_backing_off 1 while the stream's last poll failed and polling waits to retry, else 0.
# TYPE peonify_stream_backing_off gauge
peonify_stream_backing_off{stream="mem"} 0
# HELP peonify_queued_tasks Tasks claimed from streams and waiting in the local queue for a worker.
# TYPE peonify_queued_tasks gauge
peonify_queued_tasks 0
`
	if err := testutil.GatherAndCompare(r.reg, strings.NewReader(want),
		"peonify_tasks_succeeded_total", "peonify_tasks_retried_total", "peonify_tasks_dead_total",
		"peonify_tasks_failed_total", "peonify_tasks_snoozed_total", "peonify_tasks_polled_total",
		"peonify_stream_poll_errors_total", "peonify_stream_backing_off", "peonify_queued_tasks"); err != nil {
		t.Error(err)
	}

	// Every handler run is timed once; tasks that never started are not.
	runs := map[string]uint64{"ok": 3, "flaky": 2, "poison": 1, "snooze": 2, "block": 1}
	for typ, n := range runs {
		h := sample(t, r.reg, "peonify_task_run_seconds", "stream", "mem", "type", typ).GetHistogram()
		if h.GetSampleCount() != n {
			t.Errorf("run_seconds{%s} count = %d, want %d", typ, h.GetSampleCount(), n)
		}
		lw := sample(t, r.reg, "peonify_task_local_wait_seconds", "stream", "mem", "type", typ).GetHistogram()
		if lw.GetSampleCount() != n {
			t.Errorf("local_wait_seconds{%s} count = %d, want %d", typ, lw.GetSampleCount(), n)
		}
	}
	if m := sample(t, r.reg, "peonify_task_run_seconds", "type", "unknown"); m != nil {
		t.Errorf("an unknown type never runs, yet run_seconds has %v", m)
	}
	// End-to-end waits count first attempts only: flaky's retry and the
	// snoozed task's second run (still attempt 1) differ.
	waits := map[string]uint64{"ok": 3, "flaky": 1, "poison": 1, "snooze": 2, "block": 1}
	for typ, n := range waits {
		h := sample(t, r.reg, "peonify_task_wait_seconds", "stream", "mem", "type", typ).GetHistogram()
		if h.GetSampleCount() != n {
			t.Errorf("wait_seconds{%s} count = %d, want %d", typ, h.GetSampleCount(), n)
		}
	}
	if h := sample(t, r.reg, "peonify_task_wait_seconds", "type", "block").GetHistogram(); h.GetSampleSum() < 3600 {
		t.Errorf("block waited %vs end to end, want at least an hour", h.GetSampleSum())
	}
}

// Tasks claimed but not started when the processor stops are released and
// counted as such.
func TestReleasedAtShutdown(t *testing.T) {
	started, unblock := make(chan struct{}), make(chan struct{})
	r := newRig(t, peonify.Config{Workers: 1, QueueSize: 2, LowWatermark: 1}, peonify.TaskList{
		"block": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			close(started)
			<-unblock
			return nil
		}),
		"later": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil }),
	})
	r.enqueue(t, &peonify.Task{Type: "block"})
	r.start(t)
	<-started
	r.enqueue(t, &peonify.Task{Type: "later"})
	deadline := time.Now().Add(10 * time.Second)
	for r.p.Stats().QueueDepth != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the second task never reached the local queue")
		}
		time.Sleep(time.Millisecond)
	}
	if got := sample(t, r.reg, "peonify_queued_tasks").GetGauge().GetValue(); got != 1 {
		t.Errorf("peonify_queued_tasks = %v, want 1", got)
	}
	r.cancel()
	if e := r.wait(t, 1)[0]; e.Kind != peonify.EventReleased {
		t.Fatalf("first event at shutdown = %v, want released", e.Kind)
	}
	close(unblock)
	r.stop(t)
	if got := sample(t, r.reg, "peonify_tasks_released_total", "type", "later").GetCounter().GetValue(); got != 1 {
		t.Errorf("released{later} = %v, want 1", got)
	}
	if got := sample(t, r.reg, "peonify_tasks_succeeded_total", "type", "block").GetCounter().GetValue(); got != 1 {
		t.Errorf("succeeded{block} = %v, want 1", got)
	}
}

func TestNamesFollowConventions(t *testing.T) {
	r := newRig(t, peonify.Config{Workers: 1}, peonify.TaskList{
		"ok": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil }),
	})
	r.enqueue(t, &peonify.Task{Type: "ok"})
	r.start(t)
	r.wait(t, 1)
	problems, err := testutil.GatherAndLint(r.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	// Every metric is described and collected without registry errors.
	if n := testutil.CollectAndCount(r.m); n == 0 {
		t.Error("collected nothing")
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]peonifyprom.Config{
		"decreasing":     {RunBuckets: []float64{1, 0.5}},
		"repeated":       {WaitBuckets: []float64{1, 1}},
		"empty":          {RunBuckets: []float64{}},
		"own label":      {ConstLabels: prometheus.Labels{"stream": "x"}},
		"own type label": {ConstLabels: prometheus.Labels{"type": "x"}},
	} {
		m, err := peonifyprom.New(cfg)
		var ce *peonify.ConfigError
		if !errors.As(err, &ce) || m != nil {
			t.Errorf("%s: New = %v, %v; want a *peonify.ConfigError", name, m, err)
		}
	}
}

func TestAttach(t *testing.T) {
	m, err := peonifyprom.New(peonifyprom.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(nil); err == nil {
		t.Error("Attach(nil) succeeded")
	}
	p1, _ := peonify.New(peonify.Config{})
	p2, _ := peonify.New(peonify.Config{})
	if err := m.Attach(p1); err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(p1); err != nil {
		t.Errorf("attaching the same processor again: %v", err)
	}
	if err := m.Attach(p2); err == nil {
		t.Error("attaching a second processor succeeded")
	}
}

// Without Attach, a type becomes a label only once its handler ran, which
// proves it is registered.
func TestUnattachedLabels(t *testing.T) {
	m, err := peonifyprom.New(peonifyprom.Config{ConstLabels: prometheus.Labels{"processor": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	m.OnEvent(peonify.Event{Kind: peonify.EventSucceeded, Task: &peonify.Task{Type: "email", Attempt: 1},
		Stream: "s", Claimed: now, Started: now, Duration: time.Millisecond})
	m.OnEvent(peonify.Event{Kind: peonify.EventDead, Task: &peonify.Task{Type: "random-123"}, Stream: "s",
		Err: peonify.ErrUnknownType})
	m.OnEvent(peonify.Event{Kind: peonify.EventDead}) // no task: ignored, no panic
	const want = `
# HELP peonify_tasks_dead_total Tasks dead-lettered: permanent errors, out of attempts, or unknown type.
# TYPE peonify_tasks_dead_total counter
peonify_tasks_dead_total{processor="a",stream="s",type="email"} 0
peonify_tasks_dead_total{processor="a",stream="s",type="unknown"} 1
# HELP peonify_tasks_succeeded_total Tasks whose handler returned nil and that were acked.
# TYPE peonify_tasks_succeeded_total counter
peonify_tasks_succeeded_total{processor="a",stream="s",type="email"} 1
peonify_tasks_succeeded_total{processor="a",stream="s",type="unknown"} 0
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want),
		"peonify_tasks_dead_total", "peonify_tasks_succeeded_total"); err != nil {
		t.Error(err)
	}
	// No processor: no stats gauges.
	if n := testutil.CollectAndCount(m, "peonify_workers"); n != 0 {
		t.Errorf("peonify_workers collected %d times without a processor", n)
	}
}

// A cancelled task is counted as cancelled, not as failed, and a run it
// was cut short of is still timed.
func TestCancelledCounted(t *testing.T) {
	m, err := peonifyprom.New(peonifyprom.Config{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	m.OnEvent(peonify.Event{Kind: peonify.EventCancelled, Task: &peonify.Task{Type: "report", Attempt: 1},
		Stream: "s", Claimed: now, Started: now, Duration: time.Millisecond, Err: peonify.ErrCancelled})
	m.OnEvent(peonify.Event{Kind: peonify.EventCancelled, Task: &peonify.Task{Type: "report"}, Stream: "s",
		Claimed: now, Err: peonify.ErrCancelled}) // cancelled before it started: unattached, its type is not known
	const want = `
# HELP peonify_tasks_cancelled_total Tasks cancelled (Tracker.Cancel) before they started or while they ran; their results were discarded.
# TYPE peonify_tasks_cancelled_total counter
peonify_tasks_cancelled_total{stream="s",type="report"} 1
peonify_tasks_cancelled_total{stream="s",type="unknown"} 1
# HELP peonify_tasks_failed_total Failed tasks: the sum of retried and dead.
# TYPE peonify_tasks_failed_total counter
peonify_tasks_failed_total{stream="s",type="report"} 0
peonify_tasks_failed_total{stream="s",type="unknown"} 0
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want),
		"peonify_tasks_cancelled_total", "peonify_tasks_failed_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m, "peonify_task_run_seconds"); n != 1 {
		t.Errorf("run_seconds has %d series, want the one of the run that was cut short", n)
	}
}

func BenchmarkOnEvent(b *testing.B) {
	m, err := peonifyprom.New(peonifyprom.Config{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	e := peonify.Event{Kind: peonify.EventSucceeded, Stream: "s", Claimed: now, Started: now.Add(time.Millisecond),
		Duration: 3 * time.Millisecond, Task: &peonify.Task{Type: "email", Attempt: 1, EnqueuedAt: now.Add(-time.Second)}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.OnEvent(e)
		}
	})
}

func BenchmarkCollect(b *testing.B) {
	m, err := peonifyprom.New(peonifyprom.Config{})
	if err != nil {
		b.Fatal(err)
	}
	p, _ := peonify.New(peonify.Config{Workers: 100})
	_ = p.AddStream(memstream.New(memstream.Config{}))
	if err := m.Attach(p); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for _, typ := range []string{"a", "b", "c", "d", "e"} {
		m.OnEvent(peonify.Event{Kind: peonify.EventSucceeded, Stream: "memory", Claimed: now, Started: now,
			Task: &peonify.Task{Type: typ, Attempt: 1}})
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
