package peonify_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// hungStore is a store that stopped answering after handing out tasks:
// Ack and Close block until their context ends.
type hungStore struct {
	*memstream.Stream
	name string
}

func (h hungStore) Name() string { return h.name }

func (h hungStore) Ack(ctx context.Context, _ ...peonify.Delivery) error {
	<-ctx.Done()
	return ctx.Err()
}

func (h hungStore) Close(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestShutdownIsBoundedWhenTheStoreHangs checks that Run returns within
// Config.ShutdownTimeout (28s by default) of its context ending even if
// every stream hangs: ack calls, however many and however retried, end
// two seconds before it, and the streams close side by side in what is
// left. The tasks whose acks failed are counted, and come back when their
// leases end. Virtual time (testing/synctest) makes the wait instant and
// exact.
func TestShutdownIsBoundedWhenTheStoreHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := peonify.New(peonify.Config{Workers: 4, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		var done atomic.Int64
		_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
			done.Add(1)
			return nil
		})})
		for _, name := range []string{"a", "b", "c"} {
			s := hungStore{Stream: memstream.New(memstream.Config{}), name: name}
			fill(t, s.Stream, "t", 10)
			if err := p.AddStream(s); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		runUntil(t, p, &done, 30) // the acks hang from the first
		if took := time.Since(start); took > 28*time.Second+10*time.Millisecond {
			t.Errorf("Run took %s; want at most 28s, the default ShutdownTimeout, after the tasks ran", took)
		}
		if n := p.Stats().AckErrors; n != 30 {
			t.Errorf("AckErrors = %d, want the 30 tasks whose acks never completed", n)
		}
	})
}

// blackholed wraps a memstream that stops answering when dead is set, as
// a store behind a dead connection does: every call blocks until its
// context ends.
type blackholed struct {
	*memstream.Stream
	dead atomic.Bool
}

func (b *blackholed) hang(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

func (b *blackholed) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	if b.dead.Load() {
		return nil, b.hang(ctx)
	}
	return b.Stream.Poll(ctx, limit)
}

func (b *blackholed) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	if b.dead.Load() {
		return b.hang(ctx)
	}
	return b.Stream.Ack(ctx, ds...)
}

func (b *blackholed) Nack(ctx context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	if b.dead.Load() {
		return b.hang(ctx)
	}
	return b.Stream.Nack(ctx, d, opts)
}

func (b *blackholed) Extend(ctx context.Context, d peonify.Delivery, lease time.Duration) (peonify.Delivery, error) {
	if b.dead.Load() {
		return d, b.hang(ctx)
	}
	return b.Stream.Extend(ctx, d, lease)
}

func (b *blackholed) Close(ctx context.Context) error {
	if b.dead.Load() {
		return b.hang(ctx)
	}
	return b.Stream.Close(ctx)
}

// TestShutdownWithABlackholedStoreAndAFullQueue checks the whole drain
// against a store that stopped answering, with every worker busy and the
// local queue full: Run returns within Config.ShutdownTimeout (releasing
// the queued tasks costs one StoreTimeout, not one per task), and no task
// is lost: every one that could not be handed back is available again
// once its lease ends.
func TestShutdownWithABlackholedStoreAndAFullQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const workers, total = 8, 40
		ms := memstream.New(memstream.Config{Lease: 30 * time.Second})
		fill(t, ms, "t", total)
		store := &blackholed{Stream: ms}
		p, err := peonify.New(peonify.Config{Workers: workers, QueueSize: workers, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			<-ctx.Done() // runs until shutdown cancels it
			return context.Cause(ctx)
		})})
		if err := p.AddStream(store); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- p.Run(ctx) }()
		for {
			st := p.Stats()
			if len(st.InFlight) == workers && st.QueueDepth == workers {
				break
			}
			time.Sleep(time.Millisecond)
		}
		store.dead.Store(true)
		start := time.Now()
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run = %v", err)
		}
		if took := time.Since(start); took > 28*time.Second {
			t.Errorf("Run took %s to return after its context ended; want at most 28s, the default ShutdownTimeout", took)
		}
		// Nothing was handed back, nothing acked: once their leases end,
		// every task is there again.
		time.Sleep(31 * time.Second)
		ds, err := ms.Poll(context.Background(), 2*total)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != total {
			t.Errorf("after the leases ended %d of %d tasks were available again", len(ds), total)
		}
	})
}

// TestPollIsBoundedByStoreTimeout checks that a Poll that never answers
// (a dead connection that no reset ends) fails after Config.StoreTimeout
// with an error wrapping ErrStoreTimeout, counted as a poll error that
// Stats shows while the stream backs off.
func TestPollIsBoundedByStoreTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &blackholed{Stream: memstream.New(memstream.Config{})}
		store.dead.Store(true)
		var logs strings.Builder
		p, err := peonify.New(peonify.Config{Workers: 1, StoreTimeout: 3 * time.Second, Logger: textLogger(&logs)})
		if err != nil {
			t.Fatal(err)
		}
		_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil })})
		_ = p.AddStream(store, peonify.StreamName("dead"))
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- p.Run(ctx) }()
		start := time.Now()
		var ss peonify.StreamStats
		for {
			if ss = p.Stats().Streams[0]; ss.PollErrors > 0 {
				break
			}
			if time.Since(start) > time.Minute {
				t.Fatal("no poll error a minute after the store stopped answering")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if took := time.Since(start); took > 3*time.Second+50*time.Millisecond {
			t.Errorf("the poll error showed after %s; want it at the 3s StoreTimeout", took)
		}
		if !ss.BackingOff || !strings.Contains(ss.LastError, peonify.ErrStoreTimeout.Error()) {
			t.Errorf("stream stats = %+v; want it backing off with a store timeout", ss)
		}
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run = %v", err)
		}
		if n := strings.Count(logs.String(), "poll failed"); n != 1 {
			t.Errorf("%d log lines about the failed poll; want one:\n%s", n, logs.String())
		}
	})
}

// slowNack is a store whose Nack blocks until its context ends, telling
// nacking when it starts.
type slowNack struct {
	*memstream.Stream
	nacking chan struct{}
}

func (s *slowNack) Nack(ctx context.Context, _ peonify.Delivery, _ peonify.NackOptions) error {
	select {
	case s.nacking <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestAbandonDoesNotHoldSlotsDuringNack checks that when shutdown gives
// up on a handler that ignores its context, the Nack that releases its
// task runs outside the worker's slot lock: Stats, which reads every
// slot, answers at once while that Nack waits on a slow store.
func TestAbandonDoesNotHoldSlotsDuringNack(t *testing.T) {
	store := &slowNack{Stream: memstream.New(memstream.Config{}), nacking: make(chan struct{}, 1)}
	fill(t, store.Stream, "t", 1)
	stuck := make(chan struct{})
	defer close(stuck)
	running := make(chan struct{}, 1)
	p, err := peonify.New(peonify.Config{Workers: 1, ShutdownGrace: 10 * time.Millisecond,
		ShutdownTimeout: 3 * time.Second, StoreTimeout: 2 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		running <- struct{}{}
		<-stuck // ignores its context
		return nil
	})})
	_ = p.AddStream(store)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	<-running
	cancel()
	<-store.nacking
	statsDone := make(chan struct{})
	go func() { p.Stats(); close(statsDone) }()
	select {
	case <-statsDone:
	case <-time.After(500 * time.Millisecond):
		t.Error("Stats blocked while shutdown nacked an abandoned task")
	}
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "ignored context cancellation") {
		t.Errorf("Run = %v; want the error naming the abandoned handler", err)
	}
	<-statsDone
}

// textLogger logs everything to w.
func textLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
