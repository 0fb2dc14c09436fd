package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peonify/peonify/internal/executor"
	"github.com/peonify/peonify/internal/streamtest"
)

// bin is the peonify binary the tests run, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	if code, ok := executor.SupervisorMain(os.Args[1:]); ok { // as main does
		os.Exit(code)
	}
	dir, err := os.MkdirTemp("", "peonify-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "peonify")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...) // go test puts its own go first in PATH
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the peonify binary:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	if raceEnabled {
		// A race-enabled program sleeps a second at exit by default.
		os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(dir) }))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// result is what a run of the binary produced.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runLimit is how long run waits for the binary before it calls it hung.
// A race-enabled binary needs several times the CPU of a plain one: it
// spent 19 CPU seconds storing TestEnqueueJSONLLongLines's two 17 MiB
// lines in SQLite (1.6 without the race detector), which on a machine
// loaded with other builds took 2 minutes.
func runLimit() time.Duration {
	if raceEnabled {
		return 5 * time.Minute
	}
	return 60 * time.Second
}

// run runs the binary in dir with args and stdin, and waits for it.
func run(t *testing.T, dir, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Start()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(runLimit()):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("peonify %s did not finish within %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), runLimit(), &out, &errb)
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	if strings.Contains(r.stderr, "WARNING: DATA RACE") {
		t.Errorf("peonify %s had a data race:\n%s", strings.Join(args, " "), r.stderr)
	}
	var xe *exec.ExitError
	switch {
	case errors.As(err, &xe):
		r.code = xe.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// mustRun runs the binary and fails the test unless it exits with 0.
func mustRun(t *testing.T, dir, stdin string, args ...string) result {
	t.Helper()
	r := run(t, dir, stdin, args...)
	if r.code != 0 {
		t.Fatalf("peonify %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// daemonProc is a `peonify run` in the background.
type daemonProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *streamtest.SyncBuffer
	exited chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's error; read after exited is closed
}

// startDaemon starts `peonify run -c config` in dir.
func startDaemon(t *testing.T, dir, config string, env ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{t: t, stderr: new(streamtest.SyncBuffer), exited: make(chan struct{})}
	d.cmd = exec.Command(bin, "run", "-c", config)
	d.cmd.Dir = dir
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout = io.Discard
	d.cmd.Stderr = d.stderr
	d.cmd.WaitDelay = 5 * time.Second
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
		d.checkRace()
	})
	return d
}

// stop sends SIGTERM and returns the exit status and the log.
func (d *daemonProc) stop() (int, string) {
	d.t.Helper()
	select {
	case <-d.exited:
		d.t.Fatalf("peonify run had exited before SIGTERM (%v); log:\n%s", d.err, d.stderr)
	default:
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	select {
	case <-d.exited:
		var xe *exec.ExitError
		if errors.As(d.err, &xe) {
			return xe.ExitCode(), d.stderr.String()
		}
		if d.err != nil {
			d.t.Fatal(d.err)
		}
		return 0, d.stderr.String()
	case <-time.After(30 * time.Second):
		d.t.Fatalf("peonify run did not exit within 30s of SIGTERM; log:\n%s", d.stderr)
		return 0, ""
	}
}

// checkRace fails the test if the daemon reported a data race.
func (d *daemonProc) checkRace() {
	if log := d.stderr.String(); strings.Contains(log, "WARNING: DATA RACE") {
		d.t.Errorf("peonify run had a data race:\n%s", log)
	}
}

// waitLog waits until the daemon's log contains s, and fails at once if
// the daemon exits first.
func (d *daemonProc) waitLog(s string) {
	d.t.Helper()
	waitFor(d.t, "the log to contain "+s, func() bool {
		if strings.Contains(d.stderr.String(), s) {
			return true
		}
		select {
		case <-d.exited:
			d.t.Fatalf("peonify run exited (%v) before its log said %q; log:\n%s", d.err, s, d.stderr)
		default:
		}
		return false
	}, d.stderr)
}

// waitFor polls cond until it holds or 20s pass.
func waitFor(t *testing.T, what string, cond func() bool, log fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			msg := "timed out waiting for " + what
			if log != nil {
				msg += "\nlog:\n" + log.String()
			}
			t.Fatal(msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quickStop is the processor section of the daemons that the tests run on
// a store of each kind: on SIGTERM, a running task has 1s to finish and
// the daemon 5s to stop.
const quickStop = `
processor:
  shutdown_grace: 1s
  shutdown_timeout: 5s
`

// newMarksDir returns a new directory that holds config as peonify.yaml and
// an empty marks/, where the mark tasks of the tests' files write.
func newMarksDir(t *testing.T, config string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "marks"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "peonify.yaml", config)
	return dir
}

// writeFile writes a file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
