package amqpstream

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestWakeStartsNothing checks that AddStream and Wake do not connect
// (registering a stream does no I/O), and that Start does, after which
// Wake receives once connected and the queued message is polled.
func TestWakeStartsNothing(t *testing.T) {
	s := newTestStream(t, Config{})
	streamtest.Register(t, s)
	wake := s.Wake()
	s.mu.Lock()
	started := s.start
	s.mu.Unlock()
	if started {
		t.Fatal("AddStream and Wake started the connection; only Start or a first use may")
	}
	producer := newTestStream(t, Config{Queue: s.cfg.Queue})
	streamtest.Enqueue(t, producer, task("before-start"))
	if err := s.Start(streamtest.Context(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("Wake did not receive after Start")
	}
	ds := pollN(t, s, 1, 10*time.Second)
	if err := s.Ack(streamtest.Context(t), ds...); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, peonify.ErrClosed) {
		t.Errorf("Start after Close = %v, want peonify.ErrClosed", err)
	}
}
