//go:build unix

package executor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// How a supervised command runs. The supervisor is this program started
// again with SupervisorArg, in a new process group; it starts the command
// in that same group and waits for it. It holds the read end of a pipe
// whose write end only this process holds: when this process dies, however
// it dies, the kernel closes the write end, the supervisor reads EOF and
// kills its whole group with SIGKILL: itself, the command and everything
// the command started that stayed in the group. A pipe does not depend on
// which OS thread started the supervisor, as a parent-death signal does.
// The supervisor reports how the command ended on a second pipe.
//
// Timeouts and cancellation work as without a supervisor: SIGTERM, then
// SIGKILL, to the whole group; the supervisor ignores the SIGTERM and
// reports how the command ended.

const canSupervise = true

// The supervisor's file descriptors, after stdin, stdout and stderr.
const (
	lifeFD   = 3 // read end of the pipe whose EOF means this process died
	statusFD = 4 // write end of the pipe for how the command ended
)

// supervision is this process's side of one supervised command.
type supervision struct {
	life   *os.File // write end: held open until the supervisor has exited
	status *os.File // read end: how the command ended
	child  []*os.File
	report chan []byte // what the supervisor wrote on status, once it has exited
}

// selfProgram returns the path that starts this very program again. On
// Linux it is /proc/self/exe, which is the running program even if its
// file has been replaced since it started.
func selfProgram() (string, error) {
	if runtime.GOOS == "linux" {
		if _, err := os.Stat("/proc/self/exe"); err == nil {
			return "/proc/self/exe", nil
		}
	}
	return os.Executable()
}

// supervise makes cmd, which runs path with args, start a supervisor
// (program, this program itself) instead, which runs the command. Call
// started after cmd.Start, whether it failed or not.
func supervise(cmd *exec.Cmd, program, path string, args []string) (*supervision, error) {
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		lifeR.Close()
		lifeW.Close()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	cmd.Path = program
	cmd.Args = append([]string{"peonify", SupervisorArg, path}, args...)
	cmd.ExtraFiles = []*os.File{lifeR, statusW} // lifeFD, statusFD
	return &supervision{life: lifeW, status: statusR, child: cmd.ExtraFiles}, nil
}

// started closes this process's copies of the supervisor's ends, so that
// the status pipe ends when the supervisor exits, and the other ends too
// if the supervisor did not start (err). If it did start, ended must be
// called: it waits for the report.
func (s *supervision) started(cmd *exec.Cmd, err error) {
	for _, f := range s.child {
		f.Close()
	}
	if err != nil {
		s.life.Close()
		s.status.Close()
		return
	}
	pgid := cmd.Process.Pid
	s.report = make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(s.status, 4<<10))
		if len(b) == 0 {
			// The supervisor died before its command ended: the command
			// goes at once, not after the WaitDelay of its output.
			killGroup(pgid)
		}
		s.report <- b
	}()
}

// ended returns how the command ended, as the supervisor, which has
// exited, reported it; waitErr is what cmd.Wait returned for the
// supervisor.
func (s *supervision) ended(waitErr error) ending {
	b := <-s.report
	s.life.Close()
	s.status.Close()
	kind, val, _ := strings.Cut(strings.TrimSuffix(string(b), "\n"), " ")
	n, convErr := strconv.Atoi(val)
	switch {
	case kind == "start":
		return ending{startErr: errors.New(val)}
	case kind == "exit" && convErr == nil:
		if n == 0 {
			return ending{exited: true, err: waitErr} // nil, or output left open
		}
		return ending{exited: true, code: n, err: fmt.Errorf("exit status %d", n)}
	case kind == "signal" && convErr == nil:
		sig := syscall.Signal(n).String()
		return ending{exited: true, code: -1, signal: sig, err: errors.New("signal: " + sig)}
	}
	if waitErr == nil {
		waitErr = errors.New("exit status 0")
	}
	return ending{lost: true, err: fmt.Errorf("its supervisor ended without saying how the command did: %w", waitErr)}
}

// SupervisorArg is the first argument that starts a program as the
// supervisor of one command of an Exec with ExecConfig.Supervise.
const SupervisorArg = "__exec-supervisor"

// SupervisorMain runs the supervisor of one command when args, the
// program's arguments without its name, start with SupervisorArg, and
// returns the status to exit with and true. Otherwise it returns at once
// with false. A program whose Exec executors have ExecConfig.Supervise
// must call it first thing in main (and in TestMain):
//
//	if code, ok := executor.SupervisorMain(os.Args[1:]); ok {
//		os.Exit(code)
//	}
func SupervisorMain(args []string) (code int, ok bool) {
	if len(args) < 2 || args[0] != SupervisorArg {
		return 0, false
	}
	return runSupervisor(args[1], args[1:]), true
}

// runSupervisor runs the command path with argv in this process's group,
// reports how it ended, and kills the group if this process's parent dies
// first.
func runSupervisor(path string, argv []string) int {
	var st syscall.Stat_t
	if syscall.Fstat(lifeFD, &st) != nil || syscall.Fstat(statusFD, &st) != nil || syscall.Getpgrp() != syscall.Getpid() {
		// Killing "its group" would kill someone else's processes.
		fmt.Fprintf(os.Stderr, "%s is started by an exec executor, with its pipes and in a process group of its own; it cannot be run by hand\n", SupervisorArg)
		return 2
	}
	syscall.CloseOnExec(lifeFD)
	syscall.CloseOnExec(statusFD)
	life := os.NewFile(lifeFD, "life")
	status := os.NewFile(statusFD, "status")

	// The group's SIGTERM is for the command; the supervisor waits for the
	// command to end. A caught signal is the default again in the command.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM)
	go func() {
		var b [1]byte
		_, _ = life.Read(b[:]) // nothing is written: it returns when the parent has died
		_ = syscall.Kill(0, syscall.SIGKILL)
	}()

	cmd := &exec.Cmd{Path: path, Args: argv, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(status, "start %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return 0
	}
	// The command alone reads the payload: when it exits, the writer learns.
	os.Stdin.Close()
	_ = cmd.Wait()
	if cmd.ProcessState == nil {
		return 1 // no status: the executor kills the group
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		fmt.Fprintf(status, "signal %d\n", int(ws.Signal()))
	} else {
		fmt.Fprintf(status, "exit %d\n", ws.ExitStatus())
	}
	return 0
}
