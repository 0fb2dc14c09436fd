package redisstream

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// scaleEnv makes the test binary a child of TestScaleOut. Its value is
// "<prefix> <dir> <n>": the queue's key prefix, the directory of the logs,
// and the child's number, which names its consumer and its log.
const scaleEnv = "REDISSTREAM_SCALE_CHILD"

// scaleLease is the lease of the children: the tasks of the killed child
// come back after it.
const scaleLease = time.Second

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
	ctx := ctxT(t)
	for i := 0; i < n; i += 1000 {
		batch := make([]*peonify.Task, 0, 1000)
		for j := i; j < min(i+1000, n); j++ {
			batch = append(batch, &peonify.Task{ID: "t" + strconv.Itoa(j), Type: "scale"})
		}
		mustEnqueue(t, s, batch...)
	}

	dir := t.TempDir()
	start := time.Now()
	children := make([]*exec.Cmd, 4)
	for i := range children {
		children[i] = startScaleChild(t, prefix, dir, i)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, cmd := range children {
			_ = cmd.Process.Signal(syscall.SIGKILL)
		}
		wg.Wait()
	})
	exited := make([]chan error, len(children))
	for i, cmd := range children {
		exited[i] = make(chan error, 1)
		wg.Go(func() { exited[i] <- cmd.Wait() })
	}

	// Kill child 0 once a quarter of the tasks are done, and see how
	// many tasks it held.
	completed := func() int {
		total := 0
		for i := range children {
			total += len(readLog(t, filepath.Join(dir, fmt.Sprintf("done-%d.log", i))))
		}
		return total
	}
	deadline := time.Now().Add(60 * time.Second)
	for completed() < n/4 {
		if time.Now().After(deadline) {
			t.Fatalf("the children completed %d tasks in 60s\n%s", completed(), children[0].Stdout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := children[0].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited[0]
	held := int64(0)
	cs, err := c.XInfoConsumers(ctx, s.Keys().Stream, Group).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range cs {
		if info.Name == "child-0" {
			held = info.Pending
		}
	}
	t.Logf("killed child 0 after %d completions; it held %d tasks", completed(), held)

	// The others drain the rest, the killed child's tasks included once
	// its lease ends, and exit when the queue is empty.
	for i := 1; i < len(children); i++ {
		select {
		case err := <-exited[i]:
			if err != nil {
				t.Fatalf("child %d: %v\n%s", i, err, children[i].Stdout)
			}
		case <-time.After(time.Until(deadline)):
			t.Fatalf("child %d did not finish within 60s\n%s", i, children[i].Stdout)
		}
	}
	elapsed := time.Since(start)

	runs := make(map[string]int, n)
	total := 0
	for i := range children {
		for _, id := range readLog(t, filepath.Join(dir, fmt.Sprintf("done-%d.log", i))) {
			runs[id]++
			total++
		}
	}
	lost := 0
	for i := range n {
		if runs["t"+strconv.Itoa(i)] == 0 {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d tasks were never completed", lost, n)
	}
	dups := total - len(runs)
	t.Logf("%d tasks drained by 4 processes (one killed) in %s: %d completions, %d repeats", n, elapsed.Round(time.Millisecond), total, dups)
	if int64(dups) > held {
		t.Errorf("%d tasks ran twice, but the killed process held only %d", dups, held)
	}
	wantCounts(t, s, map[peonify.State]int{})
}

func startScaleChild(t *testing.T, prefix, dir string, n int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleOutChild$", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", scaleEnv, prefix, dir, n))
	cmd.Stdout = new(bytes.Buffer)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// TestScaleOutChild is a processor process of TestScaleOut: it runs until
// the queue is empty, logging each task it completes.
func TestScaleOutChild(t *testing.T) {
	env := os.Getenv(scaleEnv)
	if env == "" {
		t.Skip("runs only as a child process of TestScaleOut")
	}
	var (
		prefix, dir string
		n           int
	)
	if _, err := fmt.Sscanf(env, "%s %s %d", &prefix, &dir, &n); err != nil {
		t.Fatalf("bad %s=%q: %v", scaleEnv, env, err)
	}
	opts, err := redis.ParseURL(testenv.URL(t, "redis"))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	s, err := New(c, Config{Prefix: prefix, Consumer: "child-" + strconv.Itoa(n), Lease: scaleLease, RescueInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	log, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("done-%d.log", n)), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()

	p, err := peonify.New(peonify.Config{Workers: 8, QueueSize: 64, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{"scale": peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
		_, err := log.WriteString(tk.ID + "\n") // one write: a kill leaves no partial line
		return err
	})})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(s); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		// Stop once nothing is left anywhere, leased tasks included.
		for ctx.Err() == nil {
			if c, err := s.Counts(ctx); err == nil && c[peonify.StatePending]+c[peonify.StateRunning]+c[peonify.StateScheduled] == 0 {
				cancel()
				return
			}
			sleep(ctx, 50*time.Millisecond)
		}
	})
	if err := p.Run(ctx); err != nil { // closes s
		t.Errorf("run: %v", err)
	}
	cancel()
	wg.Wait()
}

// readLog returns the lines of a log, or none if it does not exist yet.
func readLog(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			lines = append(lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}
