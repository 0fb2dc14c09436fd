package natsstream

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestDeadConnection runs streamtest.DeadConnection: a connection to
// NATS that dies without a reset shows as a poll error within the
// StoreTimeout, and the stream recovers once the network works.
func TestDeadConnection(t *testing.T) {
	s, _, proxy, producer, _ := proxiedStream(t, Config{}, nats.ReconnectWait(50*time.Millisecond))
	streamtest.DeadConnection{Proxy: proxy, Stream: s, Producer: producer}.Run(t)
}

// TestShutdownWithDeadConnection runs streamtest.DeadShutdown: a
// processor whose NATS server stopped answering shuts down within its
// ShutdownTimeout, and its tasks run again once their AckWait ends.
func TestShutdownWithDeadConnection(t *testing.T) {
	s, _, proxy, producer, cfg := proxiedStream(t, Config{AckWait: 3 * time.Second})
	reader, err := New(testJS(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	streamtest.DeadShutdown{Proxy: proxy, Stream: s, Producer: producer, Reader: reader}.Run(t)
}

// TestSilenceWithoutDeadline checks the ping of a fetch the server did not
// end (a new consumer of a cluster whose leader is being elected, a slow
// server) when Poll's context has no deadline: the live connection must
// pass the check, not be dropped. FlushWithContext refuses such a context,
// and that refusal once made every such Poll force a reconnect.
func TestSilenceWithoutDeadline(t *testing.T) {
	js := testJS(t)
	s, _ := newTestStream(t, js, Config{})
	if err := s.checkSilence(t.Context()); err != nil {
		t.Fatalf("checkSilence on a live connection, with a context without a deadline: %v", err)
	}
	if n := s.nc.Stats().Reconnects; n != 0 || !s.nc.IsConnected() {
		t.Errorf("after checkSilence on a live connection: %d reconnects, connection %s; want none, connected", n, s.nc.Status())
	}
}

// TestEnqueueUnanswered checks that an Enqueue of several tasks whose
// acknowledgements never come (the stream leader's node died after
// receiving them; here the network drops everything) returns within
// enqueueAckWait, saying the tasks may be stored, even with a context
// without a deadline: asynchronous publishes have no timeout of their own.
func TestEnqueueUnanswered(t *testing.T) {
	s, _, proxy, _, _ := proxiedStream(t, Config{})
	if err := s.Enqueue(streamtest.Context(t), &peonify.Task{Type: "x"}); err != nil {
		t.Fatal(err)
	}
	proxy.Blackhole()
	t.Cleanup(proxy.Restore)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- s.Enqueue(context.Background(), &peonify.Task{Type: "x"}, &peonify.Task{Type: "x"}) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Enqueue returned nil with the network dropping everything")
		}
		if !errors.Is(err, nats.ErrTimeout) || !strings.Contains(err.Error(), "enqueue them again") {
			t.Errorf("Enqueue: %v; want a timeout that says to enqueue again", err)
		}
		t.Logf("Enqueue returned after %s: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(enqueueAckWait + 10*time.Second):
		proxy.Restore()
		t.Fatalf("Enqueue of two tasks, with a context without a deadline, had not returned %s after the network went silent", time.Since(start).Round(time.Second))
	}
}
