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
	"github.com/peonify/peonify/internal/crashtest"
	"github.com/peonify/peonify/internal/streamtest"
)

// crashEnv carries a child's orders, as JSON, from TestCrash to
// TestCrashChild in the re-executed test binary.
const crashEnv = "SQLITESTREAM_CRASH_CHILD"

// The lease of the crash children: the tasks of a killed child come back
// after it.
const crashLease = 300 * time.Millisecond

// crashOrders tell a child of TestCrash what to do.
type crashOrders struct {
	Dir   string // the directory of the database and the ledger
	Drain bool   // process until nothing is left, then exit; else enqueue and process until killed
	Run   int    // names this child's tasks
}

// TestCrash kills processes that enqueue and process tasks with SIGKILL,
// several times, sometimes two at once on the same file, then lets a last
// process drain the store. Every task whose Enqueue returned must have been
// completed at least once, and the store must end empty: no task is lost to
// a crash, and every lease held by a dead process ends.
//
// Every process records in one ledger the tasks its Enqueue stored and
// what its processor claimed, ran and acked. A task may have been
// completed without being recorded as enqueued (its child died between
// Enqueue and the record), so unknown completions are no error here; a
// task may run again only if a killed process held it.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes; skipped with -short")
	}
	dir := t.TempDir()
	h := crashtest.ReadLedger(t, filepath.Join(dir, "ledger"))
	rounds := 5
	if raceEnabled {
		rounds = 3
	}
	run := 0
	var inFlight [][]string // what each killed child held
	for round := range rounds {
		children := 1 + round%2 // every other round, two processes share the file
		var workers []*streamtest.Child
		for range children {
			run++
			workers = append(workers, streamtest.StartChild(t, "TestCrashChild", crashEnv, crashOrders{Dir: dir, Run: run}))
		}
		// Let them work for a while, then kill them mid-run.
		crashtest.Refresh(t, h)
		before := h.Completed()
		streamtest.WaitUntil(t, fmt.Sprintf("round %d's children to complete 200 tasks", round), 30*time.Second, func() (bool, string) {
			crashtest.Refresh(t, h)
			n := h.Completed() - before
			return n >= 200, fmt.Sprintf("%d tasks completed", n)
		})
		time.Sleep(time.Duration(rand.IntN(50)) * time.Millisecond) // a random moment of the run
		for _, c := range workers {
			c.Kill(t)
		}
		crashtest.Refresh(t, h)
		for _, c := range workers {
			inFlight = append(inFlight, h.Held(c.Pid()))
		}
	}

	drain := streamtest.StartChild(t, "TestCrashChild", crashEnv, crashOrders{Dir: dir, Drain: true})
	if err := drain.Wait(60 * time.Second); err != nil {
		t.Fatalf("drain process: %v", err)
	}

	crashtest.Refresh(t, h)
	enqueued := h.Enqueued()
	if len(enqueued) == 0 {
		t.Fatal("no child recorded an enqueued task: the kills tested nothing")
	}
	v := h.Verify(enqueued, inFlight...)
	streamtest.SomeErrors(t, fmt.Sprintf("of %d enqueued tasks were never completed", len(enqueued)), v.Lost)
	streamtest.SomeErrors(t, "tasks ran more often than the kills that found them in flight allow", v.Excess)
	t.Logf("%d rounds: %d tasks enqueued, %d completed, %d repeats of tasks in flight at a kill (at most %d)",
		rounds, len(enqueued), h.Completed(), v.Duplicates, v.Bound)

	s := openFile(t, filepath.Join(dir, "tasks.db"), Config{}, nil)
	streamtest.WantEmpty(t, s)
}

// TestCrashChild is the process that TestCrash starts and kills. Run
// alone, it skips.
func TestCrashChild(t *testing.T) {
	var o crashOrders
	streamtest.Orders(t, crashEnv, &o)
	s, err := Open(filepath.Join(o.Dir, "tasks.db"), Config{Lease: crashLease, BusyTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ledger := filepath.Join(o.Dir, "ledger")
	enqueued := crashtest.OpenLedger(t, ledger)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var wg sync.WaitGroup
	if !o.Drain {
		// Produce until killed, in batches of 1 to 5 tasks; record each
		// task only after Enqueue returned.
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
				if err := enqueued.Enqueued(ids...); err != nil {
					t.Errorf("ledger: %v", err)
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
	// Consume with a processor: the ledger records each run before the
	// handler returns, and the processor acks it. Run closes s.
	cfg := peonify.Config{Workers: 4, Logger: slog.New(slog.DiscardHandler)}
	crashtest.RunChild(t, runCtx, ledger, cfg, s, "crash", func(context.Context, *peonify.Task) error { return nil })
	cancel()
	wg.Wait()
}
