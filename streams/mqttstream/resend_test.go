package mqttstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// openSQLite opens a SQLite store that keeps no finished task (KeepDone
// 0, its default), closed at the end of the test.
func openSQLite(t *testing.T, path string) *sqlitestream.Stream {
	t.Helper()
	s, err := sqlitestream.Open(path, sqlitestream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// runAll claims and acks every task of store, as a processor that ran
// them would; the store then forgets them.
func runAll(t *testing.T, store *sqlitestream.Stream) int {
	t.Helper()
	ds, err := store.Poll(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Ack(context.Background(), ds...); err != nil {
		t.Fatal(err)
	}
	return len(ds)
}

// count returns how many tasks a store holds in any state.
func count(t *testing.T, s peonify.Inspector) int {
	t.Helper()
	c, err := s.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// handled waits until the intake has stored or recognised n messages.
func handled(t *testing.T, in *Intake, n uint64) {
	t.Helper()
	eventually(t, "the messages are handled", func() bool {
		st := in.Stats()
		return st.Enqueued+st.Duplicates >= n
	})
}

// A message published again with the same ID after its task ran, when
// the store has already forgotten the task, is acknowledged and not
// stored (so not run) again, by the same intake and, with a ResendLog,
// by the next one.
func TestRedeliveryAfterTaskRanIsNotStoredAgain(t *testing.T) {
	url := broker(t)
	topic := testTopic(t)
	dir := t.TempDir()
	store := openSQLite(t, filepath.Join(dir, "tasks.db"))
	cfg := testConfig(t, url, map[string]string{topic + "/#": "t"})
	cfg.ResendLog = filepath.Join(dir, "mqtt.resends")
	idProp := []string{"-D", "publish", "user-property", IDProperty, "dup-1"}

	in, stop := start(t, store, cfg)
	publish(t, url, topic+"/a", []byte("{}"), false, idProp...)
	handled(t, in, 1)
	if n := runAll(t, store); n != 1 {
		t.Fatalf("ran %d tasks, want 1", n)
	}
	publish(t, url, topic+"/a", []byte("{}"), false, idProp...)
	handled(t, in, 2)
	if n := count(t, store); n != 0 {
		t.Fatalf("the message published again was stored again: the store holds %d tasks, want 0", n)
	}
	if st := in.Stats(); st.Duplicates != 1 {
		t.Fatalf("stats = %+v, want 1 duplicate", st)
	}
	stop()

	again, _ := start(t, store, cfg)
	publish(t, url, topic+"/a", []byte("{}"), false, idProp...)
	handled(t, again, 1)
	if n := count(t, store); n != 0 {
		t.Fatalf("after a restart, the message published again was stored again: the store holds %d tasks, want 0", n)
	}
}

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
	in, err := New(newMem(t), cfg)
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
	in, err := New(newMem(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- in.Run(ctx) }()
	eventually(t, "Stats shows the connect error", func() bool { return in.Stats().ConnectError != nil })

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
