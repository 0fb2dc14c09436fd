package redisstream

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// scaleEnv carries a child's scaleOrders from TestScaleOut to
// TestScaleOutChild in the re-executed test binary.
const scaleEnv = "REDISSTREAM_SCALE_CHILD"

// scaleLease is the lease of the children: the tasks of the killed child
// come back after it.
const scaleLease = time.Second

// scaleOrders tell a child which queue to drain and where to log.
type scaleOrders struct {
	Prefix string // the queue's key prefix
	Ledger streamtest.Ledger
	Child  int // names the child's consumer and its log
}

// TestScaleOut drains a backlog with four processor processes on one
// queue and SIGKILLs one of them mid-run. Every task must be completed,
// and the only repeats allowed are tasks the killed process held: it may
// have completed them without acking.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes; skipped with -short")
	}
	c := testClient(t)
	prefix := uniquePrefix(t, c)
	s := newTestStream(t, c, Config{Prefix: prefix})
	const n = 20000
	ids := streamtest.Backfill(t, s, n, "scale", func(i int) string { return "t" + strconv.Itoa(i) })

	ledger := streamtest.NewLedger(t)
	streamtest.ScaleOut{
		IDs: ids,
		Start: func(t *testing.T, i int) *streamtest.Child {
			return streamtest.StartChild(t, "TestScaleOutChild", scaleEnv, scaleOrders{prefix, ledger, i})
		},
		Runs: func(t *testing.T) []streamtest.Run { return ledger.Runs(t, 4) },
		// What child 0 had read and not acked when it died.
		Held: func(t *testing.T) streamtest.Held {
			cs, err := c.XInfoConsumers(streamtest.Context(t), s.Keys().Stream, Group).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, info := range cs {
				if info.Name == "child-0" {
					return streamtest.Held{Count: int(info.Pending)}
				}
			}
			return streamtest.Held{}
		},
		// No Drained: the others drain the rest, the killed child's tasks
		// included once its lease ends, and exit when the queue is empty.
	}.Run(t)
	wantCounts(t, s, map[peonify.State]int{})
}

// TestScaleOutChild is a processor process of TestScaleOut: it runs until
// the queue is empty, logging each task it completes.
func TestScaleOutChild(t *testing.T) {
	var o scaleOrders
	streamtest.Orders(t, scaleEnv, &o)
	opts, err := redis.ParseURL(testenv.URL(t, "redis"))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	s, err := New(c, Config{Prefix: o.Prefix, Consumer: "child-" + strconv.Itoa(o.Child), Lease: scaleLease, RescueInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	log := o.Ledger.Open(t, streamtest.ChildLog(o.Child))
	// Stop once nothing is left anywhere, leased tasks included.
	ctx, stop := streamtest.UntilDrained(t, context.Background(), s, 50*time.Millisecond)
	defer stop()
	cfg := peonify.Config{Workers: 8, QueueSize: 64, Logger: slog.New(slog.DiscardHandler)}
	streamtest.RunProcessor(t, ctx, cfg, s, "scale", func(_ context.Context, tk *peonify.Task) error {
		return log.Add(tk.ID)
	}) // closes s
}
