//go:build unix

package executor

import (
	"errors"
	"os"
	"path/filepath"
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

func TestExecPassesPayloadAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	e := newExec(t, ExecConfig{
		Shell: `cat > "$PEONIFY_TASK_ID.in"; printf '%s %s %s %s' "$PEONIFY_TASK_TYPE" "$PEONIFY_TASK_ATTEMPT" "$GREETING" "$PEONIFY_TASK_HEADERS" > "$PEONIFY_TASK_ID.env"`,
		Dir:   dir,
		Env:   map[string]string{"GREETING": "hello"},
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
	e := newExec(t, ExecConfig{Command: []string{"sh", "-c", `echo noise; i=0; while [ $i -lt 500 ]; do echo "line $i" >&2; i=$((i+1)); done; echo "disk full" >&2; exit 3`}})
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

func TestExecDeadExitCode(t *testing.T) {
	e := newExec(t, ExecConfig{Shell: "echo bad input >&2; exit 65", DeadExitCodes: []int{65}})
	ev := outcome(t, e, &peonify.Task{Type: "job"})
	if ev.Kind != peonify.EventDead || !strings.Contains(ev.Err.Error(), "status 65") {
		t.Fatalf("outcome %s (%v), want dead with status 65", ev.Kind, ev.Err)
	}
}

// A timeout stops the command and every process it started, even one
// that ignores SIGTERM.
func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	e := newExec(t, ExecConfig{
		Shell:     `trap '' TERM; sh -c 'trap "" TERM; sleep 60' & echo $! > child.pid; wait`,
		Dir:       dir,
		Timeout:   200 * time.Millisecond,
		KillGrace: 100 * time.Millisecond,
	})
	start := time.Now()
	ev := outcome(t, e, &peonify.Task{Type: "job"})
	if ev.Kind != peonify.EventRetried || !strings.Contains(ev.Err.Error(), "ran longer than its timeout (200ms)") {
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
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("child %d of the command is still alive", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
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
