package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// daemonConfig parses a config file with a SQLite store in a temporary
// directory and a WebSocket intake on a port of the system's choosing,
// plus extra sections.
func daemonConfig(t *testing.T, extra string) *config {
	t.Helper()
	yaml := "streams:\n  - {kind: sqlite, path: " + filepath.Join(t.TempDir(), "p.db") + "}\n" +
		"  - {kind: websocket, listen: '127.0.0.1:0', bearer_tokens: [0123456789abcdef]}\n" +
		"tasks:\n  t: {executor: exec, shell: 'true'}\n" + extra
	cfg, err := parseConfig([]byte(yaml), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A start-up error after the stores are open and the intakes listen
// (here the admin server's address is taken) closes all of them again.
func TestNewDaemonUndoesAFailedStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := daemonConfig(t, "http: {listen: '"+ln.Addr().String()+"'}\n")
	d, err := newDaemon(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err == nil {
		d.close()
		t.Fatal("newDaemon succeeded on a taken address")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("newDaemon: %v, want the taken address", err)
	}
	goleak.VerifyNone(t) // the SQLite watch and the WebSocket server stopped
}

// run drains the processor when its context ends, returns nil, and
// closes what newDaemon opened; /readyz then reports the drain.
func TestDaemonRunStopsWithItsContext(t *testing.T) {
	cfg := daemonConfig(t, "")
	d, err := newDaemon(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d.stopping.Load() {
		t.Error("a daemon that has not run reports that it is stopping")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	if !d.stopping.Load() {
		t.Error("the daemon does not report its drain")
	}
	goleak.VerifyNone(t)
}
