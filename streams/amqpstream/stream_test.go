package amqpstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestPlainClientPublish publishes tasks the way README.md tells producers
// in other languages to, with nothing but amqp091-go, and checks that the
// stream delivers them field by field.
func TestPlainClientPublish(t *testing.T) {
	s := newTestStream(t, Config{})
	ctx := streamtest.Context(t)
	if err := s.Connect(ctx); err != nil { // declares the queues, as a deployment would
		t.Fatal(err)
	}
	ch := rawChannel(t)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	enqueued := time.Now().Truncate(time.Second)
	full := amqp.Publishing{
		MessageId:    "order-42",
		Type:         "email-task",
		Body:         []byte(`{"to":"ada@example.com"}`),
		DeliveryMode: amqp.Persistent,
		Timestamp:    enqueued,
		Headers: amqp.Table{
			"traceparent":            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			"tenant-id":              int32(7), // a number from another client becomes its decimal text
			"x-peonify-max-attempts": int32(3),
			"x-peonify-priority":     int64(5),
		},
	}
	minimal := amqp.Publishing{Type: "ping"} // no ID, no body, no headers
	for _, m := range []amqp.Publishing{full, minimal} {
		dc, err := ch.PublishWithDeferredConfirm("", s.Queue(), true, false, m)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("publish not confirmed: %v %v", ok, err)
		}
	}
	ds := pollN(t, s, 2, 10*time.Second)
	got := ds[0].Task
	want := peonify.Task{
		ID: "order-42", Type: "email-task", Payload: full.Body, Attempt: 1, MaxAttempts: 3, Priority: 5,
		EnqueuedAt: enqueued,
		Headers:    map[string]string{"traceparent": full.Headers["traceparent"].(string), "tenant-id": "7"},
	}
	if got.ID != want.ID || got.Type != want.Type || string(got.Payload) != string(want.Payload) || got.Attempt != 1 ||
		got.MaxAttempts != 3 || got.Priority != 5 || !got.EnqueuedAt.Equal(enqueued) || fmt.Sprint(got.Headers) != fmt.Sprint(want.Headers) {
		t.Errorf("delivered %+v\nwant      %+v", *got, want)
	}
	m := ds[1].Task
	if m.Type != "ping" || m.ID == "" || len(m.Payload) != 0 || m.Payload == nil || m.Attempt != 1 || len(m.Headers) != 0 {
		t.Errorf("minimal message delivered as %+v; want type ping, a generated ID, an empty payload and attempt 1", *m)
	}
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}
}

// TestPublishingMatchesEnqueue checks that a task published with
// Stream.Publishing on the caller's channel is delivered as one enqueued.
func TestPublishingMatchesEnqueue(t *testing.T) {
	s := newTestStream(t, Config{})
	if err := s.Connect(streamtest.Context(t)); err != nil {
		t.Fatal(err)
	}
	tk := &peonify.Task{Type: "t", Payload: []byte("p"), Headers: map[string]string{"k": "v"}, MaxAttempts: 2, UniqueKey: "u"}
	msg, err := s.Publishing(tk)
	if err != nil {
		t.Fatal(err)
	}
	ch := rawChannel(t)
	if err := ch.Publish("", s.Queue(), true, false, msg); err != nil {
		t.Fatal(err)
	}
	d := pollN(t, s, 1, 10*time.Second)[0]
	if d.Task.ID != tk.ID || d.Task.Headers["k"] != "v" || d.Task.MaxAttempts != 2 || d.Task.UniqueKey != "u" || d.Task.Attempt != 1 {
		t.Errorf("delivered %+v, want %+v", *d.Task, *tk)
	}
	if _, err := s.Publishing(&peonify.Task{Type: "t", Headers: map[string]string{"x-peonify-attempts": "0"}}); err == nil {
		t.Error("Publishing accepted a reserved header")
	}
	_ = s.Ack(streamtest.Context(t), d)
}

// TestAttemptsAndDeadLetter follows one task through a failure, a release
// and a dead letter, and reads the dead-letter queue with a plain client.
func TestAttemptsAndDeadLetter(t *testing.T) {
	s := newTestStream(t, Config{})
	ctx := streamtest.Context(t)
	tk := task("fragile")
	tk.Headers = map[string]string{"tenant": "t1"}
	streamtest.Enqueue(t, s, tk)

	d := pollN(t, s, 1, 10*time.Second)[0]
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Reason: "boom 1"}); err != nil {
		t.Fatal(err)
	}
	d = pollN(t, s, 1, 10*time.Second)[0]
	if d.Task.Attempt != 2 || d.Task.LastError != "boom 1" {
		t.Fatalf("after a failure: attempt %d, last error %q; want 2, %q", d.Task.Attempt, d.Task.LastError, "boom 1")
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeReleased, Reason: "shutdown"}); err != nil {
		t.Fatal(err)
	}
	d = pollN(t, s, 1, 10*time.Second)[0]
	if d.Task.Attempt != 2 || d.Task.LastError != "boom 1" {
		t.Fatalf("after a release: attempt %d, last error %q; want 2, %q", d.Task.Attempt, d.Task.LastError, "boom 1")
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "poison"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "again"}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("second Nack of a delivery = %v, want ErrLeaseLost", err)
	}
	nothingFor(t, s, 100*time.Millisecond)

	ch := rawChannel(t)
	m, ok, err := ch.Get(deadQueue(s.Queue()), true)
	if err != nil || !ok {
		t.Fatalf("reading the dead-letter queue: %v, ok %v", err, ok)
	}
	if m.MessageId != tk.ID || m.Type != "fragile" || string(m.Body) != `{"n":1}` || m.Headers["tenant"] != "t1" ||
		m.Headers[headerDeadReason] != "poison" || m.Headers[headerLastError] != "poison" || m.Headers[headerAttempts] != int64(2) {
		t.Errorf("dead letter: id %s type %s body %s headers %v", m.MessageId, m.Type, m.Body, m.Headers)
	}
	if at, ok := intHeader(m.Headers[headerDeadAt]); !ok || time.Since(time.UnixMilli(at)) > time.Minute {
		t.Errorf("dead letter has %s = %v, want the time it died", headerDeadAt, m.Headers[headerDeadAt])
	}
}

// TestPoisonNeverHotLoops runs a task that always fails through a
// processor: it runs exactly MaxAttempts times, waiting for each retry
// delay, and ends in the dead-letter queue.
func TestPoisonNeverHotLoops(t *testing.T) {
	s := newTestStream(t, Config{})
	tk := task("poison")
	tk.MaxAttempts = 3
	streamtest.Enqueue(t, s, tk)
	var runs atomic.Int32
	dead := make(chan struct{})
	p, err := peonify.New(peonify.Config{
		Workers: 2,
		Retry:   peonify.RetryPolicy{MinBackoff: 50 * time.Millisecond, Jitter: -1},
		Logger:  slog.New(slog.DiscardHandler),
		OnEvent: func(e peonify.Event) {
			if e.Kind == peonify.EventDead {
				close(dead)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.AddTaskList(peonify.TaskList{"poison": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		runs.Add(1)
		return errors.New("always fails")
	})})
	_ = p.AddStream(s)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- p.Run(ctx) }()
	select {
	case <-dead:
	case <-time.After(10 * time.Second):
		t.Error("the poison task was not dead-lettered within 10s")
	}
	took := time.Since(start)
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n := runs.Load(); n != 3 {
		t.Errorf("the handler ran %d times, want 3 (MaxAttempts)", n)
	}
	if took < 150*time.Millisecond { // backoffs of 50ms and 100ms
		t.Errorf("three attempts took %s: the retry delays were not honoured", took)
	}
	n, err := s2(t, s).Counts(streamtest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if n[peonify.StateDead] != 1 || n[peonify.StatePending] != 0 || n[peonify.StateScheduled] != 0 {
		t.Errorf("counts after the poison task died: %v", n)
	}
}

// s2 returns a new stream on the same queue as s, for checks after a
// processor closed s.
func s2(t *testing.T, s *Stream) *Stream {
	return newTestStream(t, Config{Queue: s.Queue()})
}

// cutter records the TCP connections a stream dials, so that a test can
// cut them as a network failure would.
type cutter struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (c *cutter) dial(network, addr string) (net.Conn, error) {
	conn, err := net.DialTimeout(network, addr, 5*time.Second)
	if err == nil {
		c.mu.Lock()
		c.conns = append(c.conns, conn)
		c.mu.Unlock()
	}
	return conn, err
}

// cut closes every connection dialled so far.
func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// TestLostConnectionFencesAndCounts cuts the connection of a stream that
// holds a delivery: the stream reconnects by itself, the stale delivery
// can be neither acked nor nacked (ErrLeaseLost), and the broker's
// redelivery comes with the lost attempt counted.
func TestLostConnectionFencesAndCounts(t *testing.T) {
	var net cutter
	s := newTestStream(t, Config{AMQP: amqp.Config{Dial: net.dial}, ReconnectMin: 10 * time.Millisecond})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, task("held"))
	stale := pollN(t, s, 1, 10*time.Second)[0]
	net.cut()

	d := pollAfterReconnect(t, s)
	if d.Task.ID != stale.Task.ID || d.Task.Attempt != 2 {
		t.Fatalf("after the connection was lost, got task %s attempt %d; want %s attempt 2", d.Task.ID, d.Task.Attempt, stale.Task.ID)
	}
	if d.Token == stale.Token {
		t.Error("the new claim has the stale claim's token")
	}
	if err := s.Ack(ctx, stale); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("Ack of a delivery of the lost connection = %v, want ErrLeaseLost", err)
	}
	for _, o := range []peonify.Outcome{peonify.OutcomeFailed, peonify.OutcomeReleased, peonify.OutcomeDead} {
		if err := s.Nack(ctx, stale, peonify.NackOptions{Outcome: o}); !errors.Is(err, peonify.ErrLeaseLost) {
			t.Errorf("Nack(%s) of a delivery of the lost connection = %v, want ErrLeaseLost", o, err)
		}
	}
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	nothingFor(t, s, 100*time.Millisecond)
}

// pollAfterReconnect polls through the reconnection until one task comes.
func pollAfterReconnect(t *testing.T, s *Stream) peonify.Delivery {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ds, err := s.Poll(streamtest.Context(t), 1)
		if err == nil && len(ds) == 1 {
			return ds[0]
		}
		select {
		case <-s.Wake():
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatal("no delivery within 10s of the connection loss")
	return peonify.Delivery{}
}

// TestCrashLoopEndsDead: a task whose processor's connection is lost on
// every attempt is dead-lettered once its MaxAttempts is used up, instead
// of crash-looping.
func TestCrashLoopEndsDead(t *testing.T) {
	var net cutter
	s := newTestStream(t, Config{AMQP: amqp.Config{Dial: net.dial}, ReconnectMin: 10 * time.Millisecond})
	tk := task("crasher")
	tk.MaxAttempts = 2
	streamtest.Enqueue(t, s, tk)
	d := pollN(t, s, 1, 10*time.Second)[0]
	net.cut() // attempt 1 lost
	d = pollAfterReconnect(t, s)
	if d.Task.Attempt != 2 {
		t.Fatalf("second delivery has attempt %d, want 2", d.Task.Attempt)
	}
	net.cut() // attempt 2, the last, lost
	deadline := time.Now().Add(10 * time.Second)
	for {
		ds, _ := s.Poll(streamtest.Context(t), 1)
		if len(ds) > 0 {
			if ds[0].Task.Attempt > tk.MaxAttempts {
				t.Fatalf("a task out of attempts was delivered again: attempt %d of %d", ds[0].Task.Attempt, tk.MaxAttempts)
			}
			// A second copy of the last attempt: the connection churn of
			// the cut can lose the ack of a redelivery the stream has
			// already copied (at-least-once). It is lost like the first.
			t.Logf("a copy of attempt %d came again; cutting it too", ds[0].Task.Attempt)
			net.cut()
			continue
		}
		if info, err := s.Get(streamtest.Context(t), tk.ID); err == nil {
			if info.State != peonify.StateDead || !strings.Contains(info.LastError, "out of attempts (2 of 2)") || info.Attempts != 2 {
				t.Errorf("dead task: %+v", info)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the crash-looping task did not reach the dead-letter queue within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPrefetchFollowsPoll checks that the broker never sends the stream
// more than it was asked for plus what it holds: with 100 tasks ready,
// Poll(5) makes the stream hold at most 5, and holding those 5 while
// asking for 5 more, at most 10.
func TestPrefetchFollowsPoll(t *testing.T) {
	s := newTestStream(t, Config{})
	ctx := streamtest.Context(t)
	tasks := streamtest.Tasks(100, "p")
	streamtest.Enqueue(t, s, tasks...)
	first := pollN(t, s, 5, 10*time.Second)
	held := func() int {
		s.mu.Lock()
		ss := s.cur
		s.mu.Unlock()
		c := ss.cons
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.state)
	}
	ready := func() int {
		n, err := s.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n[peonify.StatePending]
	}
	nothingMoreThan := func(limit int) {
		t.Helper()
		// The broker has sent all it will once the queue's ready count
		// settles at 100 minus what the stream holds.
		deadline := time.Now().Add(5 * time.Second)
		for ready() != 100-limit && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if h, r := held(), ready(); h > limit || r != 100-limit {
			t.Fatalf("the stream holds %d unacked messages (broker: %d ready of 100), want %d", h, r, limit)
		}
	}
	nothingMoreThan(5)
	second := pollN(t, s, 5, 10*time.Second)
	nothingMoreThan(10)
	if err := s.Ack(ctx, append(first, second...)...); err != nil {
		t.Fatal(err)
	}
}

// TestFixedPrefetch checks Config.Prefetch.
func TestFixedPrefetch(t *testing.T) {
	s := newTestStream(t, Config{Prefetch: 7})
	tasks := streamtest.Tasks(20, "p")
	streamtest.Enqueue(t, s, tasks...)
	var all []peonify.Delivery
	for range 3 {
		all = append(all, pollN(t, s, 5, 10*time.Second)...)
		if len(all) > 7 {
			ds, _ := s.Poll(streamtest.Context(t), 5)
			t.Fatalf("holding %d deliveries with Prefetch 7; another Poll returned %d", len(all), len(ds))
		}
		if len(all) == 5 {
			ds := pollN(t, s, 2, 10*time.Second)
			all = append(all, ds...)
			nothingFor(t, s, 50*time.Millisecond)
			break
		}
	}
	if err := s.Ack(streamtest.Context(t), all...); err != nil {
		t.Fatal(err)
	}
	pollN(t, s, 7, 10*time.Second)
}

// TestAckBatchesAcrossGaps acks out of order and in batches with holes, so
// that both the multiple and the single acks are used, then checks that
// exactly the acked tasks are gone.
func TestAckBatchesAcrossGaps(t *testing.T) {
	s := newTestStream(t, Config{})
	ctx := streamtest.Context(t)
	tasks := streamtest.Tasks(30, "a")
	streamtest.Enqueue(t, s, tasks...)
	ds := pollN(t, s, 30, 10*time.Second)
	var even, odd []peonify.Delivery
	for i, d := range ds {
		if i%2 == 0 {
			even = append(even, d)
		} else {
			odd = append(odd, d)
		}
	}
	if err := s.Ack(ctx, even[5:]...); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, ds[:10]...); err != nil { // overlaps the first batch
		t.Fatal(err)
	}
	if err := s.Ack(ctx, odd...); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, even...); err != nil {
		t.Fatal(err)
	}
	// A channel error (an unknown delivery tag) would end the session.
	s.mu.Lock()
	alive := s.cur != nil && !s.cur.dead()
	s.mu.Unlock()
	if !alive {
		t.Fatal("acking ended the session: an ack was sent for a tag the broker did not hold")
	}
	nothingFor(t, s, 100*time.Millisecond)
}

// TestDelayIsNeverEarly retries a task after 1.1s, a delay that takes
// several delay queues, and checks when it comes back.
func TestDelayIsNeverEarly(t *testing.T) {
	s := newTestStream(t, Config{})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, task("d"))
	d := pollN(t, s, 1, 10*time.Second)[0]
	const delay = 1100 * time.Millisecond
	start := time.Now()
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: delay}); err != nil {
		t.Fatal(err)
	}
	d = pollN(t, s, 1, 10*time.Second)[0]
	took := time.Since(start)
	if took < delay || took > delay+500*time.Millisecond {
		t.Errorf("a retry delayed by %s came back after %s", delay, took)
	}
	if d.Task.Attempt != 2 {
		t.Errorf("attempt %d, want 2", d.Task.Attempt)
	}
	t.Logf("a retry delayed by %s came back after %s", delay, took)
	_ = s.Ack(ctx, d)
}

// TestBucketFor checks the delay queue choice: never longer than the
// delay, except by a little at the last hop, and each hop at least halves
// what is left.
func TestBucketFor(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int64
	}{
		{0, 0}, {-time.Second, 0}, {time.Microsecond, 1}, {time.Millisecond, 1}, {3 * time.Millisecond, 2},
		{400 * time.Millisecond, 256}, {1000 * time.Millisecond, 1024}, {time.Second + time.Millisecond, 1024},
		{time.Hour, 2097152}, {100 * 24 * time.Hour, maxBucket},
	} {
		if got := bucketFor(c.d); got != c.want {
			t.Errorf("bucketFor(%s) = %d, want %d", c.d, got, c.want)
		}
	}
	for ms := int64(1); ms < 1<<22; ms = ms*17/16 + 1 {
		b := bucketFor(time.Duration(ms) * time.Millisecond)
		if b > ms && b-ms > min(ms/16, 100) {
			t.Fatalf("bucketFor(%dms) = %d: late by more than allowed", ms, b)
		}
		if b < ms && b*2 <= ms {
			t.Fatalf("bucketFor(%dms) = %d: a longer bucket fits", ms, b)
		}
	}
}

// TestInspector walks tasks through the states the Inspector can see, and
// checks that the stream itself is the peonify.Inspector that tools find
// by type assertion, answering errors.ErrUnsupported where it cannot see.
func TestInspector(t *testing.T) {
	s := newTestStream(t, Config{})
	in, ok := peonify.Stream(s).(peonify.Inspector)
	if !ok {
		t.Fatal("amqpstream.Stream does not implement peonify.Inspector: the CLI, the dashboard and the conformance suite cannot inspect it")
	}
	ctx := streamtest.Context(t)
	want := func(st peonify.State, n int) {
		t.Helper()
		counts, err := in.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if counts[st] != n {
			t.Errorf("Counts()[%s] = %d, want %d (all: %v)", st, counts[st], n, counts)
		}
	}
	tasks := streamtest.Tasks(5, "i")
	later := task("later")
	later.RunAt = time.Now().Add(time.Hour)
	streamtest.Enqueue(t, s, append(tasks, later)...)
	want(peonify.StatePending, 5)
	want(peonify.StateScheduled, 1)

	ds := pollN(t, s, 5, 10*time.Second)
	want(peonify.StateRunning, 5)
	for _, d := range ds[:3] {
		if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "dead " + d.Task.ID}); err != nil {
			t.Fatal(err)
		}
	}
	want(peonify.StateDead, 3)
	want(peonify.StateRunning, 2)

	if _, err := in.Get(ctx, later.ID); !errors.Is(err, errors.ErrUnsupported) || errors.Is(err, peonify.ErrNotFound) {
		t.Errorf("Get of a scheduled task = %v, want errors.ErrUnsupported (it cannot be looked up), not ErrNotFound", err)
	}
	if n, err := in.Delete(ctx, later.ID); n != 0 || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Delete of a scheduled task = %d, %v; want 0 and errors.ErrUnsupported (it cannot be found)", n, err)
	}
	for _, st := range []peonify.State{peonify.StatePending, peonify.StateScheduled, peonify.StateRunning} {
		if _, err := in.List(ctx, peonify.ListOptions{State: st}); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("List(%s) = %v, want errors.ErrUnsupported", st, err)
		}
	}
	if l, err := in.List(ctx, peonify.ListOptions{State: peonify.StateDone}); len(l) != 0 || err != nil {
		t.Errorf("List(done) = %v, %v; want nothing: the broker keeps no done task", ids(l), err)
	}
	dead := []string{ds[0].Task.ID, ds[1].Task.ID, ds[2].Task.ID}
	list, err := in.List(ctx, peonify.ListOptions{State: peonify.StateDead})
	if err != nil || len(list) != 3 || list[0].Task.ID != dead[0] || list[2].Task.ID != dead[2] {
		t.Fatalf("List(dead) = %v, %v; want %v in ID order", ids(list), err, dead)
	}
	if list[1].LastError != "dead "+dead[1] || list[1].Attempts != 1 || list[1].UpdatedAt.IsZero() || list[1].State != peonify.StateDead {
		t.Errorf("List(dead)[1] = %+v", list[1])
	}
	if page, _ := in.List(ctx, peonify.ListOptions{State: peonify.StateDead, After: dead[0], Limit: 1}); len(page) != 1 || page[0].Task.ID != dead[1] {
		t.Errorf("List(dead, After, Limit 1) = %v, want [%s]", ids(page), dead[1])
	}
	info, err := in.Get(ctx, dead[2])
	if err != nil || info.Task.Type != "i" || string(info.Task.Payload) != `{"n":1}` {
		t.Errorf("Get(dead) = %+v, %v", info, err)
	}
	if n, err := in.Delete(ctx, dead[0]); n != 1 || err != nil {
		t.Errorf("Delete(dead task) = %d, %v; want 1", n, err)
	}
	if n, err := in.Delete(ctx, later.ID, "no-such-task"); n != 0 || !errors.Is(err, errors.ErrUnsupported) ||
		!strings.Contains(err.Error(), later.ID) || !strings.Contains(err.Error(), "no-such-task") {
		t.Errorf("Delete(a scheduled and an unknown task) = %d, %v; want 0 and errors.ErrUnsupported naming both", n, err)
	}
	if n, err := in.Retry(ctx, later.ID); n != 0 || err != nil {
		t.Errorf("Retry of a scheduled task = %d, %v; want 0, nil: it is not dead", n, err)
	}
	if n, err := in.Retry(ctx, dead[1]); n != 1 || err != nil {
		t.Errorf("Retry(dead task) = %d, %v; want 1", n, err)
	}
	want(peonify.StateDead, 1)
	if err := s.Ack(ctx, ds[3:]...); err != nil {
		t.Fatal(err)
	}
	d := pollN(t, s, 1, 10*time.Second)[0]
	if d.Task.ID != dead[1] || d.Task.Attempt != 1 {
		t.Errorf("after Retry, delivered %s attempt %d; want %s attempt 1", d.Task.ID, d.Task.Attempt, dead[1])
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeReleased}); err != nil {
		t.Fatal(err)
	}
	// s consumes, so it may hold the released task: count and purge from
	// a stream that does not.
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	in = newTestStream(t, Config{Queue: s.Queue()})
	for _, c := range []struct {
		st peonify.State
		n  int
	}{{peonify.StatePending, 1}, {peonify.StateScheduled, 1}, {peonify.StateDead, 1}} {
		if n, err := in.Purge(ctx, c.st); n != c.n || err != nil {
			t.Errorf("Purge(%s) = %d, %v; want %d", c.st, n, err, c.n)
		}
	}
	want(peonify.StatePending, 0)
	want(peonify.StateScheduled, 0)
	want(peonify.StateDead, 0)
	if _, err := in.Purge(ctx, peonify.StateRunning); err == nil {
		t.Error("Purge(running) returned nil, want an error")
	}
}

func ids(infos []peonify.TaskInfo) []string {
	out := make([]string, len(infos))
	for i, ti := range infos {
		out[i] = ti.Task.ID
	}
	return out
}

// TestDeletedQueue deletes the work queue under a producer: the next
// Enqueue reports that the broker could not route the message, and the one
// after that succeeds, the stream having declared the queue again.
func TestDeletedQueue(t *testing.T) {
	s := newTestStream(t, Config{})
	if err := s.Connect(streamtest.Context(t)); err != nil {
		t.Fatal(err)
	}
	ch := rawChannel(t)
	if _, err := ch.QueueDelete(s.Queue(), false, false, false); err != nil {
		t.Fatal(err)
	}
	err := s.Enqueue(streamtest.Context(t), task("x"))
	if !errors.Is(err, errReturned) {
		t.Fatalf("Enqueue to a deleted queue = %v, want an error saying the queue does not exist", err)
	}
	t.Log(err)
	streamtest.Enqueue(t, s, task("x"))
	pollN(t, s, 1, 10*time.Second)
}

// TestCloseGivesBackBuffered closes a stream that holds messages it never
// handed out: another stream gets them, at attempt 1.
func TestCloseGivesBackBuffered(t *testing.T) {
	a := newTestStream(t, Config{Prefetch: 50})
	tasks := streamtest.Tasks(20, "b")
	streamtest.Enqueue(t, a, tasks...)
	d := pollN(t, a, 1, 10*time.Second)
	if err := a.Ack(streamtest.Context(t), d...); err != nil {
		t.Fatal(err)
	}
	// Wait until the broker has sent the other 19 to a.
	deadline := time.Now().Add(5 * time.Second)
	for {
		a.mu.Lock()
		c := a.cur.cons
		a.mu.Unlock()
		c.mu.Lock()
		n := len(c.buf) - c.bufHead
		c.mu.Unlock()
		if n == 19 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream buffered %d messages, want 19", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := a.Close(streamtest.Context(t)); err != nil {
		t.Fatal(err)
	}
	b := newTestStream(t, Config{Queue: a.Queue()})
	for _, d := range pollN(t, b, 19, 10*time.Second) {
		if d.Task.Attempt != 1 {
			t.Errorf("task %s given back at Close came with attempt %d, want 1", d.Task.ID, d.Task.Attempt)
		}
	}
}

// TestPriority checks Config.MaxPriority: higher first, exact priorities
// kept, out-of-range ones clamped for ordering.
func TestPriority(t *testing.T) {
	s := newTestStream(t, Config{MaxPriority: 10})
	prios := []int{1, 5, 12, 0, 7}
	var tasks []*peonify.Task
	for _, p := range prios {
		tk := task("p")
		tk.Priority = p
		tasks = append(tasks, tk)
	}
	streamtest.Enqueue(t, s, tasks...)
	time.Sleep(50 * time.Millisecond) // let all five reach the queue before the consumer starts
	var got []int
	for range prios {
		d := pollN(t, s, 1, 10*time.Second)[0]
		got = append(got, d.Task.Priority)
		_ = s.Ack(streamtest.Context(t), d)
	}
	if fmt.Sprint(got) != "[12 7 5 1 0]" {
		t.Errorf("delivered priorities %v, want [12 7 5 1 0]", got)
	}
}

// TestScheduledFromPlainClient: a producer that sets x-peonify-run-at and
// publishes to the work queue gets the task delayed.
func TestScheduledFromPlainClient(t *testing.T) {
	s := newTestStream(t, Config{})
	if err := s.Connect(streamtest.Context(t)); err != nil {
		t.Fatal(err)
	}
	ch := rawChannel(t)
	runAt := time.Now().Add(300 * time.Millisecond)
	err := ch.Publish("", s.Queue(), false, false, amqp.Publishing{Type: "later", Headers: amqp.Table{headerRunAt: runAt.UnixMilli()}})
	if err != nil {
		t.Fatal(err)
	}
	d := pollN(t, s, 1, 10*time.Second)[0]
	if time.Now().Before(runAt.Truncate(time.Millisecond)) {
		t.Errorf("a task due at %s was delivered at %s", runAt.Format(time.StampMilli), time.Now().Format(time.StampMilli))
	}
	if d.Task.Attempt != 1 || !d.Task.RunAt.Equal(runAt.Truncate(time.Millisecond)) {
		t.Errorf("delivered attempt %d run at %s", d.Task.Attempt, d.Task.RunAt)
	}
}

// TestConfigErrors checks that bad settings are reported, naming the
// field.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		url, field string
		cfg        Config
	}{
		{"http://localhost", "URL", Config{}},
		{"amqp://localhost", "Queue", Config{Queue: strings.Repeat("q", 201)}},
		{"amqp://localhost", "Queue", Config{Queue: "amq.mine"}},
		{"amqp://localhost", "Recovery", Config{AMQP: amqp.Config{Recovery: &amqp.Recovery{}}}},
		{"amqp://localhost", "Prefetch", Config{Prefetch: -1}},
		{"amqp://localhost", "MaxPriority", Config{MaxPriority: 256}},
		{"amqp://localhost", "MaxPriority", Config{MaxPriority: 5, Quorum: true}},
		{"amqp://localhost", "ReconnectMax", Config{ReconnectMin: time.Minute, ReconnectMax: time.Second}},
		{"amqp://localhost", "KeepDead", Config{KeepDead: 100 * 24 * time.Hour}},
	} {
		_, err := New(c.url, c.cfg)
		var ce *peonify.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(ce.Field, c.field) {
			t.Errorf("New(%q, %+v) = %v, want a ConfigError about %s", c.url, c.cfg, err, c.field)
		}
	}
	s, err := New("amqp://user:secret@localhost:5672/", Config{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s.redacted, "secret") || s.Queue() != "peonify" || s.Name() != "amqp:peonify" {
		t.Errorf("redacted %q, queue %q, name %q", s.redacted, s.Queue(), s.Name())
	}
}

// TestUnreachableBroker: Poll reports the connection error promptly,
// Enqueue waits until its context ends, and Close returns.
func TestUnreachableBroker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	s, err := New("amqp://guest:guest@"+addr+"/", Config{Logger: slog.New(slog.DiscardHandler), ReconnectMin: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if _, err := s.Poll(streamtest.Context(t), 1); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Errorf("Poll with no broker = %v, want a connection error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Enqueue(ctx, task("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Enqueue with no broker = %v, want the context's error", err)
	}
}

// TestRefusedCredentials checks that a wrong password or vhost fails
// Connect and Enqueue as soon as the broker says so, with an error that
// says what to fix, instead of waiting for the context to end.
func TestRefusedCredentials(t *testing.T) {
	u, err := url.Parse(testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	wrongPassword, wrongVhost := *u, *u
	wrongPassword.User = url.UserPassword(u.User.Username(), "not-the-password")
	wrongVhost.Path = "/no-such-vhost-" + uniqueQueue(t)
	for name, addr := range map[string]string{"password": wrongPassword.String(), "vhost": wrongVhost.String()} {
		t.Run(name, func(t *testing.T) {
			s, err := New(addr, Config{Logger: slog.New(slog.DiscardHandler), Queue: uniqueQueue(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			err = s.Connect(ctx)
			if err == nil || !strings.Contains(err.Error(), "check the user, password and vhost") || ctx.Err() != nil {
				t.Fatalf("Connect = %v after %s, want the refusal at once, naming what to check", err, time.Since(start))
			}
			if strings.Contains(err.Error(), "not-the-password") {
				t.Errorf("the error shows the password: %v", err)
			}
			if err := s.Enqueue(ctx, task("x")); err == nil || ctx.Err() != nil {
				t.Errorf("Enqueue = %v, want the refusal before the context ends", err)
			}
		})
	}
}

// TestClosedStream checks ErrClosed after Close, and an idempotent Close.
func TestClosedStream(t *testing.T) {
	s := newTestStream(t, Config{})
	streamtest.Enqueue(t, s, task("c"))
	d := pollN(t, s, 1, 10*time.Second)[0]
	if err := s.Ack(streamtest.Context(t), d); err != nil {
		t.Fatal(err)
	}
	ctx := streamtest.Context(t)
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := s.Poll(ctx, 1); !errors.Is(err, peonify.ErrClosed) {
		t.Errorf("Poll after Close = %v", err)
	}
	if err := s.Enqueue(ctx, task("c")); !errors.Is(err, peonify.ErrClosed) {
		t.Errorf("Enqueue after Close = %v", err)
	}
	if _, err := s.Counts(ctx); !errors.Is(err, peonify.ErrClosed) {
		t.Errorf("Counts after Close = %v", err)
	}
}

// TestPrefetchStaysNearCapacity runs slow tasks through a processor that
// holds at most 8 (4 workers, a local queue of 4) and checks that the
// prefetch, which bounds what the broker sends this process, stays close
// to that: the rest of the queue stays available to other processors. It
// may exceed 8 by the tasks done but not yet acked (the processor batches
// acks for a few milliseconds), and by a growth step.
func TestPrefetchStaysNearCapacity(t *testing.T) {
	s := newTestStream(t, Config{})
	const n = 120
	tasks := streamtest.Tasks(n, "slow")
	streamtest.Enqueue(t, s, tasks...)
	var done atomic.Int32
	all := make(chan struct{})
	p, err := peonify.New(peonify.Config{Workers: 4, QueueSize: 4, Logger: streamtest.Logger(t),
		OnEvent: func(e peonify.Event) {
			if e.Kind == peonify.EventSucceeded && done.Add(1) == n {
				close(all)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.AddTaskList(peonify.TaskList{"slow": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		time.Sleep(5 * time.Millisecond)
		return nil
	})})
	_ = p.AddStream(s)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	high := 0
	for waiting := true; waiting; {
		select {
		case <-all:
			waiting = false
		case <-time.After(time.Millisecond):
		}
		high = max(high, s.prefetch())
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Logf("prefetch reached %d for a processor holding at most 8", high)
	if high > 16 {
		t.Errorf("prefetch reached %d for a processor that holds at most 8 slow tasks", high)
	}
}

// TestIdlePickupUsesWake: an idle processor, whose poll interval is a
// minute, starts a task enqueued by another process within milliseconds,
// because the stream's Wake fires when the broker pushes the message.
func TestIdlePickupUsesWake(t *testing.T) {
	s := newTestStream(t, Config{})
	producer := newTestStream(t, Config{Queue: s.Queue()})
	started := make(chan time.Time, 1)
	p, err := peonify.New(peonify.Config{Workers: 2, PollInterval: time.Minute, MinPollInterval: time.Minute, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.AddTaskList(peonify.TaskList{"ping": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		started <- time.Now()
		return nil
	})})
	_ = p.AddStream(s)
	defer streamtest.Run(t, p)()
	// Idle: the processor has polled the empty queue and now waits.
	deadline := time.Now().Add(10 * time.Second)
	for st := p.Stats(); len(st.Streams) == 0 || st.Streams[0].Polls < 1 || s.prefetch() == 0; st = p.Stats() {
		if time.Now().After(deadline) {
			t.Fatal("the processor did not poll within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	enqueued := time.Now()
	streamtest.Enqueue(t, producer, task("ping"))
	select {
	case at := <-started:
		took := at.Sub(enqueued)
		t.Logf("an idle processor started a task %s after its Enqueue began", took)
		if took > 2*time.Second {
			t.Errorf("pickup took %s: Wake did not fire", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the task did not start within 10s of its Enqueue")
	}
}

// TestPublishChannelLossKeepsDeliveries: when the broker closes the
// publishing channel (as it does for a message it refuses), the session
// and its deliveries live on, and the next publish opens a new channel.
func TestPublishChannelLossKeepsDeliveries(t *testing.T) {
	s := newTestStream(t, Config{})
	streamtest.Enqueue(t, s, task("a"), task("b"))
	ds := pollN(t, s, 2, 10*time.Second)
	s.mu.Lock()
	ss := s.cur
	s.mu.Unlock()
	ss.pubMu.Lock()
	_ = ss.pub.ch.Close()
	ss.pubMu.Unlock()

	if err := s.Nack(streamtest.Context(t), ds[0], peonify.NackOptions{Outcome: peonify.OutcomeFailed, Reason: "r"}); err != nil {
		t.Fatalf("Nack after the publishing channel closed: %v", err)
	}
	if err := s.Ack(streamtest.Context(t), ds[1]); err != nil {
		t.Fatalf("Ack after the publishing channel closed: %v", err)
	}
	streamtest.Enqueue(t, s, task("c"))
	got := pollN(t, s, 2, 10*time.Second)
	if ss.dead() {
		t.Fatal("losing the publishing channel ended the session")
	}
	for _, d := range got {
		if d.Task.Type == "a" && d.Task.Attempt != 2 {
			t.Errorf("the nacked task came back as attempt %d, want 2", d.Task.Attempt)
		}
	}
	_ = s.Ack(streamtest.Context(t), got...)
}
