package mqttstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/intaketest"
)

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// An unreachable broker at start-up ends Run at once with a ConnectError,
// which Stats shows too.
func TestUnreachableBrokerAtStartUp(t *testing.T) {
	cfg := testConfig(t, "mqtt://"+closedAddr(t), map[string]string{"a/#": "t"})
	cfg.Servers = append(cfg.Servers, "mqtt://"+closedAddr(t))
	in, err := New(intaketest.NewMem(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = in.Run(ctx)
	var ce *ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("Run = %v, want a *ConnectError", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Run took %s to give up on a closed port", took)
	}
	t.Log(err)
	for _, s := range cfg.Servers {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("the error does not name the server %s", s)
		}
	}
	if st := in.Stats(); st.ConnectError == nil || st.Connected {
		t.Fatalf("stats = %+v, want the connect error", st)
	}
}

// hostPort returns the host:port of a broker URL.
func hostPort(t *testing.T, brokerURL string) string {
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "1883")
	}
	return u.Host
}

// With WaitForBroker, Run waits for a broker that is down at start-up,
// showing why in Stats, and connects once it is up.
func TestWaitForBroker(t *testing.T) {
	brokerURL := broker(t)
	topic := testTopic(t)
	addr := closedAddr(t)
	cfg := testConfig(t, "mqtt://"+addr, map[string]string{topic + "/#": "t"})
	cfg.WaitForBroker = true
	in, err := New(intaketest.NewMem(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- in.Run(ctx) }()
	intaketest.Eventually(t, "Stats shows the connect error", func() bool { return in.Stats().ConnectError != nil })

	// The broker comes up at addr: a proxy to the test broker.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the address was taken meanwhile: %v", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	target := hostPort(t, brokerURL)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			wg.Go(func() { _, _ = io.Copy(b, c); _ = b.Close() })
			wg.Go(func() { _, _ = io.Copy(c, b); _ = c.Close() })
		}
	})
	select {
	case <-in.Ready():
	case err := <-ran:
		t.Fatalf("Run returned %v while waiting for the broker", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the intake did not subscribe within 15s of the broker coming up")
	}
	if st := in.Stats(); st.ConnectError != nil || !st.Connected {
		t.Fatalf("stats = %+v once connected", st)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
}
