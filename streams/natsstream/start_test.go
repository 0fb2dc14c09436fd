package natsstream

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestRegisterDoesNoIO registers a stream whose server has stopped
// answering: AddStream and Wake return at once and subscribe to nothing,
// Start fails when its context ends, and once the network works again
// Start succeeds and Wake receives for a task stored after it.
func TestRegisterDoesNoIO(t *testing.T) {
	s, nc, proxy, producer, _ := proxiedStream(t, Config{},
		nats.ReconnectWait(50*time.Millisecond),
		nats.PingInterval(100*time.Millisecond),
		nats.MaxPingsOutstanding(2),
	)
	proxy.Blackhole()

	p, err := peonify.New(peonify.Config{Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := p.AddStream(s); err != nil {
		t.Fatal(err)
	}
	wake := s.Wake()
	if took := time.Since(begin); took > 100*time.Millisecond {
		t.Errorf("AddStream and Wake of a stream whose server does not answer took %s: registering must do no I/O", took)
	}
	if n := nc.NumSubscriptions(); n != 0 {
		t.Errorf("after AddStream and Wake the connection has %d subscriptions, want 0: the stream starts nothing before Start", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err = s.Start(ctx)
	cancel()
	if err == nil {
		t.Fatal("Start returned nil while the server did not answer")
	}

	// The client notices the dead connection by its pings and reconnects
	// through the restored proxy; Start then succeeds.
	proxy.Restore()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := s.Start(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Start did not succeed within 10s of the network coming back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := nc.NumSubscriptions(); n == 0 {
		t.Error("after Start the connection has no subscriptions, want the wake-up subscription")
	}
	streamtest.Enqueue(t, producer, &peonify.Task{Type: "t"})
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("Wake did not receive for a task stored after Start")
	}

	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, peonify.ErrClosed) {
		t.Errorf("Start after Close = %v, want peonify.ErrClosed", err)
	}
}
