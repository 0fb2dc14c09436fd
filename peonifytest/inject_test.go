package peonifytest_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifytest"
	"github.com/peonify/peonify/streams/memstream"
)

// TestFaultStreamProcessorRecovers runs a processor over a FaultStream that
// fails polls and acks and pauses, and checks every task still completes.
func TestFaultStreamProcessorRecovers(t *testing.T) {
	ms := memstream.New(memstream.Config{})
	fs := peonifytest.NewFaultStream(ms)
	const n = 50
	for range n {
		if err := fs.(peonify.Enqueuer).Enqueue(context.Background(), &peonify.Task{Type: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	fs.FailNext(peonifytest.OpPoll, 2, errors.New("broker unreachable"))
	fs.FailNext(peonifytest.OpAck, 2, nil) // the processor retries a failed ack batch

	var done atomic.Int64
	p, _ := peonify.New(peonify.Config{Workers: 4, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		done.Add(1)
		return nil
	})})
	_ = p.AddStream(fs)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	waitFor(t, func() bool { return done.Load() == n })

	// Paused, the stream accepts nothing; resumed, work flows again.
	fs.Pause()
	pollsBefore := fs.Calls(peonifytest.OpPoll)
	if err := ms.Enqueue(context.Background(), &peonify.Task{ID: "after-pause", Type: "t"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if done.Load() != n {
		t.Fatal("a task ran while the stream was paused")
	}
	fs.Resume()
	waitFor(t, func() bool { return done.Load() == n+1 })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if fs.Calls(peonifytest.OpPoll) <= pollsBefore {
		t.Error("no poll after Resume")
	}
	if got := p.Stats().Streams[0].PollErrors; got != 2 {
		t.Errorf("poll errors = %d, want the 2 injected", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// capped is a stream whose polls return at most 7 tasks.
type capped struct{ *memstream.Stream }

func (capped) MaxPoll() int { return 7 }

// capabilities names the optional interfaces that peonify.As finds
// through s.
func capabilities(s peonify.Stream) []string {
	var names []string
	for name, ok := range map[string]bool{
		"Extender":      has[peonify.Extender](s),
		"PollLimiter":   has[peonify.PollLimiter](s),
		"Waker":         has[peonify.Waker](s),
		"Starter":       has[peonify.Starter](s),
		"Namer":         has[peonify.Namer](s),
		"Enqueuer":      has[peonify.Enqueuer](s),
		"Inspector":     has[peonify.Inspector](s),
		"Limiter":       has[peonify.Limiter](s),
		"Tracker":       has[peonify.Tracker](s),
		"WorkflowStore": has[peonify.WorkflowStore](s),
	} {
		if ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func has[T any](s peonify.Stream) bool {
	_, ok := peonify.As[T](s)
	return ok
}

// starter is a stream with a Start.
type starter struct{ peonify.Stream }

func (starter) Start(context.Context) error { return nil }

// TestFaultStreamCapabilities checks that peonify.As finds through a
// FaultStream exactly the optional interfaces of the stream it wraps, so
// that the processor neither misses one (a PollLimiter's cap, a Start)
// nor sees one the stream lacks (an Extender that would fail every
// renewal), and that the ones it intercepts pass their calls on.
func TestFaultStreamCapabilities(t *testing.T) {
	ms := memstream.New(memstream.Config{Lease: time.Minute})
	for _, inner := range []peonify.Stream{
		ms,
		capped{ms},
		struct{ peonify.Stream }{ms},
		struct {
			peonify.Stream
			peonify.Waker
		}{ms, ms},
		starter{ms},
		peonifytest.NewFaultStream(capped{ms}),
		peonifytest.NewFaultStream(struct{ peonify.Stream }{ms}),
	} {
		fs := peonifytest.NewFaultStream(inner)
		if got, want := capabilities(fs), capabilities(inner); !slices.Equal(got, want) {
			t.Errorf("through a FaultStream over %T, As finds %v, want exactly %v", inner, got, want)
		}
		// Of the two it intercepts, its own type has exactly the inner's.
		_, ext := peonify.Stream(fs).(peonify.Extender)
		_, enq := peonify.Stream(fs).(peonify.Enqueuer)
		if ext != has[peonify.Extender](inner) || enq != has[peonify.Enqueuer](inner) {
			t.Errorf("a FaultStream over %T implements Extender %v, Enqueuer %v; want the inner's", inner, ext, enq)
		}
		if fs.Unwrap() != inner {
			t.Errorf("Unwrap of a FaultStream over %T does not return it", inner)
		}
	}
	if l, ok := peonify.As[peonify.PollLimiter](peonifytest.NewFaultStream(capped{ms})); !ok || l.MaxPoll() != 7 {
		t.Error("As does not find the MaxPoll of 7 of the stream under a FaultStream")
	}
	if n, ok := peonify.As[peonify.Namer](peonifytest.NewFaultStream(ms)); !ok || n.Name() != ms.Name() {
		t.Errorf("As[Namer] through a FaultStream does not find the wrapped stream's name %q", ms.Name())
	}

	// Extend reaches the stream, and an injected fault stops it.
	fs := peonifytest.NewFaultStream(ms)
	if err := fs.(peonify.Enqueuer).Enqueue(context.Background(), &peonify.Task{Type: "t"}); err != nil {
		t.Fatal(err)
	}
	ds, err := fs.Poll(context.Background(), 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Poll = %d, %v", len(ds), err)
	}
	fs.FailNext(peonifytest.OpExtend, 1, nil)
	if _, err := fs.(peonify.Extender).Extend(context.Background(), ds[0], time.Hour); !errors.Is(err, peonifytest.ErrInjected) {
		t.Errorf("Extend with a fault set = %v, want ErrInjected", err)
	}
	if d, err := fs.(peonify.Extender).Extend(context.Background(), ds[0], time.Hour); err != nil || time.Until(d.Deadline) < 50*time.Minute {
		t.Errorf("Extend = deadline in %s, %v; want about an hour", time.Until(d.Deadline), err)
	}
}
