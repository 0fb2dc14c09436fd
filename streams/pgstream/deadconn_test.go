package pgstream

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
)

// proxiedPool returns a pool of up to maxConns connections on the test
// database whose connections go through a streamtest.Proxy, closed when
// the test ends.
func proxiedPool(t *testing.T, maxConns int32) (*pgxpool.Pool, *streamtest.Proxy) {
	t.Helper()
	var proxy *streamtest.Proxy
	pool := openPool(t, testenv.URL(t, "postgres"), func(cfg *pgxpool.Config) {
		proxy = streamtest.NewProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
		host, port, _ := net.SplitHostPort(proxy.Addr())
		p, _ := strconv.Atoi(port)
		cfg.ConnConfig.Host, cfg.ConnConfig.Port = host, uint16(p)
		cfg.ConnConfig.Fallbacks = nil
		cfg.MaxConns = maxConns
		// Without a connect timeout, a connection attempt into the blackhole
		// would hang for good and hold a place in the pool (see New).
		cfg.ConnConfig.ConnectTimeout = time.Second
	})
	// The proxy closes first: pgx sends a cancel request for a query it
	// gave up on, and the pool waits for it, up to 15s, when the proxy
	// still blackholes it.
	t.Cleanup(proxy.Close)
	return pool, proxy
}

// listenedStream returns a Listener on pool made with lcfg, in testSchema
// and logging to the test, and a stream on pool for producer's queue that
// uses it. The caller closes the listener, with closeListener.
func listenedStream(t *testing.T, pool *pgxpool.Pool, producer *Stream, lcfg ListenerConfig) (*Listener, *Stream) {
	t.Helper()
	lcfg.Schema, lcfg.Logger = testSchema, streamtest.Logger(t)
	l, err := NewListener(pool, lcfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(pool, Config{Schema: testSchema, Queue: producer.Queue(), Listener: l, Logger: streamtest.Logger(t)})
	if err != nil {
		closeListener(t, l)
		t.Fatal(err)
	}
	return l, s
}

// closeListener closes l, and fails the test if that fails.
func closeListener(t *testing.T, l *Listener) {
	if err := l.Close(streamtest.Context(t)); err != nil {
		t.Error(err)
	}
}

// TestDeadConnectionIsAPollErrorAndRecovers runs
// streamtest.DeadConnection: a dead connection to Postgres (no reset, no
// bytes) shows within the StoreTimeout as a poll error that says the store
// timed out, and the tasks enqueued meanwhile run once the network works.
// By then the listener has replaced its own dead connection, and the pool
// has dropped every dead one.
func TestDeadConnectionIsAPollErrorAndRecovers(t *testing.T) {
	producer := newTestStream(t, testPool(t), Config{})
	pool, proxy := proxiedPool(t, 2)
	l, s := listenedStream(t, pool, producer, ListenerConfig{HealthCheck: 500 * time.Millisecond})
	defer closeListener(t, l)
	// The listener must be listening when the network dies, or it has no
	// dead connection to replace: it starts on the processor's first poll
	// and connects in the background, and on a loaded machine the
	// blackhole, right after the first task ran, can come first.
	waitListening(t, s, 1)
	// A poll in flight when the network dies may have reached Postgres:
	// the server still runs it, late when it is loaded, after the tasks
	// below were enqueued, and commits a claim whose reply never comes
	// back. That task runs again once its lease (30s) has ended and the
	// rescuer (every 5s) has found it, about 35s after the blackhole.
	streamtest.DeadConnection{Proxy: proxy, Stream: s, Producer: producer, RecoverWithin: 45 * time.Second}.Run(t)
	// The listener retries with a backoff that grows to 10s while the
	// network is down, so its next try may come that long after the heal,
	// and the pool may still hand it a dead connection first.
	streamtest.WaitFor(t, 25*time.Second, "the listener to replace its dead connection", func() bool { return l.connects.Load() >= 2 })
	// The pool dropped the connections that timed out, and the idle ones
	// as it tried them; the listener its own.
	streamtest.WaitFor(t, 20*time.Second, "the client to close its dead connections", func() bool { return proxy.Held() == 0 })
}

// TestShutdownWithDeadConnectionIsBounded runs streamtest.DeadShutdown:
// a processor whose Postgres stopped answering shuts down within its
// ShutdownTimeout, and its tasks run again once their leases end.
func TestShutdownWithDeadConnectionIsBounded(t *testing.T) {
	direct := testPool(t)
	producer := newTestStream(t, direct, Config{})
	pool, proxy := proxiedPool(t, 2)
	s, err := New(pool, Config{Schema: testSchema, Queue: producer.Queue(), Lease: 3 * time.Second, NoListen: true, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	reader := newTestStream(t, direct, Config{Queue: producer.Queue(), RescueInterval: 200 * time.Millisecond})
	streamtest.DeadShutdown{Proxy: proxy, Stream: s, Producer: producer, Reader: reader}.Run(t)
}

// TestDeadConnectionListenerRecoversFast checks that a processor whose
// link to Postgres went half-open recovers within seconds of the heal,
// its listener too, with the listener's default HealthCheck of 10s: the
// stream's first timeout makes the listener ping its own connection at
// once, instead of after the rest of a quiet period and a ping as long
// (up to 20s), so that it listens again, and wakes the processor out of
// its error backoff, soon after the network works again.
func TestDeadConnectionListenerRecoversFast(t *testing.T) {
	producer := newTestStream(t, testPool(t), Config{})
	// Room for new connections while those cut short by the blackhole are
	// closed, which takes pgx 15s (see TestEveryConnectionCutHoldsThePool):
	// with 2, polls of a run on a loaded machine still timed out waiting
	// for a connection 4s after the heal, and the test failed.
	pool, proxy := proxiedPool(t, 6)
	l, s := listenedStream(t, pool, producer, ListenerConfig{})
	defer closeListener(t, l)
	waitListening(t, s, 1) // see TestDeadConnectionIsAPollErrorAndRecovers
	streamtest.DeadConnection{Proxy: proxy, Stream: s, Producer: producer, Dead: time.Second, RecoverWithin: 6 * time.Second}.Run(t)
	streamtest.WaitFor(t, 6*time.Second, "the listener to replace its dead connection", func() bool { return l.connects.Load() >= 2 })
}

// TestEveryConnectionCutHoldsThePool measures what New's documentation
// says: a connection whose query was cut short on a link that died
// without a reset keeps its place in the pool while pgx closes it, up to
// 15s, so a pool whose every connection was cut short works again only
// then, however soon the link heals. The test fails only past 20s; it
// logs the time.
func TestEveryConnectionCutHoldsThePool(t *testing.T) {
	pool, proxy := proxiedPool(t, 1)
	ctx := streamtest.Context(t)
	if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	proxy.Blackhole()
	cut, cancel := context.WithTimeout(ctx, time.Second)
	_, err := pool.Exec(cut, "SELECT 1")
	cancel()
	if err == nil {
		t.Fatal("a query went through the blackhole")
	}
	proxy.Restore()
	healed := time.Now()
	for {
		try, cancel := context.WithTimeout(ctx, 20*time.Second-time.Since(healed))
		_, err := pool.Exec(try, "SELECT 1")
		cancel()
		if err == nil {
			break
		}
		if time.Since(healed) >= 20*time.Second {
			t.Fatalf("the pool did not work again within 20s of the heal: %v", err)
		}
	}
	t.Logf("the pool of one connection, cut short, worked again %s after the heal", time.Since(healed).Round(time.Millisecond))
}
