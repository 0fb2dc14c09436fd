package peonify_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/memstream"
)

// passThrough wraps a stream and intercepts only Poll: every optional
// capability is left to Unwrap.
type passThrough struct {
	peonify.Stream
	polls atomic.Int64
}

func (w *passThrough) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	w.polls.Add(1)
	return w.Stream.Poll(ctx, limit)
}

func (w *passThrough) Unwrap() peonify.Stream { return w.Stream }

// bare hides every optional interface of the stream it embeds.
type bare struct{ peonify.Stream }

func TestAsLooksThroughWrappers(t *testing.T) {
	ms := memstream.New(memstream.Config{Name: "inner", Lease: time.Minute})
	w := &passThrough{Stream: &passThrough{Stream: ms}}
	if _, ok := peonify.Stream(w).(peonify.Extender); ok {
		t.Fatal("the test's wrapper should not implement Extender itself")
	}
	if ext, ok := peonify.As[peonify.Extender](w); !ok || ext != peonify.Extender(ms) {
		t.Errorf("As[Extender] = %v, %v; want the wrapped memstream", ext, ok)
	}
	if in, ok := peonify.As[peonify.Inspector](w); !ok || in != peonify.Inspector(ms) {
		t.Errorf("As[Inspector] = %v, %v; want the wrapped memstream", in, ok)
	}
	if got, ok := peonify.As[*memstream.Stream](w); !ok || got != ms {
		t.Errorf("As[*memstream.Stream] = %v, %v; want the wrapped memstream", got, ok)
	}
	// The outermost implementation wins: the wrapper's own Poll.
	if got, ok := peonify.As[*passThrough](w); !ok || got != w {
		t.Errorf("As[*passThrough] = %p, want the outer wrapper %p", got, w)
	}
	if _, ok := peonify.As[peonify.Extender](&passThrough{Stream: bare{ms}}); ok {
		t.Error("As found an Extender behind a stream that hides it")
	}
	if _, ok := peonify.As[peonify.Waker](nil); ok {
		t.Error("As of a nil stream found a Waker")
	}
}

// AddStream finds the name, Wake and Extend of a wrapped stream, and Run
// uses them: a task enqueued on the idle stream is picked up on its
// wake-up, long before the poll interval.
func TestAddStreamSeesThroughWrappers(t *testing.T) {
	ms := memstream.New(memstream.Config{Name: "wrapped", Lease: time.Minute})
	w := &passThrough{Stream: ms}
	p, err := peonify.New(peonify.Config{Logger: quiet, PollInterval: time.Hour, MinPollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	done := streamtest.CloseOnRun(t, p, "t")
	if err := p.AddStream(w); err != nil {
		t.Fatal(err)
	}
	if got := p.Stats().Streams[0].Name; got != "wrapped" {
		t.Errorf("the wrapped stream is named %q, want the inner stream's name %q", got, "wrapped")
	}
	defer streamtest.Run(t, p)()
	for w.polls.Load() == 0 { // the first poll finds nothing; then the stream idles
		time.Sleep(time.Millisecond)
	}
	if err := ms.Enqueue(context.Background(), &peonify.Task{Type: "t"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the task was not picked up: the processor did not see the wrapped stream's Wake")
	}

	// An unnamed stream is named by the innermost stream's type.
	p2, _ := peonify.New(peonify.Config{Logger: quiet})
	_ = p2.AddStream(&passThrough{Stream: bare{ms}})
	if got := p2.Stats().Streams[0].Name; got != "peonify_test.bare" {
		t.Errorf("an unnamed wrapped stream is named %q, want its type peonify_test.bare", got)
	}
}

// starting is a memstream with a Start that fails a number of times and
// records its calls.
type starting struct {
	*memstream.Stream
	mu      sync.Mutex
	fails   int
	starts  int
	started bool
	early   atomic.Bool // Poll was called before Start succeeded
	polled  chan struct{}
	once    sync.Once
}

func (s *starting) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.starts++
	if s.fails > 0 {
		s.fails--
		return errors.New("broker unreachable")
	}
	s.started = true
	return nil
}

func (s *starting) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	s.mu.Lock()
	if !s.started {
		s.early.Store(true)
	}
	s.mu.Unlock()
	s.once.Do(func() { close(s.polled) })
	return s.Stream.Poll(ctx, limit)
}

// Registering a stream does not start it; Run does, through a wrapper,
// before its first Poll, and a failing Start is retried with backoff and
// shows in the stream's stats like a failing Poll.
func TestRunStartsStreams(t *testing.T) {
	s := &starting{Stream: memstream.New(memstream.Config{}), fails: 2, polled: make(chan struct{})}
	p, _ := peonify.New(peonify.Config{Logger: quiet})
	_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil })})
	if err := p.AddStream(&passThrough{Stream: s}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	starts := s.starts
	s.mu.Unlock()
	if starts != 0 {
		t.Fatalf("AddStream called Start %d times: registering a stream must not start it", starts)
	}
	streamtest.RunUntil(t, p, s.polled, "the stream was never polled")
	if s.early.Load() {
		t.Error("the stream was polled before Start succeeded")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.starts != 3 {
		t.Errorf("Start was called %d times, want 3 (two failures, then success)", s.starts)
	}
	ss := p.Stats().Streams[0]
	if ss.PollErrors != 2 || ss.LastError != "broker unreachable" {
		t.Errorf("stats after two failed starts: PollErrors %d, LastError %q; want 2 and the Start error", ss.PollErrors, ss.LastError)
	}
}

// A stream that never starts holds up neither Run's shutdown nor the
// other streams.
func TestStreamThatCannotStart(t *testing.T) {
	s := &starting{Stream: memstream.New(memstream.Config{}), fails: 1 << 30, polled: make(chan struct{})}
	good := memstream.New(memstream.Config{})
	fill(t, good, "t", 1)
	p, _ := peonify.New(peonify.Config{Logger: quiet})
	done := streamtest.CloseOnRun(t, p, "t")
	_ = p.AddStream(s)
	_ = p.AddStream(good)
	streamtest.RunUntil(t, p, done, "the other stream's task did not run")
	select {
	case <-s.polled:
		t.Error("a stream whose Start never succeeded was polled")
	default:
	}
	if ss := p.Stats().Streams[0]; ss.PollErrors == 0 {
		t.Error("the failing Start is not in the stream's stats")
	}
}
