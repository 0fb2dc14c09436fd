package pgstream

import (
	"context"
	"net"
	"strconv"
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
	cfg.MaxConns = 2
	// Without a connect timeout, a connection attempt into the blackhole
	// would hang for good and hold a place in the pool (see New).
	cfg.ConnConfig.ConnectTimeout = time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	// The proxy closes first: pgx sends a cancel request for a query it
	// gave up on, and the pool waits for it, up to 15s, when the proxy
	// still blackholes it.
	t.Cleanup(proxy.Close)
	return pool, proxy
}

// TestDeadConnectionIsAPollErrorAndRecovers runs
// streamtest.DeadConnection: a dead connection to Postgres (no reset, no
// bytes) shows within the StoreTimeout as a poll error that says the store
// timed out, and the tasks enqueued meanwhile run once the network works.
// By then the listener has replaced its own dead connection, and the pool
// has dropped every dead one.
func TestDeadConnectionIsAPollErrorAndRecovers(t *testing.T) {
	producer := newTestStream(t, testPool(t), Config{})
	pool, proxy := proxiedPool(t)
	l, err := NewListener(pool, ListenerConfig{HealthCheck: 500 * time.Millisecond, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Close(streamtest.Context(t)); err != nil {
			t.Error(err)
		}
	}()
	s, err := New(pool, Config{Queue: producer.Queue(), Listener: l, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	streamtest.DeadConnection{Proxy: proxy, Stream: s, Producer: producer, ErrorWithin: 2 * time.Second}.Run(t)
	streamtest.WaitFor(t, 10*time.Second, "the listener to replace its dead connection", func() bool { return l.connects.Load() >= 2 })
	// The pool dropped the connections that timed out, and the idle ones
	// as it tried them; the listener its own.
	streamtest.WaitFor(t, 20*time.Second, "the client to close its dead connections", func() bool { return proxy.Held() == 0 })
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
	streamtest.WaitFor(t, 10*time.Second, "every worker busy and the queue full", func() bool {
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
	streamtest.WaitFor(t, 15*time.Second, "every task to be pending again once the leases ended", func() bool {
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
