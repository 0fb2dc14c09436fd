//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/streamtest"
)

// When the daemon dies by SIGKILL, the processes of the exec tasks it was
// running die with it, grandchildren included, instead of running on
// beside the next attempt of the same task once its lease ends.
func TestRunKilledTakesExecTasksAlong(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "peonify.yaml", `
streams:
  - kind: sqlite
    path: store.db
tasks:
  family:
    executor: exec
    # A child, and a subshell with a child of its own; "started" once all run.
    shell: 'sleep 30 & (sleep 30; :) & sleep 0.1; touch started; wait'
`)
	// Every process of the task inherits the task's ID in its environment,
	// however deep: that is how the test finds them all.
	id := fmt.Sprintf("family-%d-%d", os.Getpid(), time.Now().UnixNano())
	d := startDaemon(t, dir, "peonify.yaml")
	d.waitLog("peonify: running")
	mustRun(t, dir, "", "enqueue", "--store", "store.db", "--type", "family", "--id", id)
	waitFor(t, "the task to start", func() bool { return fileExists(filepath.Join(dir, "started")) }, d.stderr)
	if pids := streamtest.Processes(t, "PEONIFY_TASK_ID", id); len(pids) < 4 {
		t.Fatalf("the running task has processes %v, want at least sh, sleep, the subshell and its sleep", pids)
	}

	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	deadline := time.Now().Add(time.Second)
	for {
		pids := streamtest.Processes(t, "PEONIFY_TASK_ID", id)
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("processes %v of the task outlived the SIGKILLed daemon by 1s:\n%s", pids, commandLines(pids))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// commandLines gives the command line of each process, for a failure message.
func commandLines(pids []int) string {
	var b strings.Builder
	for _, pid := range pids {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		fmt.Fprintf(&b, "  %d: %s\n", pid, bytes.ReplaceAll(bytes.TrimRight(cmd, "\x00"), []byte{0}, []byte{' '}))
	}
	return b.String()
}
