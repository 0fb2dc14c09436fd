package redisstream

import (
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
			opts, err := redis.ParseURL(testenv.URL(t, "redis"))
			if err != nil {
				t.Fatal(err)
			}
			proxy := streamtest.NewProxy(t, opts.Addr)
			opts.Addr = proxy.Addr()
			opts.ContextTimeoutEnabled = tc.ctxTimeout
			proxied := redis.NewClient(opts)
			t.Cleanup(func() { _ = proxied.Close() })
			prefix := uniquePrefix(t, direct)
			producer := newTestStream(t, direct, Config{Prefix: prefix})
			s := newTestStream(t, proxied, Config{Prefix: prefix})
			streamtest.DeadConnection{Proxy: proxy, Stream: s, Producer: producer, ErrorWithin: tc.errorWithin}.Run(t)
		})
	}
}
