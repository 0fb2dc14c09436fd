package redisstream

import (
	"context"
	"log/slog"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/crashtest"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// scaleEnv carries a child's scaleOrders from TestScaleOut to
// TestScaleOutChild in the re-executed test binary.
const scaleEnv = "REDISSTREAM_SCALE_CHILD"

// scaleLease is the lease of the children: the tasks of the killed child
// come back after it. It is far above the stalls of a loaded machine, so
// that only the killed child loses leases.
const scaleLease = 3 * time.Second

// scaleOrders tell a child which queue to drain and where to log.
type scaleOrders struct {
	Prefix string // the queue's key prefix
	Ledger string // the ledger file every child records in
	Child  int    // names the child's consumer

	Queue   string   // the queue; empty for the default
	Cluster []string // the seed addresses of a Redis Cluster; empty for the test server
}

// TestScaleOut drains a backlog with four processor processes on one
// queue and SIGKILLs one of them mid-run. Every task must be completed,
// and the only repeats allowed are tasks the killed process held (claimed
// and not acked, as the ledger says): it may have completed them without
// acking.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes; skipped with -short")
	}
	scaleOut(t, testClient(t), scaleOrders{}, 20000)
}

// scaleOut runs TestScaleOut's scenario on c, with n tasks in the queue
// that orders name (its Queue and Cluster; scaleOut fills in the rest).
func scaleOut(t *testing.T, c redis.UniversalClient, orders scaleOrders, n int) {
	prefix := uniquePrefix(t, c)
	s := newTestStream(t, c, Config{Prefix: prefix, Queue: orders.Queue})
	ids := streamtest.Backfill(t, s, n, "scale", func(i int) string { return "t" + strconv.Itoa(i) })

	ledger := filepath.Join(t.TempDir(), "ledger")
	crashtest.ScaleOut{
		IDs:    ids,
		Ledger: ledger,
		Start: func(t *testing.T, i int) *streamtest.Child {
			o := orders
			o.Prefix, o.Ledger, o.Child = prefix, ledger, i
			return streamtest.StartChild(t, "TestScaleOutChild", scaleEnv, o)
		},
		// No Drained: the others drain the rest, the killed child's tasks
		// included once its lease ends, and exit when the queue is empty.
	}.Run(t)
	wantCounts(t, s, map[peonify.State]int{})
}

// TestScaleOutChild is a processor process of TestScaleOut: it runs until
// the queue is empty, recording its work in the ledger.
func TestScaleOutChild(t *testing.T) {
	var o scaleOrders
	streamtest.Orders(t, scaleEnv, &o)
	var c redis.UniversalClient
	if len(o.Cluster) > 0 {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: o.Cluster})
	} else {
		opts, err := redis.ParseURL(testenv.URL(t, "redis"))
		if err != nil {
			t.Fatal(err)
		}
		c = redis.NewClient(opts)
	}
	defer c.Close()
	s, err := New(c, Config{Prefix: o.Prefix, Queue: o.Queue, Consumer: "child-" + strconv.Itoa(o.Child), Lease: scaleLease, RescueInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Stop once nothing is left anywhere, leased tasks included.
	ctx, stop := streamtest.UntilDrained(t, context.Background(), s, 50*time.Millisecond)
	defer stop()
	cfg := peonify.Config{Workers: 8, QueueSize: 64, Logger: slog.New(slog.DiscardHandler)}
	crashtest.RunChild(t, ctx, o.Ledger, cfg, s, "scale", func(context.Context, *peonify.Task) error {
		return nil // the ledger records the run
	}) // closes s
}
