//go:build unix

package executor

import (
	"os/exec"
	"syscall"
)

// ownGroup makes the command the leader of a new process group, so that
// the group can be signalled as a whole.
func ownGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// terminateGroup asks every process of the group led by pid to stop.
func terminateGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGTERM) }

// killGroup kills every process of the group led by pid.
func killGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }

// signalOf returns the name of the signal that killed the command, if one
// did.
func signalOf(xe *exec.ExitError) string {
	if ws, ok := xe.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal().String()
	}
	return ""
}
