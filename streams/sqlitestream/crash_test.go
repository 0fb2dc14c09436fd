package sqlitestream

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// crashEnv makes the test binary a child of TestCrash. Its value is
// "<dir> <mode> <run>": the directory with the database and the logs,
// "work" (enqueue and process until killed) or "drain" (process until
// nothing is left, then exit), and a number naming this child's tasks.
const crashEnv = "SQLITESTREAM_CRASH_CHILD"

// The lease of the crash children: the tasks of a killed child come back
// after it.
const crashLease = 300 * time.Millisecond

// TestCrash kills processes that enqueue and process tasks with SIGKILL,
// several times, sometimes two at once on the same file, then lets a last
// process drain the store. Every task whose Enqueue returned must have been
// completed at least once, and the store must end empty: no task is lost to
// a crash, and every lease held by a dead process ends.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes; skipped with -short")
	}
	dir := t.TempDir()
	rounds := 5
	if raceEnabled {
		rounds = 3
	}
	completed := filepath.Join(dir, "completed.log")
	run := 0
	for round := range rounds {
		children := 1 + round%2 // every other round, two processes share the file
		var cmds []*exec.Cmd
		for range children {
			run++
			cmds = append(cmds, startCrashChild(t, dir, "work", run))
		}
		// Let them work for a while, then kill them mid-run.
		before := fileSize(completed)
		deadline := time.Now().Add(30 * time.Second)
		for fileSize(completed) < before+2000 { // about 200 completions
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the children completed nothing within 30s", round)
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rand.IntN(50)) * time.Millisecond) // a random moment of the run
		for _, cmd := range cmds {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
		}
	}

	drain := startCrashChild(t, dir, "drain", 0)
	done := make(chan error, 1)
	go func() { done <- drain.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("drain process: %v\n%s", err, drain.Stderr)
		}
	case <-time.After(60 * time.Second):
		_ = drain.Process.Signal(syscall.SIGKILL)
		<-done
		t.Fatalf("drain process did not finish within 60s\n%s", drain.Stderr)
	}

	enqueued := readLines(t, filepath.Join(dir, "enqueued.log"))
	completions := readLines(t, completed)
	done1 := make(map[string]int, len(completions))
	for _, id := range completions {
		done1[id]++
	}
	var lost []string
	for _, id := range enqueued {
		if done1[id] == 0 {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d enqueued tasks were never completed, e.g. %v", len(lost), len(enqueued), lost[:min(len(lost), 10)])
	}
	dups := len(completions) - len(done1)
	t.Logf("%d rounds: %d tasks enqueued, %d completions, %d of them repeats of tasks in flight at a kill",
		rounds, len(enqueued), len(completions), dups)

	s := openFile(t, filepath.Join(dir, "tasks.db"), Config{}, nil)
	wantCounts(t, s, nil)
}

func startCrashChild(t *testing.T, dir, mode string, run int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", crashEnv, dir, mode, run))
	cmd.Stderr = new(bytes.Buffer)
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// TestCrashChild is the process that TestCrash starts and kills.
func TestCrashChild(t *testing.T) {
	env := os.Getenv(crashEnv)
	if env == "" {
		t.Skip("runs only as a child process of TestCrash")
	}
	var (
		dir, mode string
		run       int
	)
	if _, err := fmt.Sscanf(env, "%s %s %d", &dir, &mode, &run); err != nil {
		t.Fatalf("bad %s=%q: %v", crashEnv, env, err)
	}
	s, err := Open(filepath.Join(dir, "tasks.db"), Config{Lease: crashLease, BusyTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	enqueued := openLog(t, filepath.Join(dir, "enqueued.log"))
	completed := openLog(t, filepath.Join(dir, "completed.log"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var wg sync.WaitGroup
	if mode == "work" {
		// Produce until killed, in batches of 1 to 5 tasks; log each task
		// only after Enqueue returned.
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; {
				var batch []*peonify.Task
				for range 1 + rand.IntN(5) {
					batch = append(batch, &peonify.Task{ID: fmt.Sprintf("r%d-%d", run, i), Type: "crash"})
					i++
				}
				if err := s.Enqueue(ctx, batch...); err != nil {
					t.Errorf("enqueue: %v", err)
					return
				}
				var ids strings.Builder
				for _, tk := range batch {
					ids.WriteString(tk.ID + "\n")
				}
				if _, err := enqueued.WriteString(ids.String()); err != nil {
					t.Errorf("log: %v", err)
					return
				}
			}
		})
	}
	// Consume with a processor: the handler logs the task as completed
	// and returns, and the processor acks it.
	p, err := peonify.New(peonify.Config{
		Workers: 4,
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{"crash": peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
		_, err := completed.WriteString(tk.ID + "\n")
		return err
	})})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(s); err != nil {
		t.Fatal(err)
	}
	if mode == "drain" {
		// Stop once nothing is left, leased tasks included.
		wg.Go(func() {
			for !drained(t, s) {
				select {
				case <-ctx.Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
			cancel()
		})
	}
	if err := p.Run(ctx); err != nil { // closes s
		t.Errorf("run: %v", err)
	}
	cancel()
	wg.Wait()
}

// drained reports whether the store holds no task at all, leased ones
// included.
func drained(t *testing.T, s *Stream) bool {
	c, err := s.Counts(context.Background())
	if err != nil {
		t.Errorf("counts: %v", err)
		return true
	}
	return c[peonify.StatePending]+c[peonify.StateScheduled]+c[peonify.StateRunning] == 0
}

func openLog(t *testing.T, path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readLines returns the complete lines of a log; a write cut by a kill
// leaves no partial line, because each write is one append.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
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
