package sqlitestream

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// wfCrashEnv carries a child's orders from TestWorkflowCrash to
// TestWorkflowCrashChild.
const wfCrashEnv = "SQLITESTREAM_WORKFLOW_CRASH_CHILD"

type wfCrashOrders struct {
	Dir string
	Run int // names this child's workflows
}

// TestWorkflowCrash kills, with SIGKILL, processes that enqueue diamond
// workflows (a, then b and c, then d after both, each step adding its
// parents' results) and run them, several times. After each kill, before
// anything else touches the file, it checks that every release happened
// with its parent's ack or not at all: a waiting task waits exactly for
// its parents that have not succeeded, and a task that left waiting has
// every parent done. Then a last processor drains the file, and every
// workflow must end succeeded with the right result.
func TestWorkflowCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes; skipped with -short")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "tasks.db")
	rounds, run := 4, 300*time.Millisecond
	if raceEnabled {
		rounds, run = 2, time.Second // the child starts slower
	}
	for round := range rounds {
		c := streamtest.StartChild(t, "TestWorkflowCrashChild", wfCrashEnv, wfCrashOrders{Dir: dir, Run: round})
		time.Sleep(run + time.Duration(rand.IntN(500))*time.Millisecond)
		c.Kill(t)
		checkReleases(t, path)
	}

	s := openFile(t, path, Config{Lease: crashLease}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := newDiamondProcessor(t, s)
	drained, stop := streamtest.UntilDrained(t, ctx, s, 20*time.Millisecond)
	defer stop()
	if err := p.Run(drained); err != nil {
		t.Fatal(err)
	}
	s = openFile(t, path, Config{}, nil)
	checkReleases(t, path)
	rows, err := s.db.Query(`SELECT DISTINCT workflow FROM peonify_tasks WHERE workflow <> ''`)
	if err != nil {
		t.Fatal(err)
	}
	var wfs []string
	for rows.Next() {
		var w string
		rows.Scan(&w)
		wfs = append(wfs, w)
	}
	rows.Close()
	if len(wfs) == 0 {
		t.Fatal("no workflow was stored: the kills tested nothing")
	}
	for _, w := range wfs {
		info, err := s.GetWorkflow(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		if info.State != peonify.WorkflowSucceeded {
			t.Errorf("workflow %s ended %s: %v", w, info.State, info.Counts)
			continue
		}
		if d := get(t, s, w+"-d"); string(d.Result) != "5" {
			t.Errorf("workflow %s: d's result = %q, want 5 (a 1, b and c 2, d 1 + 2 + 2)", w, d.Result)
		}
	}
	t.Logf("%d rounds, %d workflows, all succeeded", rounds, len(wfs))
}

// newDiamondProcessor returns a processor of s whose handlers set 1 plus
// the sum of their parents' results as their result, and fail for good
// when a parent's result is missing.
func newDiamondProcessor(t *testing.T, s *Stream) *peonify.Processor {
	return streamtest.Processor(t, peonify.Config{Workers: 8, Logger: slog.New(slog.DiscardHandler)}, s,
		peonify.TaskList{"step": peonify.HandlerFunc(func(ctx context.Context, task *peonify.Task) error {
			res, err := peonify.ParentResults(ctx)
			if err != nil {
				return err
			}
			if len(res) != len(task.Parents) {
				return peonify.SkipRetry(fmt.Errorf("task %s started with %d of its %d parents' results", task.ID, len(res), len(task.Parents)))
			}
			sum := 1
			for _, r := range res {
				var n int
				if err := json.Unmarshal(r, &n); err != nil {
					return peonify.SkipRetry(err)
				}
				sum += n
			}
			b, _ := json.Marshal(sum)
			return peonify.SetResult(ctx, b)
		})})
}

// checkReleases checks, on the file as it is, that each release was
// atomic with the ack of the parent that made it.
func checkReleases(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	type row struct {
		state, parents string
		waitingOn      sql.NullInt64
		deps           int
	}
	rows, err := db.Query(`SELECT t.id, t.state, coalesce(t.parents, '[]'), w.waiting_on,
			(SELECT count(*) FROM peonify_deps d WHERE d.child = t.id)
		FROM peonify_tasks t LEFT JOIN peonify_waiting w ON w.id = t.id WHERE t.workflow <> ''`)
	if err != nil {
		t.Fatal(err)
	}
	tasks := map[string]row{}
	for rows.Next() {
		var id string
		var r row
		if err := rows.Scan(&id, &r.state, &r.parents, &r.waitingOn, &r.deps); err != nil {
			t.Fatal(err)
		}
		tasks[id] = r
	}
	rows.Close()
	var bad []string
	for id, r := range tasks {
		var parents []string
		if err := json.Unmarshal([]byte(r.parents), &parents); err != nil {
			t.Fatal(err)
		}
		notDone := 0
		for _, p := range parents {
			if tasks[p].state != "done" {
				notDone++
			}
		}
		switch {
		case len(parents) == 0:
		case r.state == "waiting":
			if !r.waitingOn.Valid || int(r.waitingOn.Int64) != notDone || r.deps != notDone || notDone == 0 {
				bad = append(bad, fmt.Sprintf("%s waits for %v (%d dependencies) but %d of its parents are not done",
					id, r.waitingOn, r.deps, notDone))
			}
		case notDone > 0:
			bad = append(bad, fmt.Sprintf("%s is %s while %d of its parents are not done", id, r.state, notDone))
		case r.waitingOn.Valid:
			bad = append(bad, fmt.Sprintf("%s is %s and still has a waiting row", id, r.state))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%d tasks break the releases:\n%s", len(bad), strings.Join(bad, "\n"))
	}
}

// TestWorkflowCrashChild is the process that TestWorkflowCrash starts and
// kills: it enqueues diamonds and runs them until killed. Run alone, it
// skips.
func TestWorkflowCrashChild(t *testing.T) {
	var o wfCrashOrders
	streamtest.Orders(t, wfCrashEnv, &o)
	s, err := Open(filepath.Join(o.Dir, "tasks.db"), Config{Lease: crashLease, BusyTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			w := &peonify.Workflow{ID: fmt.Sprintf("r%d-w%d", o.Run, i)}
			a := w.Add(&peonify.Task{ID: w.ID + "-a", Type: "step"})
			b := w.Add(&peonify.Task{ID: w.ID + "-b", Type: "step"}, a)
			c := w.Add(&peonify.Task{ID: w.ID + "-c", Type: "step"}, a)
			w.Add(&peonify.Task{ID: w.ID + "-d", Type: "step"}, b, c)
			if err := s.EnqueueWorkflow(ctx, w); err != nil && ctx.Err() == nil {
				t.Errorf("enqueue: %v", err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if err := newDiamondProcessor(t, s).Run(ctx); err != nil {
		t.Error(err)
	}
}
