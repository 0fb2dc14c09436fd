//go:build unix

package pgstream

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/crashtest"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
)

// The scale-out test: several processor processes share one queue and one
// of them is killed with SIGKILL while it holds tasks.
const (
	scaleOutTasks     = 20000
	scaleOutChildren  = 4
	scaleOutVictim    = 1 // index of the child that is killed
	scaleOutWorkers   = 8
	scaleOutQueueSize = 32
	scaleOutLease     = 5 * time.Second // far above the stalls of a loaded CI database, so only the killed child loses leases
	scaleOutRescue    = 500 * time.Millisecond
	scaleOutGrace     = 5 * time.Second

	// scaleOutEnv carries a child's orders, as JSON, from TestScaleOut to
	// TestScaleOutHelper in the re-executed test binary.
	scaleOutEnv = "PEONIFY_PGSTREAM_SCALEOUT_CHILD"
)

// scaleOutOrders tell a child process what to run.
type scaleOutOrders struct {
	Schema   string // the schema of the queue's tables
	Queue    string // the shared queue
	Ledger   string // the ledger file every child records in
	Identity string // the stream's Config.Identity: claimed_by of the rows it leases
	App      string // application_name of the child's connections
	URL      string // the database; the test server's when empty
}

// TestScaleOut runs four processor processes on one queue of 20,000 tasks
// and kills one with SIGKILL when a quarter is done. Every task must
// complete; the only tasks that may run twice are those the killed process
// held leased when it died, which come back once their leases end; the
// queue must end empty; the survivors must drain and exit cleanly on
// SIGTERM.
//
// Each run records itself in the ledger before the handler returns to the
// processor, so a run that happened before the kill is never lost: a task
// recorded but not yet acked when its process died runs again and shows
// up as a duplicate.
//
// The test has a schema of its own, as a deployment would: the public
// one is shared with every other test and benchmark run against the
// server, and its size and statistics are theirs.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four processes over 20,000 tasks; skipped with -short")
	}
	scaleOut(t, testPool(t), "")
}

// scaleOut runs the scale-out test on pool; the children connect to url,
// or to the test server when it is empty.
func scaleOut(t *testing.T, pool *pgxpool.Pool, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	queue := uniqueQueue(t)
	tag := streamtest.RandHex(4)
	schema := "peonify_scaleout_" + tag
	tasksTable := schema + ".peonify_tasks"
	t.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			t.Error(err)
		}
	})
	if err := MigrateSchema(ctx, pool, schema); err != nil {
		t.Fatal(err)
	}

	s := newTestStream(t, pool, Config{Schema: schema, Queue: queue, NoListen: true})
	tasks := make([]*peonify.Task, scaleOutTasks)
	for i := range tasks {
		tasks[i] = &peonify.Task{Type: "scaleout", Payload: []byte(`{"n":` + strconv.Itoa(i) + `}`)}
	}
	streamtest.Enqueue(t, s, tasks...) // one batch, loaded with COPY
	enqueued := make(map[string]bool, len(tasks))
	for _, tk := range tasks {
		enqueued[tk.ID] = true
	}
	if len(enqueued) != scaleOutTasks {
		t.Fatalf("Enqueue gave %d distinct IDs to %d tasks", len(enqueued), scaleOutTasks)
	}

	ids := make([]string, 0, len(enqueued))
	for id := range enqueued {
		ids = append(ids, id)
	}
	ledger := filepath.Join(t.TempDir(), "ledger")
	count := func(query string, args ...any) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, query, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	orders := func(i int) scaleOutOrders {
		return scaleOutOrders{
			Schema:   schema,
			Queue:    queue,
			Ledger:   ledger,
			Identity: fmt.Sprintf("scaleout-%d", i),
			App:      fmt.Sprintf("pgstream-scaleout-%s-%d", tag, i),
			URL:      url,
		}
	}
	crashtest.ScaleOut{
		IDs:      ids,
		Ledger:   ledger,
		Children: scaleOutChildren,
		Victim:   scaleOutVictim,
		Start: func(t *testing.T, i int) *streamtest.Child {
			return streamtest.StartChild(t, "TestScaleOutHelper", scaleOutEnv, orders(i))
		},
		Leases: func(t *testing.T, held []string) map[string]time.Time {
			// Wait until the database has seen the last of the killed
			// child's connections, so that no claim or ack of it is
			// still on the way.
			victim := orders(scaleOutVictim)
			streamtest.WaitUntil(t, "the killed child's connections to close", 10*time.Second, func() (bool, string) {
				n := count("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", victim.App)
				return n == 0, fmt.Sprintf("%d still open", n)
			})
			// When the leases it held end: it took each of them moments
			// before the kill, for scaleOutLease, so none has ended and
			// been rescued yet.
			rows, err := pool.Query(ctx, "SELECT id, lease_until FROM "+tasksTable+" WHERE queue = $1 AND state = 'running' AND claimed_by = $2",
				queue, victim.Identity)
			if err != nil {
				t.Fatal(err)
			}
			ends := make(map[string]time.Time) // task ID → end of the victim's lease
			var id string
			var at time.Time
			if _, err := pgx.ForEachRow(rows, []any{&id, &at}, func() error { ends[id] = at; return nil }); err != nil {
				t.Fatal(err)
			}
			if len(ends) == 0 || len(held) == 0 {
				t.Fatalf("the killed child held no leased task (%d in the ledger): the kill tested nothing; make the run slower or kill earlier", len(held))
			}
			return ends
		},
		// With KeepDone 0 an ack deletes its row, so an empty queue means
		// every task was acked and nothing is leased or dead. The killed
		// child's tasks are among them, so their leases were rescued.
		Drained: func(t *testing.T) (bool, string) {
			counts, err := s.Counts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return len(counts) == 0, fmt.Sprintf("tasks by state: %v", counts)
		},
		// The survivors drain and exit 0 on SIGTERM, within their grace
		// period plus time to close.
		StopWithin: scaleOutGrace + 10*time.Second,
	}.Run(t)
}

// TestScaleOutHelper is a child process of TestScaleOut: it runs a
// processor on the queue it is given until SIGTERM. Run alone, it skips.
func TestScaleOutHelper(t *testing.T) {
	var o scaleOutOrders
	streamtest.Orders(t, scaleOutEnv, &o)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	url := o.URL
	if url == "" {
		url = testenv.URL(t, "postgres")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = o.App
	// An ack must outlive this process, not the database: committing
	// without waiting for the disk keeps busy disks from stalling runs.
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(pool, Config{Schema: o.Schema, Queue: o.Queue, Lease: scaleOutLease, RescueInterval: scaleOutRescue, Identity: o.Identity, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	pcfg := peonify.Config{
		Workers:       scaleOutWorkers,
		QueueSize:     scaleOutQueueSize,
		ShutdownGrace: scaleOutGrace,
		Logger:        logger,
	}
	crashtest.RunChild(t, ctx, o.Ledger, pcfg, s, "scaleout", func(context.Context, *peonify.Task) error {
		time.Sleep(rand.N(time.Millisecond)) // a little work; the ledger records the run
		return nil
	})
}
