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

// capabilities names the optional interfaces that s implements.
func capabilities(s peonify.Stream) []string {
	var names []string
	if _, ok := s.(peonify.Extender); ok {
		names = append(names, "Extender")
	}
	if _, ok := s.(peonify.Waker); ok {
		names = append(names, "Waker")
	}
	if _, ok := s.(peonify.Enqueuer); ok {
		names = append(names, "Enqueuer")
	}
	if _, ok := s.(peonify.Inspector); ok {
		names = append(names, "Inspector")
	}
	if _, ok := s.(peonify.PollLimiter); ok {
		names = append(names, "PollLimiter")
	}
	return names
}

// TestFaultStreamCapabilities checks that a FaultStream implements exactly
// the optional interfaces of the stream it wraps, so that the processor
// neither misses one (a PollLimiter's cap) nor sees one the stream lacks
// (an Extender that would fail every renewal), and passes their calls on.
func TestFaultStreamCapabilities(t *testing.T) {
	ms := memstream.New(memstream.Config{})
	for _, inner := range []peonify.Stream{
		ms,
		capped{ms},
		struct{ peonify.Stream }{ms},
		struct {
			peonify.Stream
			peonify.Waker
		}{ms, ms},
		peonifytest.NewFaultStream(capped{ms}),
	} {
		fs := peonifytest.NewFaultStream(inner)
		if got, want := capabilities(fs), capabilities(inner); !slices.Equal(got, want) {
			t.Errorf("a FaultStream over %T implements %v, want exactly %v", inner, got, want)
		}
		if fs.Unwrap() != inner {
			t.Errorf("Unwrap of a FaultStream over %T does not return it", inner)
		}
	}
	if l, ok := peonifytest.NewFaultStream(capped{ms}).(peonify.PollLimiter); !ok || l.MaxPoll() != 7 {
		t.Error("a FaultStream over a stream with MaxPoll 7 does not pass it on")
	}
	if name := peonifytest.NewFaultStream(ms).Name(); name != ms.Name() {
		t.Errorf("Name() = %q, want the wrapped stream's %q", name, ms.Name())
	}
}
