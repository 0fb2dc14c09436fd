package natsstream

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/peonify/peonify"
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
	Ledger          streamtest.Ledger
	Child           int
}

// TestScaleOut drains 20,000 tasks with four processor processes sharing
// the stream's consumer, and SIGKILLs one of them mid-run. Every task must
// be completed and the stream must end empty. The only tasks that may run
// twice are those the killed process held: completed by it but not yet
// acknowledged, as its acks log shows.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes; skipped with -short")
	}
	js := testJS(t)
	s, cfg := newTestStream(t, js, Config{AckWait: scaleAckWait})
	ids := streamtest.Backfill(t, s, scaleTasks, "scale", func(i int) string { return fmt.Sprintf("t-%05d", i) })

	ledger := streamtest.NewLedger(t)
	streamtest.ScaleOut{
		IDs: ids,
		Start: func(t *testing.T, i int) *streamtest.Child {
			return streamtest.StartChild(t, "TestScaleOutChild", scaleEnv, scaleOrders{cfg.Stream, cfg.Subject, ledger, i})
		},
		Runs:   func(t *testing.T) []streamtest.Run { return ledger.Runs(t, 4) },
		Jitter: 20 * time.Millisecond,
		// The killed process held the tasks it completed without its Ack
		// returning, and those it had not finished (which, not logged,
		// cannot show as repeats).
		Held: func(t *testing.T) streamtest.Held {
			held := make(map[string]time.Time)
			for _, id := range ledger.Read(t, streamtest.ChildLog(0)) {
				held[id] = time.Time{}
			}
			for _, id := range ledger.Read(t, ackLog(0)) {
				delete(held, id)
			}
			return streamtest.Held{IDs: held}
		},
		// The claims of the killed process come back after their AckWait.
		Drained: func(t *testing.T) (bool, string) {
			counts, err := s.Counts(streamtest.Context(t))
			if err != nil {
				t.Fatal(err)
			}
			return counts[peonify.StatePending]+counts[peonify.StateRunning]+counts[peonify.StateScheduled] == 0, fmt.Sprint(counts)
		},
		MaxRuns: 2,
	}.Run(t)
	streamtest.WantEmpty(t, s, peonify.StatePending, peonify.StateRunning, peonify.StateScheduled, peonify.StateDead)
}

// ackLog is the log of the tasks that child i acknowledged.
func ackLog(i int) string { return fmt.Sprintf("acked-%d.log", i) }

// TestScaleOutChild is one processor process of TestScaleOut: it runs until
// SIGTERM (or SIGKILL), logging each task it completes and acknowledges.
func TestScaleOutChild(t *testing.T) {
	var o scaleOrders
	streamtest.Orders(t, scaleEnv, &o)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(testenv.URL(t, "nats"), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(js, Config{Stream: o.Stream, Subject: o.Subject, AckWait: scaleAckWait, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	done := o.Ledger.Open(t, streamtest.ChildLog(o.Child))
	acked := &ackLogged{Stream: s, log: o.Ledger.Open(t, ackLog(o.Child))}
	cfg := peonify.Config{Workers: scaleWorkers, QueueSize: scaleQueue, Logger: logger}
	streamtest.RunProcessor(t, ctx, cfg, acked, "scale", func(_ context.Context, tk *peonify.Task) error {
		return done.Add(tk.ID)
	})
}

// ackLogged logs the IDs of the deliveries whose Ack returned nil.
type ackLogged struct {
	*Stream
	log *streamtest.Log
}

func (a *ackLogged) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	if err := a.Stream.Ack(ctx, ds...); err != nil {
		return err
	}
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.Task.ID
	}
	return a.log.Add(ids...)
}
