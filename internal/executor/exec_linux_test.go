package executor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// childOrders tells TestExecSupervisedChild which task to run, and where.
type childOrders struct {
	Dir string
	ID  string
}

const childEnv = "PEONIFY_EXECUTOR_TEST_CHILD"

// When the process running a supervised command dies by SIGKILL, the
// command and every process it started die within a second.
func TestExecSupervisedDiesWithProcess(t *testing.T) {
	dir := t.TempDir()
	id := fmt.Sprintf("family-%d-%d", os.Getpid(), time.Now().UnixNano())
	c := streamtest.StartChild(t, "TestExecSupervisedChild", childEnv, childOrders{Dir: dir, ID: id})
	waitFile(t, filepath.Join(dir, "running"), c)
	if pids := streamtest.Processes(t, EnvTaskID, id); len(pids) < 5 {
		t.Fatalf("the running task has processes %v, want at least the supervisor, sh, sleep, the subshell and its sleep", pids)
	}
	c.Kill(t)
	deadline := time.Now().Add(time.Second)
	for {
		pids := streamtest.Processes(t, EnvTaskID, id)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("processes %v of the task outlived the SIGKILLed process by 1s", pids)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestExecSupervisedChild is the process that TestExecSupervisedDiesWithProcess
// kills: it runs one supervised command until it is killed.
func TestExecSupervisedChild(t *testing.T) {
	var o childOrders
	streamtest.Orders(t, childEnv, &o)
	e := newExec(t, ExecConfig{
		Shell:     `sleep 60 & (sleep 60; :) & sleep 0.1; touch running; wait`,
		Dir:       o.Dir,
		Supervise: true,
	})
	err := e.Execute(context.Background(), &peonify.Task{ID: o.ID, Type: "job"})
	t.Errorf("the command ended (%v); the test should have killed this process first", err)
}

// waitFile waits until file exists, for up to 20s.
func waitFile(t *testing.T, file string, c *streamtest.Child) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(file); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 20s; the child wrote:\n%s", file, c.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
