package natsstream

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
)

// TestDeadConnection runs streamtest.DeadConnection: a connection to
// NATS that dies without a reset shows as a poll error within the
// StoreTimeout, and the stream recovers once the network works.
func TestDeadConnection(t *testing.T) {
	u, err := url.Parse(testenv.URL(t, "nats"))
	if err != nil {
		t.Fatal(err)
	}
	proxy := streamtest.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	nc, err := nats.Connect(u.String(),
		nats.Name("natsstream-test "+t.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	proxied, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	producer, cfg := newTestStream(t, testJS(t), Config{})
	s, err := New(proxied, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	streamtest.DeadConnection{Proxy: proxy, Stream: s, Producer: producer}.Run(t)
}

// TestShutdownWithDeadConnection runs streamtest.DeadShutdown: a
// processor whose NATS server stopped answering shuts down within its
// ShutdownTimeout, and its tasks run again once their AckWait ends.
func TestShutdownWithDeadConnection(t *testing.T) {
	u, err := url.Parse(testenv.URL(t, "nats"))
	if err != nil {
		t.Fatal(err)
	}
	proxy := streamtest.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	nc, err := nats.Connect(u.String(), nats.Name("natsstream-test "+t.Name()), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	proxied, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	producer, cfg := newTestStream(t, testJS(t), Config{AckWait: 3 * time.Second})
	s, err := New(proxied, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	reader, err := New(testJS(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	streamtest.DeadShutdown{Proxy: proxy, Stream: s, Producer: producer, Reader: reader}.Run(t)
}
