//go:build !unix

package executor

import (
	"os"
	"os/exec"
)

// On systems without process groups, only the command itself is stopped.

func ownGroup(*exec.Cmd) {}

func terminateGroup(pid int) { killGroup(pid) }

func killGroup(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		_ = p.Kill()
	}
}

func signalOf(*exec.ExitError) string { return "" }
