package pgstream

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
)

// proxiedPool returns a pool on the test database whose connections go
// through a streamtest.Proxy, closed when the test ends.
func proxiedPool(t *testing.T) (*pgxpool.Pool, *streamtest.Proxy) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testenv.URL(t, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	proxy := streamtest.NewProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	host, port, _ := net.SplitHostPort(proxy.Addr())
	p, _ := strconv.Atoi(port)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = host, uint16(p)
	cfg.ConnConfig.Fallbacks = nil
	cfg.ConnConfig.RuntimeParams["application_name"] = appName(t)
	cfg.MaxConns = 4
	// Without a connect timeout, a connection attempt into the blackhole
	// would hang for good and hold a place in the pool (see New).
	cfg.ConnConfig.ConnectTimeout = time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, proxy
}

// doneSet records the IDs of the tasks that ran.
type doneSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (d *doneSet) handler() peonify.Handler {
	return peonify.HandlerFunc(func(_ context.Context, t *peonify.Task) error {
		d.mu.Lock()
		d.ids[t.ID] = true
		d.mu.Unlock()
		return nil
	})
}

func (d *doneSet) has(ids ...string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range ids {
		if !d.ids[id] {
			return false
		}
	}
	return true
}

// waitFor polls cond every 10ms until it holds, failing the test after
// within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDeadConnectionIsAPollErrorAndRecovers puts a proxy between a
// processor and Postgres and makes it blackhole every connection (open,
// forwarding nothing, no reset), as a middlebox that dropped their state
// does. Tasks enqueued meanwhile (straight to the server) must not pile up
// silently: within the StoreTimeout the stream's stats show a poll error
// that says the store timed out; once the network works again, the pool
// has dropped its dead connections, the listener has replaced its own,
// and every task runs.
func TestDeadConnectionIsAPollErrorAndRecovers(t *testing.T) {
	direct := testPool(t)
	producer := newTestStream(t, direct, Config{})
	pool, proxy := proxiedPool(t)
	l, err := NewListener(pool, ListenerConfig{HealthCheck: 500 * time.Millisecond, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(pool, Config{Queue: producer.Queue(), Listener: l, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := &doneSet{ids: map[string]bool{}}
	p := streamtest.Processor(t, peonify.Config{Workers: 2, StoreTimeout: time.Second, Logger: streamtest.Logger(t)},
		s, peonify.TaskList{"t": done.handler()})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
		if err := l.Close(streamtest.Context(t)); err != nil {
			t.Error(err)
		}
	}()

	first := &peonify.Task{Type: "t"}
	streamtest.Enqueue(t, producer, first)
	waitFor(t, 10*time.Second, "the first task to run through the proxy", func() bool { return done.has(first.ID) })
	connects := l.connects.Load()

	proxy.Blackhole()
	blackholed := time.Now()
	var ids []string
	for range 5 {
		task := &peonify.Task{Type: "t"}
		streamtest.Enqueue(t, producer, task)
		ids = append(ids, task.ID)
	}
	var ss peonify.StreamStats
	waitFor(t, 5*time.Second, "a poll error after the connection died", func() bool {
		ss = p.Stats().Streams[0]
		return ss.PollErrors > 0
	})
	t.Logf("poll error %s after the blackhole: %s", time.Since(blackholed).Round(time.Millisecond), ss.LastError)
	if !ss.BackingOff || !strings.Contains(ss.LastError, peonify.ErrStoreTimeout.Error()) {
		t.Errorf("stream stats = %+v; want it backing off with a store timeout", ss)
	}
	if done.has(ids...) {
		t.Fatal("the tasks ran through a blackholed proxy")
	}

	// Stay dead for a few timeouts, so that the pool and the listener try
	// new connections into the hole.
	time.Sleep(3 * time.Second)
	proxy.Restore()
	waitFor(t, 30*time.Second, "the tasks to run once the network works again", func() bool { return done.has(ids...) })
	waitFor(t, 10*time.Second, "the listener to replace its dead connection", func() bool { return l.connects.Load() > connects })
	// The pool dropped the connections that timed out, and the idle ones
	// as it tried them; the listener its own.
	waitFor(t, 20*time.Second, "the client to close its dead connections", func() bool { return proxy.Held() == 0 })
}

// TestShutdownWithDeadConnectionIsBounded stops a processor whose
// Postgres stopped answering (every connection blackholed) with every
// worker busy and the local queue full: Run returns within
// Config.ShutdownTimeout, and no task is lost: once their leases end, all
// are pending again.
func TestShutdownWithDeadConnectionIsBounded(t *testing.T) {
	const workers, total = 2, 6
	direct := testPool(t)
	producer := newTestStream(t, direct, Config{})
	pool, proxy := proxiedPool(t)
	s, err := New(pool, Config{Queue: producer.Queue(), Lease: 3 * time.Second, NoListen: true, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 4 * time.Second
	p := streamtest.Processor(t, peonify.Config{Workers: workers, QueueSize: workers, StoreTimeout: time.Second,
		ShutdownGrace: time.Second, ShutdownTimeout: timeout, Logger: streamtest.Logger(t)},
		s, peonify.TaskList{"t": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
			<-ctx.Done() // runs until shutdown cancels it
			return context.Cause(ctx)
		})})
	for range total {
		streamtest.Enqueue(t, producer, &peonify.Task{Type: "t"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	waitFor(t, 10*time.Second, "every worker busy and the queue full", func() bool {
		st := p.Stats()
		return len(st.InFlight) == workers && st.QueueDepth == workers
	})

	proxy.Blackhole()
	start := time.Now()
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Run = %v", err)
	}
	took := time.Since(start)
	t.Logf("Run returned %s after its context ended", took.Round(time.Millisecond))
	if took > timeout+time.Second {
		t.Errorf("Run took %s after its context ended; want at most the ShutdownTimeout, %s", took, timeout)
	}
	waitFor(t, 15*time.Second, "every task to be pending again once the leases ended", func() bool {
		if _, _, err := producer.rescue(streamtest.Context(t)); err != nil {
			t.Fatal(err)
		}
		counts, err := producer.Counts(streamtest.Context(t))
		if err != nil {
			t.Fatal(err)
		}
		return counts[peonify.StatePending] == total
	})
	t.Logf("all pending again %s after the shutdown began", time.Since(start).Round(time.Millisecond))
}
