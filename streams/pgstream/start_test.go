package pgstream

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestWakeStartsNothing checks that Wake and AddStream start nothing (no
// listener, no goroutine) and that Start does: registering a stream does
// no I/O.
func TestWakeStartsNothing(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	streamtest.Register(t, s)
	_ = s.Wake()
	s.mu.Lock()
	started, l := s.start, s.listener
	s.mu.Unlock()
	if started || l != nil {
		t.Fatal("AddStream and Wake started the stream's background work; only Start or Poll may")
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitListening(t, s, 1)
	producer := newTestStream(t, testPool(t), Config{Queue: s.Queue()})
	streamtest.Enqueue(t, producer, task("after-start"))
	waitWake(t, s, 10*time.Second)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, peonify.ErrClosed) {
		t.Errorf("Start after Close = %v, want peonify.ErrClosed", err)
	}
}
