//go:build unix

package chaostest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/peonifytest"
	"github.com/peonify/peonify/streams/memstream"
)

// capability is one optional interface: whether s implements it itself,
// and what peonify.As finds through s.
type capability struct {
	name string
	own  func(s peonify.Stream) bool
	as   func(s peonify.Stream) (any, bool)
}

func capabilityOf[T any](name string) capability {
	return capability{
		name: name,
		own:  func(s peonify.Stream) bool { _, ok := s.(T); return ok },
		as:   func(s peonify.Stream) (any, bool) { return peonify.As[T](s) },
	}
}

// allCapabilities are the root's optional interfaces.
var allCapabilities = []capability{
	capabilityOf[peonify.Extender]("Extender"),
	capabilityOf[peonify.PollLimiter]("PollLimiter"),
	capabilityOf[peonify.Waker]("Waker"),
	capabilityOf[peonify.Starter]("Starter"),
	capabilityOf[peonify.Namer]("Namer"),
	capabilityOf[peonify.Enqueuer]("Enqueuer"),
	capabilityOf[peonify.Inspector]("Inspector"),
	capabilityOf[peonify.Limiter]("Limiter"),
	capabilityOf[peonify.Tracker]("Tracker"),
	capabilityOf[peonify.WorkflowStore]("WorkflowStore"),
}

// capabilities names the optional interfaces that peonify.As finds
// through s, and with it the processor, the CLI and the dashboard.
func capabilities(s peonify.Stream) []string {
	var names []string
	for _, c := range allCapabilities {
		if _, ok := c.as(s); ok {
			names = append(names, c.name)
		}
	}
	return names
}

// streamName names s as the processor does: the name As finds, or else
// the type of the innermost stream.
func streamName(s peonify.Stream) string {
	if n, ok := peonify.As[peonify.Namer](s); ok {
		return n.Name()
	}
	for {
		u, ok := s.(interface{ Unwrap() peonify.Stream })
		if !ok {
			return fmt.Sprintf("%T", s)
		}
		s = u.Unwrap()
	}
}

// unwrapsTo reports whether Unwrap, called once or more from w, returns s.
func unwrapsTo(w, s peonify.Stream) bool {
	for {
		u, ok := w.(interface{ Unwrap() peonify.Stream })
		if !ok {
			return false
		}
		if w = u.Unwrap(); w == s {
			return true
		}
	}
}

// TestWrappersKeepCapabilities wraps each real stream (memstream and every
// backend: sqlitestream, pgstream, redisstream, natsstream, amqpstream) in
// the wrappers that tests put between a processor and its stream
// (peonifytest.FaultStream, Ledger.Wrap, and one in the other) and checks
// that peonify.As, and with it the processor, finds through each exactly
// the optional interfaces of the stream: none is lost (a PollLimiter's cap,
// a Waker's wake-ups, a Starter's start) and none is added (an Extender or
// an Inspector that could only answer errors.ErrUnsupported). What a
// wrapper does not intercept is the stream's own; what it intercepts
// (FaultStream's Extend and Enqueue) it implements only if the stream does.
func TestWrappersKeepCapabilities(t *testing.T) {
	l, _ := openTestLedger(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	streams := map[string]peonify.Stream{"memory": memstream.New(memstream.Config{Lease: time.Minute})}
	for _, b := range backends {
		if b.cluster {
			continue // the same streams as the single-server backends, on clusters that take seconds to start
		}
		spec := b.prepare(t, t.TempDir(), "")
		o, err := openStream(context.Background(), spec, "caps", logger)
		if err != nil {
			t.Fatalf("%s: %v", b.name, err)
		}
		t.Cleanup(func() {
			_ = o.s.Close(context.Background())
			o.done()
		})
		streams[b.name] = o.s
	}
	wrappers := []struct {
		name string
		wrap func(peonify.Stream) peonify.Stream
	}{
		{"FaultStream", func(s peonify.Stream) peonify.Stream { return peonifytest.NewFaultStream(s) }},
		{"Ledger.Wrap", l.Wrap},
		{"Ledger.Wrap(FaultStream)", func(s peonify.Stream) peonify.Stream { return l.Wrap(peonifytest.NewFaultStream(s)) }},
		{"FaultStream(Ledger.Wrap)", func(s peonify.Stream) peonify.Stream { return peonifytest.NewFaultStream(l.Wrap(s)) }},
	}
	for name, s := range streams {
		var want []string
		for _, c := range allCapabilities {
			if c.own(s) {
				want = append(want, c.name)
			}
		}
		t.Logf("%s (%T): %v", name, s, want)
		for _, w := range wrappers {
			ws := w.wrap(s)
			if got := capabilities(ws); !slices.Equal(got, want) {
				t.Errorf("through %s over the %s stream, As finds %v, want exactly the stream's %v", w.name, name, got, want)
			}
			// What a wrapper does not intercept is found on the stream itself.
			for _, c := range allCapabilities {
				found, ok := c.as(ws)
				intercepted := c.name == "Extender" || c.name == "Enqueuer"
				if ok && !intercepted && found != any(s) {
					t.Errorf("through %s over the %s stream, As[%s] finds %T, not the stream", w.name, name, c.name, found)
				}
			}
			if !unwrapsTo(ws, s) {
				t.Errorf("Unwrap of %s over the %s stream does not lead to the stream", w.name, name)
			}
			if got, want := streamName(ws), streamName(s); got != want {
				t.Errorf("%s over the %s stream is named %q, want the stream's name %q", w.name, name, got, want)
			}
		}
	}
}

// TestWrappedStreamNamedAndStarted registers a wrapped stream with a
// processor and checks that the processor names it as the stream and
// starts it through the wrappers.
func TestWrappedStreamNamedAndStarted(t *testing.T) {
	l, _ := openTestLedger(t)
	ms := memstream.New(memstream.Config{Name: "inner", Lease: time.Minute})
	st := &startCounter{Stream: ms}
	p, err := peonify.New(peonify.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := streamtest.CloseOnRun(t, p, "t")
	if err := p.AddStream(l.Wrap(peonifytest.NewFaultStream(st))); err != nil {
		t.Fatal(err)
	}
	if got := p.Stats().Streams[0].Name; got != "inner" {
		t.Errorf("the wrapped stream is named %q, want %q", got, "inner")
	}
	if err := ms.Enqueue(context.Background(), &peonify.Task{Type: "t"}); err != nil {
		t.Fatal(err)
	}
	streamtest.RunUntil(t, p, done, "the task did not run")
	if n := st.starts.Load(); n != 1 {
		t.Errorf("Start was called %d times through the wrappers, want 1", n)
	}
}

// startCounter is a memstream with a Start that counts its calls.
type startCounter struct {
	*memstream.Stream
	starts atomic.Int64
}

func (s *startCounter) Start(context.Context) error {
	s.starts.Add(1)
	return nil
}
