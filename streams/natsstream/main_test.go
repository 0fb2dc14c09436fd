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
	"github.com/peonify/peonify/peonifytest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testConn connects to the test server, reconnecting for ever, and closes
// the connection when the test ends.
func testConn(t testing.TB) *nats.Conn {
	t.Helper()
	return connectTest(t, testenv.URL(t, "nats"))
}

// connectTest connects to the servers, reconnecting for ever, with the
// options extra too, and closes the connection when the test ends.
func connectTest(t testing.TB, servers string, extra ...nats.Option) *nats.Conn {
	t.Helper()
	opts := append([]nats.Option{
		nats.Name("natsstream-test " + t.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.ReconnectJitter(20*time.Millisecond, 20*time.Millisecond),
	}, extra...)
	nc, err := nats.Connect(servers, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// testJS returns a JetStream context on a new test connection.
func testJS(t testing.TB) jetstream.JetStream {
	t.Helper()
	return jetStreamOn(t, testConn(t))
}

// jetStreamOn returns a JetStream context on nc.
func jetStreamOn(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// features are what the stream does not do, for the conformance suite,
// with lease as its AckWait.
func features(lease time.Duration) peonifytest.Features {
	return peonifytest.Features{
		Lease:       lease,
		NoPriority:  true,
		NoUniqueKey: true,
		// The broker decides delivery, so the stream cannot enforce limits
		// in its claim (see the package's Flow control section).
		NoLimiter: true,
		NoTracker: true, NoWorkflows: true, // JetStream forgets an acked message: no results, cancellation or workflows
	}
}

// uniqueConfig fills cfg with a stream and subject no other test uses.
func uniqueConfig(t testing.TB, cfg Config) Config {
	t.Helper()
	if cfg.Stream == "" {
		cfg.Stream = "T_" + streamtest.Name(t, 40)
	}
	if cfg.Subject == "" {
		cfg.Subject = "natsstream.test." + streamtest.RandHex(6)
	}
	if cfg.Logger == nil {
		cfg.Logger = streamtest.Logger(t)
	}
	return cfg
}

// setupTest runs Setup for cfg and deletes its streams when the test ends.
func setupTest(t testing.TB, js jetstream.JetStream, cfg Config) {
	t.Helper()
	if err := Setup(streamtest.Context(t), js, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := Teardown(ctx, js, cfg); err != nil {
			t.Error(err)
		}
	})
}

// newTestStream sets up a fresh stream, closed and deleted when the test
// ends, and returns it with its Config, defaults filled in.
func newTestStream(t testing.TB, js jetstream.JetStream, cfg Config) (*Stream, Config) {
	t.Helper()
	cfg = uniqueConfig(t, cfg)
	setupTest(t, js, cfg)
	s, err := New(js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	streamtest.CloseAtEnd(t, s)
	return s, s.cfg
}

// proxiedStream sets up a fresh stream and returns it twice: through a
// connection, made with opts besides its name and endless reconnects, that
// runs through the returned proxy, and as producer, on a direct connection.
func proxiedStream(t *testing.T, cfg Config, opts ...nats.Option) (s *Stream, nc *nats.Conn, proxy *streamtest.Proxy, producer *Stream, _ Config) {
	t.Helper()
	u, err := url.Parse(testenv.URL(t, "nats"))
	if err != nil {
		t.Fatal(err)
	}
	proxy = streamtest.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	nc, err = nats.Connect(u.String(), append([]nats.Option{nats.Name("natsstream-test " + t.Name()), nats.MaxReconnects(-1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	proxied, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	producer, cfg = newTestStream(t, testJS(t), cfg)
	s, err = New(proxied, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, nc, proxy, producer, cfg
}
