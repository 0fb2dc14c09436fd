//go:build unix

package pgstream

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify"
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
	Schema string // the schema of the queue's tables
	Queue  string // the shared queue
	Table  string // where the handler records each completion
	Child  int    // the child's index, recorded with its completions
	Name   string // the stream's Config.Name: claimed_by of the rows it leases
	App    string // application_name of the child's connections
}

// TestScaleOut runs four processor processes on one queue of 20,000 tasks
// and kills one with SIGKILL when a quarter is done. Every task must
// complete; the only tasks that may run twice are those the killed process
// held leased when it died, which come back once their leases end; the
// queue must end empty; the survivors must drain and exit cleanly on
// SIGTERM.
//
// Each run records itself in a table from inside the handler, before the
// handler returns, so a run that happened before the kill is never lost:
// a task recorded but not yet acked when its process died runs again and
// shows up as a duplicate.
//
// The test has a schema of its own, as a deployment would: the public
// one is shared with every other test and benchmark run against the
// server, and its size and statistics are theirs.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four processes over 20,000 tasks; skipped with -short")
	}
	pool := testPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	queue := uniqueQueue(t)
	tag := randHex(4)
	schema := "peonify_scaleout_" + tag
	tasksTable := schema + ".peonify_tasks"
	table := schema + ".completions"
	t.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			t.Error(err)
		}
	})
	if err := MigrateSchema(ctx, pool, schema); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE "+table+" (task_id text NOT NULL, child int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}

	s := newTestStream(t, pool, Config{Schema: schema, Queue: queue, NoListen: true})
	tasks := make([]*peonify.Task, scaleOutTasks)
	for i := range tasks {
		tasks[i] = &peonify.Task{Type: "scaleout", Payload: []byte(`{"n":` + strconv.Itoa(i) + `}`)}
	}
	mustEnqueue(t, s, tasks...) // one batch, loaded with COPY
	enqueued := make(map[string]bool, len(tasks))
	for _, tk := range tasks {
		enqueued[tk.ID] = true
	}
	if len(enqueued) != scaleOutTasks {
		t.Fatalf("Enqueue gave %d distinct IDs to %d tasks", len(enqueued), scaleOutTasks)
	}

	start := time.Now()
	children := make([]*scaleOutChild, scaleOutChildren)
	for i := range children {
		children[i] = startScaleOutChild(t, scaleOutOrders{
			Schema: schema,
			Queue:  queue,
			Table:  table,
			Child:  i,
			Name:   fmt.Sprintf("scaleout-%d", i),
			App:    fmt.Sprintf("pgstream-scaleout-%s-%d", tag, i),
		})
	}

	count := func(query string, args ...any) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, query, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitUntil(t, "a quarter of the tasks to complete", time.Minute, func() (bool, string) {
		n := count("SELECT count(*) FROM " + table)
		return n >= scaleOutTasks/4, fmt.Sprintf("%d runs recorded", n)
	})

	// Kill one child, then wait until the database has seen the last of
	// its connections, so that no claim or ack of it is still on the way.
	victim := children[scaleOutVictim]
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-victim.done; err == nil {
		t.Fatal("the killed child exited cleanly; want it killed")
	}
	victim.exited = true
	waitUntil(t, "the killed child's connections to close", 10*time.Second, func() (bool, string) {
		n := count("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", victim.orders.App)
		return n == 0, fmt.Sprintf("%d still open", n)
	})

	// What it held leased when it died, and until when: the only tasks
	// that may run twice, and not before their leases end. It took each
	// of these leases moments before the kill, for scaleOutLease, so none
	// has ended and been rescued yet.
	rows, err := pool.Query(ctx, "SELECT id, lease_until FROM "+tasksTable+" WHERE queue = $1 AND state = 'running' AND claimed_by = $2",
		queue, victim.orders.Name)
	if err != nil {
		t.Fatal(err)
	}
	held := make(map[string]time.Time) // task ID → end of the victim's lease
	var id string
	var at time.Time
	if _, err := pgx.ForEachRow(rows, []any{&id, &at}, func() error { held[id] = at; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(held) == 0 {
		t.Fatal("the killed child held no leased task: the kill tested nothing; make the run slower or kill earlier")
	}
	t.Logf("killed child %d at %s holding %d leases", scaleOutVictim, time.Now().Format("15:04:05.000"), len(held))

	waitUntil(t, "every task to complete", time.Minute, func() (bool, string) {
		n := count("SELECT count(DISTINCT task_id) FROM " + table)
		return n >= scaleOutTasks, fmt.Sprintf("%d distinct tasks completed", n)
	})
	elapsed := time.Since(start)
	// With KeepDone 0 an ack deletes its row, so an empty queue means
	// every task was acked and nothing is leased or dead. The killed
	// child's tasks are among them, so their leases were rescued.
	waitUntil(t, "the queue to empty", scaleOutLease+10*time.Second, func() (bool, string) {
		counts, err := s.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(counts) == 0, fmt.Sprintf("tasks by state: %v", counts)
	})

	// The survivors drain and exit 0 on SIGTERM, within their grace
	// period plus time to close.
	for i, c := range children {
		if i == scaleOutVictim {
			continue
		}
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(scaleOutGrace + 10*time.Second)
	for i, c := range children {
		if i == scaleOutVictim {
			continue
		}
		select {
		case err := <-c.done:
			c.exited = true
			if err != nil {
				t.Errorf("child %d exited with %v after SIGTERM, want status 0; its output:\n%s", i, err, c.out.String())
			}
		case <-deadline:
			t.Fatalf("child %d did not exit within %s of SIGTERM", i, scaleOutGrace+10*time.Second)
		}
	}

	// Now that no process runs, read every completion.
	rows, err = pool.Query(ctx, "SELECT task_id, child, at FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	runs := make(map[string]int, scaleOutTasks)
	where := make(map[string][]string, scaleOutTasks) // task ID → "child@time" of each run
	perChild := make([]int, scaleOutChildren)
	var early []string // runs of a killed child's task before its lease ended
	var child int
	_, err = pgx.ForEachRow(rows, []any{&id, &child, &at}, func() error {
		runs[id]++
		where[id] = append(where[id], fmt.Sprintf("%d@%s", child, at.Format("15:04:05.000")))
		perChild[child]++
		if end, ok := held[id]; ok && child != scaleOutVictim && at.Before(end) {
			early = append(early, fmt.Sprintf("%s ran in child %d at %s, lease ended at %s", id, child, at.Format("15:04:05.000"), end.Format("15:04:05.000")))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var lost, unknown, unheld, thrice []string
	for id := range enqueued {
		if runs[id] == 0 {
			lost = append(lost, id)
		}
	}
	var dups int
	for id, n := range runs {
		switch {
		case !enqueued[id]:
			unknown = append(unknown, id)
		case n > 1 && held[id].IsZero():
			unheld = append(unheld, fmt.Sprintf("%s ran at child@time %v", id, where[id]))
		case n > 2:
			thrice = append(thrice, fmt.Sprintf("%s ran at child@time %v", id, where[id]))
		}
		dups += n - 1
	}
	someErrors(t, "enqueued tasks never completed", lost)
	someErrors(t, "tasks completed that were never enqueued", unknown)
	someErrors(t, "tasks ran twice that the killed child did not hold: only its leased tasks may; "+
		"a surviving child lost leases, so it or the database stalled for longer than the lease (see the children's logs)", unheld)
	someErrors(t, "tasks of the killed child ran elsewhere before its lease ended", early)
	someErrors(t, "tasks ran more than twice: one kill may run a task twice at most", thrice)
	if dups > len(held) {
		t.Errorf("%d duplicate runs, more than the %d tasks the killed child held", dups, len(held))
	}
	t.Logf("scale-out: %d tasks on %d processes in %.1fs; one SIGKILLed holding %d leases (%d workers + %d queued, plus unflushed acks); %d duplicate runs; runs per process %v",
		len(runs), scaleOutChildren, elapsed.Seconds(), len(held), scaleOutWorkers, scaleOutQueueSize, dups, perChild)
}

// someErrors fails the test with how many items there are and the first
// few of them, if there are any.
func someErrors(t *testing.T, what string, items []string) {
	t.Helper()
	if len(items) == 0 {
		return
	}
	t.Errorf("%d %s; the first: %v", len(items), what, items[:min(len(items), 5)])
}

// scaleOutChild is one re-executed test binary running a processor.
type scaleOutChild struct {
	orders scaleOutOrders
	cmd    *exec.Cmd
	out    *bytes.Buffer // stdout and stderr; read only after done
	done   chan error    // receives cmd.Wait's result
	exited bool          // done has been received from
}

// startScaleOutChild starts the test binary again, running only
// TestScaleOutHelper with o. The child is killed when the test ends if it
// is still running.
func startScaleOutChild(t *testing.T, o scaleOutOrders) *scaleOutChild {
	t.Helper()
	orders, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	c := &scaleOutChild{orders: o, out: new(bytes.Buffer), done: make(chan error, 1)}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestScaleOutHelper$", "-test.count=1", "-test.v=false")
	c.cmd.Env = append(os.Environ(), scaleOutEnv+"="+string(orders))
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		if !c.exited {
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("child %d (%s) output:\n%s", o.Child, o.Name, c.out.String())
		}
	})
	return c
}

// TestScaleOutHelper is a child process of TestScaleOut: it runs a
// processor on the queue it is given until SIGTERM. Run alone, it skips.
func TestScaleOutHelper(t *testing.T) {
	env := os.Getenv(scaleOutEnv)
	if env == "" {
		t.Skip("runs only as a child process of TestScaleOut")
	}
	var o scaleOutOrders
	if err := json.Unmarshal([]byte(env), &o); err != nil {
		t.Fatalf("%s holds bad orders: %v", scaleOutEnv, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	cfg, err := pgxpool.ParseConfig(testenv.URL(t, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = o.App
	// A record must outlive this process, not the database: committing
	// without waiting for the disk keeps busy disks from stalling runs.
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(pool, Config{Schema: o.Schema, Queue: o.Queue, Lease: scaleOutLease, RescueInterval: scaleOutRescue, Name: o.Name, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	p, err := peonify.New(peonify.Config{
		Workers:       scaleOutWorkers,
		QueueSize:     scaleOutQueueSize,
		ShutdownGrace: scaleOutGrace,
		Logger:        logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	record := "INSERT INTO " + o.Table + " (task_id, child) VALUES ($1, $2)"
	handler := peonify.HandlerFunc(func(ctx context.Context, tk *peonify.Task) error {
		time.Sleep(rand.N(time.Millisecond)) // a little work
		_, err := pool.Exec(ctx, record, tk.ID, o.Child)
		return err
	})
	if err := p.AddTaskList(peonify.TaskList{"scaleout": handler}); err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(s); err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond, which reads state outside the test process, until
// it reports done; if within passes first, it fails the test with the
// state cond last described.
func waitUntil(t *testing.T, what string, within time.Duration, cond func() (done bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		done, state := cond()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting %s for %s: %s", within, what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
