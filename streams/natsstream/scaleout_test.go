package natsstream

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/crashtest"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
)

// scaleEnv carries a child's scaleOrders from TestScaleOut to
// TestScaleOutChild in the re-executed test binary.
const scaleEnv = "NATSSTREAM_SCALEOUT_CHILD"

// The scale-out processors.
const (
	scaleTasks   = 20000
	scaleWorkers = 8
	scaleQueue   = 8
	scaleAckWait = 2 * time.Second
)

// scaleOrders tell a child which stream to drain and where to log.
type scaleOrders struct {
	Stream, Subject string
	Ledger          string // the ledger file every child records in
	Child           int
	Servers         string // the server URLs, comma-separated, the first tried first; the test server when empty
}

// TestScaleOut drains 20,000 tasks with four processor processes sharing
// the stream's consumer, and SIGKILLs one of them mid-run. Every task must
// be completed and the stream must end empty. The only tasks that may run
// twice are those the killed process held: claimed and not yet
// acknowledged, as the ledger shows.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes; skipped with -short")
	}
	js := testJS(t)
	s, cfg := newTestStream(t, js, Config{AckWait: scaleAckWait})
	scaleOut(t, s, cfg, func(int) string { return "" })
}

// scaleOut runs the scale-out test on s, whose Config is cfg; servers
// returns the server URLs child i connects to (see scaleOrders).
func scaleOut(t *testing.T, s *Stream, cfg Config, servers func(child int) string) {
	ids := streamtest.Backfill(t, s, scaleTasks, "scale", func(i int) string { return fmt.Sprintf("t-%05d", i) })

	ledger := filepath.Join(t.TempDir(), "ledger")
	crashtest.ScaleOut{
		IDs:    ids,
		Ledger: ledger,
		Start: func(t *testing.T, i int) *streamtest.Child {
			return streamtest.StartChild(t, "TestScaleOutChild", scaleEnv, scaleOrders{cfg.Stream, cfg.Subject, ledger, i, servers(i)})
		},
		Jitter: 20 * time.Millisecond,
		// The claims of the killed process come back after their AckWait.
		Drained: func(t *testing.T) (bool, string) {
			counts, err := s.Counts(streamtest.Context(t))
			if err != nil {
				t.Fatal(err)
			}
			return counts[peonify.StatePending]+counts[peonify.StateRunning]+counts[peonify.StateScheduled] == 0, fmt.Sprint(counts)
		},
	}.Run(t)
	streamtest.WantEmpty(t, s, peonify.StatePending, peonify.StateRunning, peonify.StateScheduled, peonify.StateDead)
}

// TestScaleOutChild is one processor process of TestScaleOut: it runs until
// SIGTERM (or SIGKILL), recording its work in the ledger.
func TestScaleOutChild(t *testing.T) {
	var o scaleOrders
	streamtest.Orders(t, scaleEnv, &o)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	servers := o.Servers
	if servers == "" {
		servers = testenv.URL(t, "nats")
	}
	_, js := testenv.ConnectJetStream(t, servers, nats.MaxReconnects(-1), nats.DontRandomize())
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(js, Config{Stream: o.Stream, Subject: o.Subject, AckWait: scaleAckWait, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	cfg := peonify.Config{Workers: scaleWorkers, QueueSize: scaleQueue, Logger: logger}
	crashtest.RunChild(t, ctx, o.Ledger, cfg, s, "scale", func(context.Context, *peonify.Task) error {
		return nil // the ledger records the run
	})
}
