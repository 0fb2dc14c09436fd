package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/testenv"
)

// fakeSystemd is the service manager's end of $NOTIFY_SOCKET: a unixgram
// socket that keeps the messages it receives.
type fakeSystemd struct {
	t    *testing.T
	path string
	msgs chan string
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	// A unix socket's path must be short (108 bytes): not t.TempDir.
	dir, err := os.MkdirTemp("", "sd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSystemd{t: t, path: path, msgs: make(chan string, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			f.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return f
}

// next returns the next message that has line, skipping watchdog pings,
// or fails the test after wait.
func (f *fakeSystemd) next(line string, wait time.Duration, log fmt.Stringer) string {
	f.t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-f.msgs:
			if hasLine(m, line) {
				return m
			}
			if m != "WATCHDOG=1\n" {
				f.t.Errorf("unexpected sd_notify message %q while waiting for %s", m, line)
			}
		case <-deadline:
			f.t.Fatalf("no sd_notify %s within %s; log:\n%s", line, wait, log)
			return ""
		}
	}
}

func hasLine(msg, line string) bool {
	for _, l := range strings.Split(msg, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// toggleProxy forwards TCP connections to target once up is set, and
// closes them at once before: a broker that is down, then comes up.
type toggleProxy struct {
	ln net.Listener
	up atomic.Bool
	wg sync.WaitGroup
}

func newToggleProxy(t *testing.T, target string) *toggleProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &toggleProxy{ln: ln}
	var conns sync.Map
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !p.up.Load() {
				c.Close()
				continue
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns.Store(c, b)
			p.wg.Go(func() { _, _ = io.Copy(b, c); b.Close() })
			p.wg.Go(func() { _, _ = io.Copy(c, b); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, v any) bool { k.(net.Conn).Close(); v.(net.Conn).Close(); return true })
		p.wg.Wait()
	})
	return p
}

// Under systemd (Type=notify), the daemon sends READY=1 only once it is
// ready, as /readyz says: here not while its MQTT intake cannot reach
// the broker, and as soon as it can; then STOPPING=1 when SIGTERM starts
// the drain. The commands of exec tasks do not see $NOTIFY_SOCKET.
func TestSystemdNotify(t *testing.T) {
	broker := testenv.URL(t, "mqtt")
	host := strings.TrimPrefix(broker, "mqtt://")
	proxy := newToggleProxy(t, host)
	sd := newFakeSystemd(t)
	dir := t.TempDir()
	writeFile(t, dir, "peonify.yaml", mqttIntakeFile(proxy.ln.Addr().String(), fmt.Sprintf(`
    client_id: peonify-cli-test-sdnotify-%d
    connect_timeout: 1s
    min_backoff: 100ms
    max_backoff: 200ms
    wait_for_broker: true
    routes: {"peonify-cli-test/sdnotify/+": mark}`, time.Now().UnixNano()), `
http:
  listen: 127.0.0.1:0
  dashboard: {enabled: false}
`))
	d := startDaemon(t, dir, "peonify.yaml", "NOTIFY_SOCKET="+sd.path, "WATCHDOG_USEC=200000")
	admin := d.listenAddr("serving metrics and health checks")
	d.waitLog("peonify: running")

	// Not ready while the broker is down: no READY=1.
	waitFor(t, "/readyz to report the broker down", func() bool {
		code, _ := get(t, admin+"/readyz")
		return code == http.StatusServiceUnavailable
	}, d.stderr)
	wait := time.After(time.Second)
	watchdogs := 0
wait:
	for {
		select {
		case m := <-sd.msgs:
			if m != "WATCHDOG=1\n" {
				t.Fatalf("sd_notify %q while /readyz says not ready; log:\n%s", m, d.stderr)
			}
			watchdogs++
		case <-wait:
			break wait
		}
	}
	if watchdogs < 3 { // every 100ms with WATCHDOG_USEC=200000
		t.Errorf("%d watchdog pings in a second, want about 10", watchdogs)
	}

	// The broker comes up: READY=1, and /readyz agrees.
	proxy.up.Store(true)
	m := sd.next("READY=1", 20*time.Second, d.stderr)
	if !strings.Contains(m, "STATUS=") {
		t.Errorf("READY message %q has no STATUS", m)
	}
	if code, body := get(t, admin+"/readyz"); code != http.StatusOK {
		t.Errorf("READY=1 sent while /readyz answers %d %q", code, body)
	}

	code, log := d.stop()
	if code != 0 {
		t.Fatalf("peonify run exited %d after SIGTERM; log:\n%s", code, log)
	}
	m = sd.next("STOPPING=1", 5*time.Second, d.stderr)
	if !strings.Contains(m, "STATUS=draining") {
		t.Errorf("STOPPING message %q has no STATUS=draining", m)
	}
}

// Without $NOTIFY_SOCKET nothing is sent and nothing fails; with an
// unusable one the daemon says what is wrong and runs on.
func TestSDNotifierEnv(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if n, err := newSDNotifier(); n != nil || err != nil {
		t.Errorf("no NOTIFY_SOCKET: %v, %v", n, err)
	}
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	if _, err := newSDNotifier(); err == nil || !strings.Contains(err.Error(), "vsock is not supported") {
		t.Errorf("vsock: %v", err)
	}
	if _, ok := os.LookupEnv("NOTIFY_SOCKET"); ok {
		t.Error("NOTIFY_SOCKET is still set: exec tasks would inherit it")
	}
	t.Setenv("NOTIFY_SOCKET", "@peonify-test")
	t.Setenv("WATCHDOG_USEC", "3000000")
	t.Setenv("WATCHDOG_PID", fmt.Sprint(os.Getpid()))
	n, err := newSDNotifier()
	if err != nil || n.addr.Name != "\x00peonify-test" || n.watchdog != 3*time.Second {
		t.Errorf("abstract socket with watchdog: %+v, %v", n, err)
	}
	t.Setenv("NOTIFY_SOCKET", "/run/x")
	t.Setenv("WATCHDOG_USEC", "3000000")
	t.Setenv("WATCHDOG_PID", "1") // the watchdog is another process's
	if n, err := newSDNotifier(); err != nil || n.watchdog != 0 {
		t.Errorf("another process's watchdog: %+v, %v", n, err)
	}
	t.Setenv("NOTIFY_SOCKET", "/run/x") // the call above unset it
	t.Setenv("WATCHDOG_USEC", "soon")
	t.Setenv("WATCHDOG_PID", "")
	if _, err := newSDNotifier(); err == nil || !strings.Contains(err.Error(), "WatchdogSec") {
		t.Errorf("bad WATCHDOG_USEC: %v", err)
	}
}
