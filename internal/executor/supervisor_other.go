//go:build !unix

package executor

import (
	"errors"
	"os/exec"
)

// Without Unix process groups and pipes to watch, commands are not
// supervised: ExecConfig.Supervise does nothing, and a command outlives a
// crash of this process.

const canSupervise = false

type supervision struct{}

func selfProgram() (string, error) { return "", errors.ErrUnsupported }

func supervise(*exec.Cmd, string, string, []string) (*supervision, error) {
	return nil, errors.ErrUnsupported
}

func (*supervision) started(*exec.Cmd, error) {}

func (*supervision) ended(err error) ending { return endingOf(err) }

// SupervisorArg is the first argument that starts a program as the
// supervisor of one command of an Exec with ExecConfig.Supervise.
const SupervisorArg = "__exec-supervisor"

// SupervisorMain returns false: commands are supervised only on Unix
// systems.
func SupervisorMain(args []string) (code int, ok bool) { return 0, false }
