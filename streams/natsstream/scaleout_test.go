package natsstream

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/testenv"
)

// scaleEnv makes the test binary a processor of TestScaleOut. Its value is
// "<stream> <subject> <completions log> <acks log>".
const scaleEnv = "NATSSTREAM_SCALEOUT_CHILD"

// The scale-out processors.
const (
	scaleTasks   = 20000
	scaleWorkers = 8
	scaleQueue   = 8
	scaleAckWait = 2 * time.Second
	idLen        = len("t-00000\n")
)

// TestScaleOut drains 20,000 tasks with four processor processes sharing
// the stream's consumer, and SIGKILLs one of them mid-run. Every task must
// be completed and the stream must end empty. The only tasks that may run
// twice are those the killed process held: completed by it but not yet
// acknowledged, as its acks log shows.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes; skipped with -short")
	}
	js := testJS(t)
	s, cfg := newTestStream(t, js, Config{AckWait: scaleAckWait})
	for lo := 0; lo < scaleTasks; lo += 1000 {
		var batch []*peonify.Task
		for i := lo; i < lo+1000; i++ {
			batch = append(batch, &peonify.Task{ID: fmt.Sprintf("t-%05d", i), Type: "scale"})
		}
		mustEnqueue(t, s, batch...)
	}

	dir := t.TempDir()
	logs := make([]string, 4)
	acks := make([]string, 4)
	cmds := make([]*exec.Cmd, 4)
	for i := range cmds {
		logs[i] = filepath.Join(dir, fmt.Sprintf("done-%d.log", i))
		acks[i] = filepath.Join(dir, fmt.Sprintf("acked-%d.log", i))
		cmds[i] = exec.Command(os.Args[0], "-test.run=^TestScaleOutChild$", "-test.count=1", "-test.timeout=2m")
		cmds[i].Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %s", scaleEnv, cfg.Stream, cfg.Subject, logs[i], acks[i]))
		cmds[i].Stderr = new(bytes.Buffer)
		cmds[i].Stdout = cmds[i].Stderr
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	exited := make([]chan error, len(cmds))
	for i, cmd := range cmds {
		exited[i] = make(chan error, 1)
		go func() { exited[i] <- cmd.Wait() }()
	}
	t.Cleanup(func() {
		for i, cmd := range cmds {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited[i]
		}
	})
	total := func() int {
		n := 0
		for _, l := range logs {
			n += int(fileSize(l)) / idLen
		}
		return n
	}

	start := time.Now()
	waitFor(t, 60*time.Second, "a quarter of the tasks completed", func() bool { return total() >= scaleTasks/4 })
	time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond) // a random moment of the run
	if err := cmds[0].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited[0]
	exited[0] <- nil // for the cleanup
	killedAt := time.Now()

	// The claims of the killed process come back after their AckWait;
	// wait until they are done too and the stream is empty.
	completions := make(map[string]int, scaleTasks)
	ctx := ctxT(t)
	waitFor(t, 60*time.Second, "every task completed and the stream empty", func() bool {
		clear(completions)
		for _, l := range logs {
			for _, id := range readLines(t, l) {
				completions[id]++
			}
		}
		if len(completions) < scaleTasks {
			return false
		}
		counts, err := s.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return counts[peonify.StatePending]+counts[peonify.StateRunning]+counts[peonify.StateScheduled] == 0
	})
	took := time.Since(start)
	for i := 1; i < len(cmds); i++ {
		if err := cmds[i].Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < len(cmds); i++ {
		select {
		case err := <-exited[i]:
			if err != nil {
				t.Errorf("processor %d: %v\n%s", i, err, cmds[i].Stderr)
			}
			exited[i] <- nil
		case <-time.After(30 * time.Second):
			t.Fatalf("processor %d did not stop within 30s of SIGTERM", i)
		}
	}

	// The killed process held the tasks it completed without its Ack
	// returning, and those it had not finished (which, not logged, cannot
	// show as repeats).
	held := make(map[string]bool)
	for _, id := range readLines(t, logs[0]) {
		held[id] = true
	}
	for _, id := range readLines(t, acks[0]) {
		delete(held, id)
	}
	repeats := 0
	for id, n := range completions {
		if n == 1 {
			continue
		}
		repeats += n - 1
		if n > 2 || !held[id] {
			t.Errorf("task %s completed %d times, but the killed process did not hold it unacknowledged", id, n)
		}
	}
	t.Logf("4 processes drained %d tasks in %s (one SIGKILLed after %s, holding %d completed tasks unacknowledged); %d repeats",
		scaleTasks, took.Round(time.Millisecond), killedAt.Sub(start).Round(time.Millisecond), len(held), repeats)
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []peonify.State{peonify.StatePending, peonify.StateRunning, peonify.StateScheduled, peonify.StateDead} {
		if counts[st] != 0 {
			t.Errorf("after the drain the stream has %d %s tasks, want none", counts[st], st)
		}
	}
}

// TestScaleOutChild is one processor process of TestScaleOut: it runs until
// SIGTERM (or SIGKILL), logging each task it completes.
func TestScaleOutChild(t *testing.T) {
	env := os.Getenv(scaleEnv)
	if env == "" {
		t.Skip("runs only as a child process of TestScaleOut")
	}
	var stream, subject, logPath, ackPath string
	if _, err := fmt.Sscanf(env, "%s %s %s %s", &stream, &subject, &logPath, &ackPath); err != nil {
		t.Fatalf("bad %s=%q: %v", scaleEnv, env, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(testenv.URL(t, "nats"), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(js, Config{Stream: stream, Subject: subject, AckWait: scaleAckWait, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	done := openLog(t, logPath)
	p, err := peonify.New(peonify.Config{Workers: scaleWorkers, QueueSize: scaleQueue, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{"scale": peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
		_, err := done.WriteString(tk.ID + "\n") // one append per task: a kill never cuts a line
		return err
	})})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(&ackLogged{Stream: s, log: openLog(t, ackPath)}); err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// ackLogged logs the IDs of the deliveries whose Ack returned nil.
type ackLogged struct {
	*Stream
	log *os.File
}

func (a *ackLogged) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	if err := a.Stream.Ack(ctx, ds...); err != nil {
		return err
	}
	var b strings.Builder
	for _, d := range ds {
		b.WriteString(d.Task.ID + "\n")
	}
	_, err := a.log.WriteString(b.String())
	return err
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func openLog(t *testing.T, path string) *os.File {
	t.Helper()
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

// readLines returns the complete lines of a log.
func readLines(t *testing.T, path string) []string {
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
