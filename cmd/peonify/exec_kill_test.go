//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
	if pids := taskProcesses(t, id); len(pids) < 4 {
		t.Fatalf("the running task has processes %v, want at least sh, sleep, the subshell and its sleep", pids)
	}

	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	deadline := time.Now().Add(time.Second)
	for {
		pids := taskProcesses(t, id)
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

// taskProcesses returns the live processes whose environment names task
// id; zombies, which have no environment left, are dead.
func taskProcesses(t *testing.T, id string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("\x00PEONIFY_TASK_ID=" + id + "\x00")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue // gone, or not ours
		}
		if bytes.Contains(append(append([]byte{0}, env...), 0), want) {
			pids = append(pids, pid)
		}
	}
	return pids
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
