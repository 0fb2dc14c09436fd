package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream connects to the NATS server at url within a second, with opts
// besides, and returns the connection, which the caller closes, and its
// JetStream.
func JetStream(url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.Timeout(time.Second)}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// ConnectJetStream is JetStream for a test: it fails t if the server
// cannot be reached, and closes the connection when the test ends.
func ConnectJetStream(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js, err := JetStream(url, opts...)
	if err != nil {
		t.Fatalf("connecting to JetStream at %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

// JetStreamReady returns nil once the NATS server at url answers
// JetStream requests, as a server just started may not yet.
func JetStreamReady(url string) error {
	nc, js, err := JetStream(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}
