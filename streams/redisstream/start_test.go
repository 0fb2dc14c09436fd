package redisstream

import (
	"context"
	"errors"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestWakeStartsNothing checks that AddStream and Wake start no watcher
// (registering a stream does no I/O) and that Start does.
func TestWakeStartsNothing(t *testing.T) {
	s := newTestStream(t, testClient(t), Config{})
	streamtest.Register(t, s)
	_ = s.Wake()
	s.mu.Lock()
	started := s.stop != nil
	s.mu.Unlock()
	if started {
		t.Fatal("AddStream and Wake started the watcher; only Start may")
	}
	for range 2 {
		if err := s.Start(streamtest.Context(t)); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	started = s.stop != nil
	s.mu.Unlock()
	if !started {
		t.Fatal("Start did not start the watcher")
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, peonify.ErrClosed) {
		t.Errorf("Start after Close = %v, want peonify.ErrClosed", err)
	}
}
