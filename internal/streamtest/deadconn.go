package streamtest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// DeadConnection is the dead-connection check that every stream of a
// network store runs: a processor polls Stream, whose connections go
// through Proxy; the proxy blackholes them (open, forwarding nothing, no
// reset), as a middlebox that dropped their state does, and tasks are
// enqueued meanwhile with Producer, straight to the server. They must not
// pile up silently: a poll error that names a timeout shows in the
// stream's stats while the stream backs off; and once the network works
// again (new connections through the proxy forward), every task runs.
type DeadConnection struct {
	Proxy    *Proxy
	Stream   peonify.Stream   // its connections go through Proxy
	Producer peonify.Enqueuer // its connections go straight to the server

	// StoreTimeout is the processor's Config.StoreTimeout. Defaults to 1s.
	StoreTimeout time.Duration

	// ErrorWithin is how long after the blackhole the poll error must
	// show: the rest of an idle wait (at most the processor's
	// PollInterval, 1s, plus jitter), then a timeout. Defaults to 3
	// StoreTimeouts.
	ErrorWithin time.Duration

	// Dead is how long the network stays dead after the first poll
	// error, so that the client tries new connections into the hole.
	// Defaults to 3s.
	Dead time.Duration

	// RecoverWithin is how long the tasks may take to run once the
	// network works again. Defaults to 30s.
	RecoverWithin time.Duration
}

// Run runs the check, failing t if the stream does not hold up.
func (c DeadConnection) Run(t *testing.T) {
	t.Helper()
	if c.StoreTimeout == 0 {
		c.StoreTimeout = time.Second
	}
	if c.ErrorWithin == 0 {
		c.ErrorWithin = 3 * c.StoreTimeout
	}
	if c.Dead == 0 {
		c.Dead = 3 * time.Second
	}
	if c.RecoverWithin == 0 {
		c.RecoverWithin = 30 * time.Second
	}
	var ran ranSet
	p := Processor(t, peonify.Config{Workers: 2, StoreTimeout: c.StoreTimeout, Logger: Logger(t)}, c.Stream,
		peonify.TaskList{"t": ran.handler()})
	defer Run(t, p)()

	first := &peonify.Task{Type: "t"}
	Enqueue(t, c.Producer, first)
	WaitFor(t, 30*time.Second, "the first task to run through the proxy", func() bool { return ran.has(first.ID) })

	c.Proxy.Blackhole()
	blackholed := time.Now()
	var ids []string
	for range 5 {
		task := &peonify.Task{Type: "t"}
		Enqueue(t, c.Producer, task)
		ids = append(ids, task.ID)
	}
	var ss peonify.StreamStats
	WaitFor(t, c.ErrorWithin, "a poll error after the connection died", func() bool {
		ss = p.Stats().Streams[0]
		return ss.PollErrors > 0
	})
	t.Logf("poll error %s after the blackhole: %s", time.Since(blackholed).Round(time.Millisecond), ss.LastError)
	if msg := strings.ToLower(ss.LastError); !ss.BackingOff || !strings.Contains(msg, "timeout") && !strings.Contains(msg, "deadline") {
		t.Errorf("stream stats = %+v; want it backing off after a timeout", ss)
	}
	if ran.has(ids...) {
		t.Fatal("the tasks ran through a blackholed proxy")
	}

	time.Sleep(c.Dead)
	c.Proxy.Restore()
	restored := time.Now()
	WaitFor(t, c.RecoverWithin, "the tasks to run once the network works again", func() bool { return ran.has(ids...) })
	t.Logf("the tasks ran %s after the network came back", time.Since(restored).Round(time.Millisecond))
}

// WaitFor checks cond every 10ms until it holds, failing the test after
// within. It is for state that changes on its own, with no signal to wait
// on.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// DeadShutdown is the shutdown check of every network stream: a
// processor on Stream, whose connections go through Proxy, has every
// worker busy and its local queue full when the proxy blackholes its
// connections and its context ends. Run must return within
// ShutdownTimeout (plus a second), although no release, ack or close
// reaches the store; and no task is lost: a processor on Reader, a stream
// of the same queue straight to the server, then runs every task, those
// that could not be handed back once their leases end.
type DeadShutdown struct {
	Proxy    *Proxy
	Stream   peonify.Stream   // its connections go through Proxy; its lease should be short
	Producer peonify.Enqueuer // straight to the server
	Reader   peonify.Stream   // the same queue, straight to the server

	// ShutdownTimeout is the processor's Config.ShutdownTimeout. Defaults
	// to 4s; StoreTimeout and ShutdownGrace are a second.
	ShutdownTimeout time.Duration

	// Within is how long the tasks may take to run again after the
	// shutdown: their lease, and the time the store takes to notice that
	// it ended. Defaults to 30s.
	Within time.Duration

	// LeavesCallsBehind says that the stream's calls may outlive their
	// context (a client that bounds them by its own timeouts), so that
	// the processor leaves them behind at its deadline. Otherwise every
	// call must return when its context ends.
	LeavesCallsBehind bool
}

// leftBehind is what the processor logs when a stream's call outlived its
// context.
const leftBehind = "did not return when its context ended"

// countingHandler passes records on and counts those whose message
// contains substr.
type countingHandler struct {
	slog.Handler
	substr string
	n      *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.substr) {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(as), h.substr, h.n}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(name), h.substr, h.n}
}

// Run runs the check, failing t if the stream does not hold up.
func (c DeadShutdown) Run(t *testing.T) {
	t.Helper()
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 4 * time.Second
	}
	if c.Within == 0 {
		c.Within = 30 * time.Second
	}
	const workers, total = 2, 6
	var ids []string
	for range total {
		task := &peonify.Task{Type: "t"}
		Enqueue(t, c.Producer, task)
		ids = append(ids, task.ID)
	}
	var left atomic.Int64
	logger := slog.New(countingHandler{Logger(t).Handler(), leftBehind, &left})
	p := Processor(t, peonify.Config{Workers: workers, QueueSize: workers, StoreTimeout: time.Second,
		ShutdownGrace: time.Second, ShutdownTimeout: c.ShutdownTimeout, Logger: logger},
		c.Stream, peonify.TaskList{"t": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			<-ctx.Done() // runs until shutdown cancels it
			return context.Cause(ctx)
		})})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	WaitFor(t, 30*time.Second, "every worker busy and the queue full", func() bool {
		st := p.Stats()
		return len(st.InFlight) == workers && st.QueueDepth == workers
	})

	c.Proxy.Blackhole()
	start := time.Now()
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Run = %v", err)
	}
	took := time.Since(start)
	t.Logf("Run returned %s after its context ended", took.Round(time.Millisecond))
	if took > c.ShutdownTimeout+time.Second {
		t.Errorf("Run took %s after its context ended; want at most the ShutdownTimeout, %s", took, c.ShutdownTimeout)
	}
	if n := left.Load(); n > 0 && !c.LeavesCallsBehind {
		t.Errorf("the processor left %d calls of the stream behind: they %s", n, leftBehind)
	}

	var ran ranSet
	check := Processor(t, peonify.Config{Workers: workers, Logger: Logger(t)}, c.Reader,
		peonify.TaskList{"t": ran.handler()})
	defer Run(t, check)()
	WaitFor(t, c.Within, "every task to run again after the shutdown", func() bool { return ran.has(ids...) })
	t.Logf("every task ran again %s after the shutdown began", time.Since(start).Round(time.Millisecond))
}

// ranSet records the IDs of the tasks its handler ran.
type ranSet struct {
	mu  sync.Mutex
	ran map[string]bool
}

func (r *ranSet) handler() peonify.Handler {
	return peonify.HandlerFunc(func(_ context.Context, task *peonify.Task) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.ran == nil {
			r.ran = make(map[string]bool)
		}
		r.ran[task.ID] = true
		return nil
	})
}

// has reports whether every task of ids ran.
func (r *ranSet) has(ids ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if !r.ran[id] {
			return false
		}
	}
	return true
}
