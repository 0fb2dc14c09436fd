package amqpstream

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// scaleEnv makes the test binary a child of TestScaleOut. Its value is
// "<queue> <dir> <n>": the queue, the directory of the logs, and the
// child's number.
const scaleEnv = "AMQPSTREAM_SCALE_CHILD"

// TestScaleOut drains 20,000 tasks with 4 processor processes on one
// queue and SIGKILLs one of them mid-run. Every task must complete, and the
// tasks completed twice must be no more than the killed process held
// (its prefetch: tasks it had received and not acked).
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills child processes; skipped with -short")
	}
	const n, children = 20000, 4
	s := newTestStream(t, Config{})
	dir := t.TempDir()
	ctx := ctxT(t)
	for i := 0; i < n; i += 1000 {
		batch := make([]*peonify.Task, 1000)
		for j := range batch {
			batch[j] = &peonify.Task{ID: fmt.Sprintf("task-%05d", i+j), Type: "scale"}
		}
		mustEnqueue(t, s, batch...)
	}

	start := time.Now()
	cmds := make([]*exec.Cmd, children)
	for i := range cmds {
		cmds[i] = startChild(t, s.Queue(), dir, i)
	}
	t.Cleanup(func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})

	// Kill child 0 once a quarter of the tasks are done.
	for completed(t, dir, children) < n/4 {
		waitFor(t, start, 60*time.Second, "a quarter of the tasks")
	}
	if err := cmds[0].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmds[0].Wait()
	killedAt := time.Now()
	held := readPrefetch(t, dir, 0)

	for {
		runs, distinct := tally(t, dir, children)
		if distinct == n {
			took := time.Since(start)
			for _, c := range cmds[1:] {
				_ = c.Process.Signal(syscall.SIGTERM)
			}
			for _, c := range cmds[1:] {
				if err := c.Wait(); err != nil {
					t.Errorf("child exited with %v after SIGTERM:\n%s", err, c.Stderr)
				}
			}
			dups := runs - distinct
			t.Logf("%d processes drained %d tasks in %s (%.0f tasks/s); child 0 was killed after %s holding up to %d tasks; %d tasks ran twice",
				children, n, took.Round(time.Millisecond), float64(n)/took.Seconds(), killedAt.Sub(start).Round(time.Millisecond), held, dups)
			if dups > held {
				t.Errorf("%d tasks ran twice, more than the %d the killed process could hold", dups, held)
			}
			break
		}
		waitFor(t, start, 60*time.Second, fmt.Sprintf("all tasks (%d of %d done)", distinct, n))
	}
	counts, err := s.Inspector().Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts[peonify.StatePending] != 0 || counts[peonify.StateDead] != 0 || counts[peonify.StateScheduled] != 0 {
		t.Errorf("after the drain the queues hold %v, want nothing", counts)
	}
}

// waitFor sleeps a little, failing the test once limit has passed since
// start.
func waitFor(t *testing.T, start time.Time, limit time.Duration, what string) {
	t.Helper()
	if time.Since(start) > limit {
		t.Fatalf("waited %s for %s", limit, what)
	}
	time.Sleep(20 * time.Millisecond)
}

func startChild(t *testing.T, queue, dir string, i int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleChild$", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", scaleEnv, queue, dir, i))
	cmd.Stderr = new(bytes.Buffer)
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// completed counts completion lines in every child's log.
func completed(t *testing.T, dir string, children int) int {
	runs, _ := tally(t, dir, children)
	return runs
}

// tally returns the completions logged by the children and the distinct
// tasks among them.
func tally(t *testing.T, dir string, children int) (runs, distinct int) {
	t.Helper()
	seen := make(map[string]bool)
	for i := range children {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("done-%d.log", i)))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line != "" {
				runs++
				seen[line] = true
			}
		}
	}
	return runs, len(seen)
}

// readPrefetch returns the largest prefetch count child i reported.
func readPrefetch(t *testing.T, dir string, i int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("prefetch-%d.log", i)))
	if err != nil {
		t.Fatal(err)
	}
	high := 0
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			high = max(high, n)
		}
	}
	return high
}

// prefetch returns the stream's current prefetch count, 0 before it
// consumes.
func (s *Stream) prefetch() int {
	s.mu.Lock()
	ss := s.cur
	s.mu.Unlock()
	if ss == nil {
		return 0
	}
	ss.consMu.Lock()
	c := ss.cons
	ss.consMu.Unlock()
	if c == nil {
		return 0
	}
	c.setup.Lock()
	defer c.setup.Unlock()
	return c.prefetch
}

// TestScaleChild is the processor process that TestScaleOut starts. It
// logs each task it completes, and every prefetch count its stream
// reaches, then runs until SIGTERM or SIGKILL.
func TestScaleChild(t *testing.T) {
	env := os.Getenv(scaleEnv)
	if env == "" {
		t.Skip("runs only as a child process of TestScaleOut")
	}
	var (
		queue, dir string
		i          int
	)
	if _, err := fmt.Sscanf(env, "%s %s %d", &queue, &dir, &i); err != nil {
		t.Fatalf("bad %s=%q: %v", scaleEnv, env, err)
	}
	open := func(name string) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, i)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	done, prefetch := open("done"), open("prefetch")
	s, err := New(testURL(t), Config{Queue: queue, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := peonify.New(peonify.Config{Workers: 16, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // one write per line, unbuffered, so a kill loses none
	err = p.AddTaskList(peonify.TaskList{"scale": peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
		mu.Lock()
		defer mu.Unlock()
		_, err := done.WriteString(tk.ID + "\n")
		return err
	})})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(s); err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { // report the prefetch before the stream can hold more
		last := 0
		for ctx.Err() == nil {
			if n := s.prefetch(); n != last {
				last = n
				_, _ = prefetch.WriteString(strconv.Itoa(n) + "\n")
			}
			time.Sleep(time.Millisecond)
		}
	})
	if err := p.Run(ctx); err != nil {
		t.Error(err)
	}
	stop()
	wg.Wait()
}
