package redisstream

import (
	"fmt"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// TestDeadConnection runs streamtest.DeadConnection: a connection to
// Redis that dies without a reset shows as a poll error, and the stream
// recovers once the network works. go-redis bounds each command by its
// ReadTimeout (3s by default) and, with ContextTimeoutEnabled, by the
// processor's StoreTimeout as well.
func TestDeadConnection(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ctxTimeout  bool
		errorWithin time.Duration
	}{
		{"ReadTimeout", false, 10 * time.Second},
		{"ContextTimeoutEnabled", true, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			direct := testClient(t)
			proxied, proxy := proxiedClient(t, tc.ctxTimeout)
			prefix := uniquePrefix(t, direct)
			producer := newTestStream(t, direct, Config{Prefix: prefix})
			s := newTestStream(t, proxied, Config{Prefix: prefix})
			streamtest.DeadConnection{Proxy: proxy, Stream: s, Producer: producer, ErrorWithin: tc.errorWithin}.Run(t)
		})
	}
}

// TestShutdownWithDeadConnection runs streamtest.DeadShutdown: a
// processor whose Redis stopped answering shuts down within its
// ShutdownTimeout, and its tasks run again once their leases end. With
// go-redis's default timeouts a call outlives its context (until the
// ReadTimeout) and the processor leaves it behind at the deadline; with
// ContextTimeoutEnabled every call returns in time.
func TestShutdownWithDeadConnection(t *testing.T) {
	for _, ctxTimeout := range []bool{false, true} {
		t.Run(fmt.Sprintf("ContextTimeoutEnabled=%t", ctxTimeout), func(t *testing.T) {
			direct := testClient(t)
			proxied, proxy := proxiedClient(t, ctxTimeout)
			// The calls left behind end at the client's ReadTimeout: wait
			// for them before goleak looks.
			t.Cleanup(func() {
				streamtest.WaitFor(t, 10*time.Second, "the calls left behind to end", func() bool {
					st := proxied.PoolStats()
					return st.TotalConns == st.IdleConns
				})
			})
			prefix := uniquePrefix(t, direct)
			producer := newTestStream(t, direct, Config{Prefix: prefix})
			s := newTestStream(t, proxied, Config{Prefix: prefix, Consumer: "blackholed", Lease: 3 * time.Second})
			reader := newTestStream(t, direct, Config{Prefix: prefix, Consumer: "reader", Lease: 3 * time.Second})
			streamtest.DeadShutdown{Proxy: proxy, Stream: s, Producer: producer, Reader: reader, LeavesCallsBehind: !ctxTimeout}.Run(t)
		})
	}
}

// proxiedClient returns a client of the test server, closed when the test
// ends, that connects through the returned proxy, with
// ContextTimeoutEnabled set to ctxTimeout.
func proxiedClient(t *testing.T, ctxTimeout bool) (*redis.Client, *streamtest.Proxy) {
	t.Helper()
	opts, err := redis.ParseURL(testenv.URL(t, "redis"))
	if err != nil {
		t.Fatal(err)
	}
	proxy := streamtest.NewProxy(t, opts.Addr)
	opts.Addr = proxy.Addr()
	opts.ContextTimeoutEnabled = ctxTimeout
	proxied := redis.NewClient(opts)
	t.Cleanup(func() { _ = proxied.Close() })
	return proxied, proxy
}
