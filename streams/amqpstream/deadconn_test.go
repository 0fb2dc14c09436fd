package amqpstream

import (
	"net/url"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/streamtest"
)

// TestDeadConnection runs streamtest.DeadConnection: a connection to
// RabbitMQ that dies without a reset is noticed by its heartbeats (the
// broker's frames stop), shows as a poll error, and the stream reconnects
// once the network works.
func TestDeadConnection(t *testing.T) {
	proxied, proxy := proxiedURL(t)
	producer := newTestStream(t, Config{})
	cfg := Config{Queue: producer.cfg.Queue, DialTimeout: time.Second, ReconnectMax: time.Second, Logger: streamtest.Logger(t)}
	cfg.AMQP.Heartbeat = time.Second
	s, err := New(proxied, cfg)
	if err != nil {
		t.Fatal(err)
	}
	streamtest.DeadConnection{Proxy: proxy, Stream: s, Producer: producer, ErrorWithin: 10 * time.Second}.Run(t)
}

// TestShutdownWithDeadConnection runs streamtest.DeadShutdown: a
// processor whose connection to RabbitMQ went silent shuts down within
// its ShutdownTimeout, and its tasks run again (the broker requeues the
// messages of a connection once it is closed).
func TestShutdownWithDeadConnection(t *testing.T) {
	proxied, proxy := proxiedURL(t)
	producer := newTestStream(t, Config{})
	s, err := New(proxied, Config{Queue: producer.cfg.Queue, DialTimeout: time.Second, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	reader := newTestStream(t, Config{Queue: producer.cfg.Queue})
	streamtest.DeadShutdown{Proxy: proxy, Stream: s, Producer: producer, Reader: reader}.Run(t)
}

// proxiedURL returns the address of the test broker through the returned
// proxy.
func proxiedURL(t *testing.T) (string, *streamtest.Proxy) {
	t.Helper()
	u, err := url.Parse(testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := streamtest.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	return u.String(), proxy
}
