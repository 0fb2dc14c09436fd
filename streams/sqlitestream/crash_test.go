package sqlitestream

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// crashEnv carries a child's orders, as JSON, from TestCrash to
// TestCrashChild in the re-executed test binary.
const crashEnv = "SQLITESTREAM_CRASH_CHILD"

// The lease of the crash children: the tasks of a killed child come back
// after it.
const crashLease = 300 * time.Millisecond

// The logs of the crash test's ledger, which sits next to the database.
const (
	enqueuedLog  = "enqueued.log"  // each task whose Enqueue returned
	completedLog = "completed.log" // each run of a task, by any child
)

// crashOrders tell a child of TestCrash what to do.
type crashOrders struct {
	Ledger streamtest.Ledger // the directory of the database and the logs
	Drain  bool              // process until nothing is left, then exit; else enqueue and process until killed
	Run    int               // names this child's tasks
}

// TestCrash kills processes that enqueue and process tasks with SIGKILL,
// several times, sometimes two at once on the same file, then lets a last
// process drain the store. Every task whose Enqueue returned must have been
// completed at least once, and the store must end empty: no task is lost to
// a crash, and every lease held by a dead process ends.
//
// A task may have been completed without being logged as enqueued (its
// child died between Enqueue and the log), and tasks in flight at a kill
// run again, so neither unknown completions nor repeats are errors here.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes; skipped with -short")
	}
	ledger := streamtest.NewLedger(t)
	rounds := 5
	if raceEnabled {
		rounds = 3
	}
	run := 0
	for round := range rounds {
		children := 1 + round%2 // every other round, two processes share the file
		var workers []*streamtest.Child
		for range children {
			run++
			workers = append(workers, streamtest.StartChild(t, "TestCrashChild", crashEnv, crashOrders{Ledger: ledger, Run: run}))
		}
		// Let them work for a while, then kill them mid-run.
		before := ledger.Size(completedLog)
		streamtest.WaitUntil(t, fmt.Sprintf("round %d's children to complete about 200 tasks", round), 30*time.Second, func() (bool, string) {
			n := ledger.Size(completedLog) - before
			return n >= 2000, fmt.Sprintf("%d bytes of completions logged", n)
		})
		time.Sleep(time.Duration(rand.IntN(50)) * time.Millisecond) // a random moment of the run
		for _, c := range workers {
			c.Kill(t)
		}
	}

	drain := streamtest.StartChild(t, "TestCrashChild", crashEnv, crashOrders{Ledger: ledger, Drain: true})
	if err := drain.Wait(60 * time.Second); err != nil {
		t.Fatalf("drain process: %v", err)
	}

	enqueued := ledger.Read(t, enqueuedLog)
	if len(enqueued) == 0 {
		t.Fatal("no child logged an enqueued task: the kills tested nothing")
	}
	completions := ledger.Read(t, completedLog)
	runs := make(map[string]int, len(completions))
	for _, id := range completions {
		runs[id]++
	}
	var lost []string
	for _, id := range enqueued {
		if runs[id] == 0 {
			lost = append(lost, id)
		}
	}
	streamtest.SomeErrors(t, fmt.Sprintf("of %d enqueued tasks were never completed", len(enqueued)), lost)
	t.Logf("%d rounds: %d tasks enqueued, %d completions, %d of them repeats of tasks in flight at a kill",
		rounds, len(enqueued), len(completions), len(completions)-len(runs))

	s := openFile(t, filepath.Join(string(ledger), "tasks.db"), Config{}, nil)
	streamtest.WantEmpty(t, s)
}

// TestCrashChild is the process that TestCrash starts and kills. Run
// alone, it skips.
func TestCrashChild(t *testing.T) {
	var o crashOrders
	streamtest.Orders(t, crashEnv, &o)
	s, err := Open(filepath.Join(string(o.Ledger), "tasks.db"), Config{Lease: crashLease, BusyTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	enqueued := o.Ledger.Open(t, enqueuedLog)
	completed := o.Ledger.Open(t, completedLog)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var wg sync.WaitGroup
	if !o.Drain {
		// Produce until killed, in batches of 1 to 5 tasks; log each task
		// only after Enqueue returned.
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; {
				var batch []*peonify.Task
				var ids []string
				for range 1 + rand.IntN(5) {
					ids = append(ids, fmt.Sprintf("r%d-%d", o.Run, i))
					batch = append(batch, &peonify.Task{ID: ids[len(ids)-1], Type: "crash"})
					i++
				}
				if err := s.Enqueue(ctx, batch...); err != nil {
					t.Errorf("enqueue: %v", err)
					return
				}
				if err := enqueued.Add(ids...); err != nil {
					t.Errorf("log: %v", err)
					return
				}
			}
		})
	}
	runCtx := ctx
	if o.Drain {
		// Stop once nothing is left, leased tasks included.
		var stop func()
		runCtx, stop = streamtest.UntilDrained(t, ctx, s, 20*time.Millisecond)
		defer stop()
	}
	// Consume with a processor: the handler logs the task as completed
	// and returns, and the processor acks it. Run closes s.
	cfg := peonify.Config{Workers: 4, Logger: slog.New(slog.DiscardHandler)}
	streamtest.RunProcessor(t, runCtx, cfg, s, "crash", func(_ context.Context, tk *peonify.Task) error {
		return completed.Add(tk.ID)
	})
	cancel()
	wg.Wait()
}
