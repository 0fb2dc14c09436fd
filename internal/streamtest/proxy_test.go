package streamtest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// echoServer starts a line echo server and returns its address.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line through conn and returns how long its echo took.
func roundTrip(t *testing.T, conn net.Conn, r *bufio.Reader) (time.Duration, error) {
	start := time.Now()
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		return 0, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := r.ReadString('\n')
	if err == nil && line != "hello\n" {
		t.Fatalf("echo = %q", line)
	}
	return time.Since(start), err
}

func TestProxyFaults(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	if _, err := roundTrip(t, conn, r); err != nil {
		t.Fatal(err)
	}

	p.SetFaults(Faults{Latency: 50 * time.Millisecond, Jitter: 10 * time.Millisecond})
	took, err := roundTrip(t, conn, r)
	if err != nil || took < 100*time.Millisecond || took > time.Second {
		t.Errorf("round trip at 50ms each way took %s (%v); want 100ms to 1s", took, err)
	}
	p.SetFaults(Faults{})

	// A partition holds the bytes without closing anything; the heal
	// delivers them.
	p.Partition()
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := r.ReadString('\n'); !errors.Is(err, syscall.ETIMEDOUT) && !isTimeout(err) {
		t.Fatalf("read during a partition: %v, want a timeout", err)
	}
	p.Heal()
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("after the heal, read %q, %v; want the held echo", line, err)
	}

	// A reset cuts the reply and resets the connection.
	p.ResetMidReply(1)
	if _, err := roundTrip(t, conn, r); err == nil {
		t.Fatal("a round trip through an armed reset succeeded")
	} else {
		t.Logf("reset mid-reply: %v", err)
	}
	if p.Resets() != 0 {
		t.Errorf("Resets = %d after the reset, want 0", p.Resets())
	}

	// Disarmed resets do not happen.
	conn3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn3.Close()
	p.ResetMidReply(2)
	if n := p.Disarm(); n != 2 || p.Resets() != 0 {
		t.Errorf("Disarm = %d, then Resets = %d; want 2, then 0", n, p.Resets())
	}
	if _, err := roundTrip(t, conn3, bufio.NewReader(conn3)); err != nil {
		t.Errorf("a round trip after Disarm: %v", err)
	}

	// Bandwidth: 64 KiB at 128 KiB/s takes about half a second.
	conn2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	p.SetFaults(Faults{Bandwidth: 128 << 10})
	start := time.Now()
	go func() { _, _ = conn2.Write(make([]byte, 64<<10)) }()
	_ = conn2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn2, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Errorf("64 KiB at 128 KiB/s each way took %s; want at least 400ms", took)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
