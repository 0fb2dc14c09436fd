//go:build unix

package executor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

func newExec(t *testing.T, cfg ExecConfig) *Exec {
	t.Helper()
	e, err := NewExec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// eachWay runs test with commands run directly and under a supervisor,
// which must not change what a command sees or what its end means.
func eachWay(t *testing.T, test func(t *testing.T, supervise bool)) {
	t.Run("direct", func(t *testing.T) { test(t, false) })
	t.Run("supervised", func(t *testing.T) { test(t, true) })
}

func TestExecPassesPayloadAndEnvironment(t *testing.T) {
	eachWay(t, testExecPassesPayloadAndEnvironment)
}

func testExecPassesPayloadAndEnvironment(t *testing.T, supervise bool) {
	dir := t.TempDir()
	e := newExec(t, ExecConfig{
		Shell:     `cat > "$PEONIFY_TASK_ID.in"; printf '%s %s %s %s' "$PEONIFY_TASK_TYPE" "$PEONIFY_TASK_ATTEMPT" "$GREETING" "$PEONIFY_TASK_HEADERS" > "$PEONIFY_TASK_ID.env"`,
		Dir:       dir,
		Env:       map[string]string{"GREETING": "hello"},
		Supervise: supervise,
	})
	ev := outcome(t, e, &peonify.Task{ID: "t1", Type: "resize", Payload: []byte(`{"w":64}`), Headers: map[string]string{"tenant": "acme"}})
	if ev.Kind != peonify.EventSucceeded {
		t.Fatalf("outcome %s (%v), want succeeded", ev.Kind, ev.Err)
	}
	in, _ := os.ReadFile(filepath.Join(dir, "t1.in"))
	env, _ := os.ReadFile(filepath.Join(dir, "t1.env"))
	if string(in) != `{"w":64}` {
		t.Errorf("stdin %q, want the payload", in)
	}
	if want := `resize 1 hello {"tenant":"acme"}`; string(env) != want {
		t.Errorf("environment %q, want %q", env, want)
	}
}

func TestExecFailureIsRetriedWithStderrTail(t *testing.T) {
	eachWay(t, testExecFailureIsRetriedWithStderrTail)
}

func testExecFailureIsRetriedWithStderrTail(t *testing.T, supervise bool) {
	e := newExec(t, ExecConfig{
		Command:   []string{"sh", "-c", `echo noise; i=0; while [ $i -lt 500 ]; do echo "line $i" >&2; i=$((i+1)); done; echo "disk full" >&2; exit 3`},
		Supervise: supervise,
	})
	ev := outcome(t, e, &peonify.Task{Type: "job"})
	if ev.Kind != peonify.EventRetried {
		t.Fatalf("outcome %s (%v), want retried", ev.Kind, ev.Err)
	}
	var xe *ExitError
	if !errors.As(ev.Err, &xe) || xe.Code != 3 {
		t.Fatalf("error %v, want an *ExitError with status 3", ev.Err)
	}
	msg := ev.Err.Error()
	if !strings.HasPrefix(msg, "command exited with status 3: …") || !strings.HasSuffix(msg, "line 499\ndisk full") {
		t.Errorf("error %q, want the status and the end of stderr", msg)
	}
	if len(xe.Stderr) > stderrTail+len("…") {
		t.Errorf("stderr tail is %d bytes, want at most %d", len(xe.Stderr), stderrTail)
	}
}

func TestExecDeadExitCode(t *testing.T) { eachWay(t, testExecDeadExitCode) }

func testExecDeadExitCode(t *testing.T, supervise bool) {
	e := newExec(t, ExecConfig{Shell: "echo bad input >&2; exit 65", DeadExitCodes: []int{65}, Supervise: supervise})
	ev := outcome(t, e, &peonify.Task{Type: "job"})
	if ev.Kind != peonify.EventDead || !strings.Contains(ev.Err.Error(), "status 65") {
		t.Fatalf("outcome %s (%v), want dead with status 65", ev.Kind, ev.Err)
	}
}

// A timeout stops the command and every process it started, even one
// that ignores SIGTERM.
func TestExecTimeoutKillsProcessGroup(t *testing.T) { eachWay(t, testExecTimeoutKillsProcessGroup) }

func testExecTimeoutKillsProcessGroup(t *testing.T, supervise bool) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	e := newExec(t, ExecConfig{
		Shell: `trap '' TERM; sh -c 'trap "" TERM; sleep 60' & echo $! > child.pid; wait`,
		Dir:   dir,
		// Long enough that a loaded machine starts the grandchild and
		// writes its pid before the timeout: at 200ms it once did not.
		Timeout:   time.Second,
		KillGrace: 100 * time.Millisecond,
		Supervise: supervise,
	})
	start := time.Now()
	ev := outcome(t, e, &peonify.Task{Type: "job"})
	if ev.Kind != peonify.EventRetried || !strings.Contains(ev.Err.Error(), "ran longer than its timeout (1s)") {
		t.Fatalf("outcome %s (%v), want retried after the timeout", ev.Kind, ev.Err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the run took %s; the command was not killed", took)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	waitDead(t, 5*time.Second, pid)
}

// When the task's context ends (a lost lease, the end of the shutdown
// grace period), the command and every process it started are stopped.
func TestExecCancelKillsProcessGroup(t *testing.T) { eachWay(t, testExecCancelKillsProcessGroup) }

func testExecCancelKillsProcessGroup(t *testing.T, supervise bool) {
	dir := t.TempDir()
	e := newExec(t, ExecConfig{
		Shell:     `sleep 60 & (sleep 60; :) & echo $$ $! > pids.tmp; mv pids.tmp pids; wait`,
		Dir:       dir,
		KillGrace: 100 * time.Millisecond,
		Supervise: supervise,
	})
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- e.Execute(ctx, &peonify.Task{ID: "c1", Type: "job"}) }()
	pids := readPids(t, filepath.Join(dir, "pids"), done)
	cancel(errors.New("lease lost"))
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Execute did not return within 10s of its context's end")
	}
	var xe *ExitError
	if !errors.As(err, &xe) || !strings.HasPrefix(err.Error(), "command stopped: lease lost") {
		t.Errorf("error %v, want the command stopped for the lost lease", err)
	}
	waitDead(t, 5*time.Second, pids...)
}

// A command that cannot start gives an error that says so, supervised or
// not.
func TestExecStartFailure(t *testing.T) { eachWay(t, testExecStartFailure) }

func testExecStartFailure(t *testing.T, supervise bool) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e := newExec(t, ExecConfig{Command: []string{prog}, Supervise: supervise})
	if err := os.Remove(prog); err != nil {
		t.Fatal(err)
	}
	err := e.Execute(context.Background(), &peonify.Task{ID: "s1", Type: "job"})
	if err == nil || !strings.HasPrefix(err.Error(), "start "+prog+": ") || !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "no such file") {
		t.Errorf("error %v, want start %s: …no such file", err, prog)
	}
}

// A supervisor killed on its own takes its command along, and the task
// fails rather than hangs or succeeds.
func TestExecSupervisorKilled(t *testing.T) {
	dir := t.TempDir()
	e := newExec(t, ExecConfig{
		Shell:     `sleep 60 & echo $PPID $$ $! > pids.tmp; mv pids.tmp pids; wait`,
		Dir:       dir,
		Supervise: true,
	})
	done := make(chan error, 1)
	go func() { done <- e.Execute(context.Background(), &peonify.Task{ID: "k1", Type: "job"}) }()
	pids := readPids(t, filepath.Join(dir, "pids"), done)
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Execute did not return within 10s of its supervisor's death")
	}
	if err == nil || !strings.Contains(err.Error(), "its supervisor ended without saying how the command did") {
		t.Errorf("error %v, want the supervisor's death", err)
	}
	waitDead(t, 5*time.Second, pids[1:]...)
}

// readPids waits for a command to write the file of its process IDs, and
// fails the test if the command ends first (done).
func readPids(t *testing.T, file string, done <-chan error) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(file); err == nil {
			var pids []int
			for _, f := range strings.Fields(string(b)) {
				pid, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("%s holds %q", file, b)
				}
				pids = append(pids, pid)
			}
			return pids
		}
		select {
		case err := <-done:
			t.Fatalf("the command ended (%v) before writing %s", err, file)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command wrote no %s within 10s", file)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitDead waits until none of pids runs, and fails the test, after
// killing them, if one still does after within.
func waitDead(t *testing.T, within time.Duration, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var live []int
		for _, pid := range pids {
			if running(pid) {
				live = append(live, pid)
			}
		}
		if len(live) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range live {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("processes %v of the command still run after %s", live, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// running reports whether process pid exists and is not a zombie.
func running(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist) || runtime.GOOS != "linux"
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func TestNewExecRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.txt")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg   ExecConfig
		field string
	}{
		{ExecConfig{}, "command"},
		{ExecConfig{Command: []string{"sh"}, Shell: "true"}, "shell"},
		{ExecConfig{Command: []string{""}}, "command"},
		{ExecConfig{Command: []string{"no-such-program-peonify"}}, "command"},
		{ExecConfig{Command: []string{"./plain.txt"}, Dir: dir}, "command"},
		{ExecConfig{Command: []string{"./missing"}, Dir: dir}, "command"},
		{ExecConfig{Command: []string{"sh"}, Dir: plain}, "dir"},
		{ExecConfig{Command: []string{"sh"}, Timeout: -1}, "timeout"},
		{ExecConfig{Command: []string{"sh"}, KillGrace: -1}, "kill_grace"},
		{ExecConfig{Command: []string{"sh"}, Env: map[string]string{"A=B": "c"}}, "env"},
	} {
		_, err := NewExec(tc.cfg)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("NewExec(%+v) = %v, want a FieldError for %s", tc.cfg, err, tc.field)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	var b tailBuffer
	b.Write([]byte("first\n"))
	if got := b.String(); got != "first" {
		t.Errorf("short tail %q", got)
	}
	b.Write([]byte(strings.Repeat("x", stderrTail) + "\nlast line\n"))
	got := b.String()
	if !strings.HasPrefix(got, "…") || !strings.HasSuffix(got, "last line") || len(got) > stderrTail+len("…") {
		t.Errorf("long tail %q…", got[:min(len(got), 40)])
	}
}

// With StdoutResult the command's output is the task's result; without,
// it is dropped; more than a result can be kills the task on a store that
// keeps results, but not elsewhere.
func TestExecStdoutResult(t *testing.T) { eachWay(t, testExecStdoutResult) }

func testExecStdoutResult(t *testing.T, supervise bool) {
	task := func() *peonify.Task { return &peonify.Task{Type: "resize", Payload: []byte(`{"w":64}`)} }
	e, res := run(t, newExec(t, ExecConfig{Shell: `cat; printf ' done'`, StdoutResult: true, Supervise: supervise}), task(), false)
	if e.Kind != peonify.EventSucceeded || string(res) != `{"w":64} done` {
		t.Errorf("stdout result: %s (%v), result %q", e.Kind, e.Err, res)
	}
	if e, res := run(t, newExec(t, ExecConfig{Shell: `cat`, Supervise: supervise}), task(), false); e.Kind != peonify.EventSucceeded || res != nil {
		t.Errorf("without StdoutResult: %s (%v), result %q, want none", e.Kind, e.Err, res)
	}
	if e, res := run(t, newExec(t, ExecConfig{Shell: `true`, StdoutResult: true, Supervise: supervise}), task(), false); e.Kind != peonify.EventSucceeded || res != nil {
		t.Errorf("no output: %s (%v), result %q, want none", e.Kind, e.Err, res)
	}
	big := fmt.Sprintf(`head -c %d /dev/zero`, peonify.MaxResultLen+1)
	e, _ = run(t, newExec(t, ExecConfig{Shell: big, StdoutResult: true, Supervise: supervise}), task(), false)
	if e.Kind != peonify.EventDead || !strings.Contains(e.Err.Error(), "printed 1048577 bytes, more than a task result can be") {
		t.Errorf("too much output: %s (%v), want dead with the reason", e.Kind, e.Err)
	}
	if e, _ := run(t, newExec(t, ExecConfig{Shell: big, StdoutResult: true, Supervise: supervise}), task(), true); e.Kind != peonify.EventSucceeded {
		t.Errorf("too much output on a store without results: %s (%v), want succeeded", e.Kind, e.Err)
	}
	if e, _ := run(t, newExec(t, ExecConfig{Shell: `echo partial; exit 3`, StdoutResult: true, Supervise: supervise}), task(), false); e.Kind != peonify.EventRetried {
		t.Errorf("a failed command with output: %s (%v), want retried", e.Kind, e.Err)
	}
}
