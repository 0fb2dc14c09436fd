package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/peonify/peonify"
)

// ExecConfig configures an Exec executor. Exactly one of Command and Shell
// is required.
type ExecConfig struct {
	// Command is the program and its arguments, run without a shell. A
	// program name without a slash is looked up in PATH; a relative path
	// is relative to Dir.
	Command []string `yaml:"command"`

	// Shell is a command line run by /bin/sh -c, for pipes and
	// redirections.
	Shell string `yaml:"shell"`

	// Dir is the working directory of the command. Defaults to the
	// directory peonify runs in.
	Dir string `yaml:"dir"`

	// Env adds variables to the environment the command inherits from
	// peonify.
	Env map[string]string `yaml:"env"`

	// Timeout bounds one run. Defaults to 0: only the processor's task
	// timeout bounds it.
	Timeout time.Duration `yaml:"timeout"`

	// KillGrace is how long a command that must stop (timeout, shutdown)
	// has between SIGTERM and SIGKILL, both sent to its whole process
	// group. Defaults to 2s.
	KillGrace time.Duration `yaml:"kill_grace"`

	// DeadExitCodes are exit statuses that mean the task can never succeed:
	// the task is dead at once instead of retried.
	DeadExitCodes []int `yaml:"dead_exit_codes"`

	// Stdout receives the command's standard output. Defaults to nil:
	// discarded.
	Stdout io.Writer `yaml:"-"`

	// StdoutResult keeps the command's standard output as the task's
	// result (see peonify.SetResult) when it exits with status 0, also
	// writing it to Stdout if that is set. Output longer than
	// peonify.MaxResultLen fails the task for good (peonify.SkipRetry)
	// rather than keep a truncated result; on a store that does not keep
	// results (not a peonify.Tracker) the output is dropped. Defaults to
	// false.
	StdoutResult bool `yaml:"-"`

	// Supervise runs each command under a supervisor, this very program
	// started again, that kills the command's process group with SIGKILL
	// as soon as this process dies, even by SIGKILL, so that no process of
	// a task runs on beside its next attempt. The program's main must call
	// SupervisorMain first. It works on Unix systems; elsewhere it does
	// nothing. Defaults to false: a command outlives a crash of this
	// process, though not a timeout or a shutdown.
	Supervise bool `yaml:"-"`
}

// The environment variables that tell a command which task it runs.
const (
	EnvTaskID      = "PEONIFY_TASK_ID"
	EnvTaskType    = "PEONIFY_TASK_TYPE"
	EnvTaskAttempt = "PEONIFY_TASK_ATTEMPT"
	EnvTaskHeaders = "PEONIFY_TASK_HEADERS" // the task's headers as a JSON object; unset when it has none
)

// stderrTail is how much of the end of a command's standard error goes
// into the error of a failed run.
const stderrTail = 2 << 10

// Exec is a peonify.Handler that runs a command for each task.
//
// The command gets the payload on its standard input, and PEONIFY_TASK_ID,
// PEONIFY_TASK_TYPE, PEONIFY_TASK_ATTEMPT and PEONIFY_TASK_HEADERS in its
// environment, and, when the attempt is traced, its W3C trace context in
// TRACEPARENT and TRACESTATE. Exit status 0 means done. Any other status fails the
// attempt, which is retried, unless it is one of DeadExitCodes; the error
// ends with the last lines of the command's standard error.
//
// The command runs in its own process group. When the task's context ends
// (the task timeout, ExecConfig.Timeout, a lost lease, or the end of the
// shutdown grace period), the whole group gets SIGTERM, then SIGKILL after
// KillGrace, so that no child the command started outlives the task. With
// ExecConfig.Supervise, the group also dies, at once, with this process.
// A process that leaves the group (setsid, setpgid) is not followed.
type Exec struct {
	path      string
	args      []string
	dir       string
	env       []string
	timeout   time.Duration
	killGrace time.Duration
	dead      []int
	stdout    io.Writer
	result    bool   // ExecConfig.StdoutResult
	self      string // the program that supervises each command; "" for none
}

var _ peonify.Handler = (*Exec)(nil)

// NewExec returns an Exec executor, or a *FieldError naming what is wrong
// with cfg. It checks that the program exists and is executable.
func NewExec(cfg ExecConfig) (*Exec, error) {
	var argv []string
	switch {
	case len(cfg.Command) > 0 && cfg.Shell != "":
		return nil, &FieldError{"shell", "set either command (a program and its arguments) or shell (a command line for /bin/sh), not both"}
	case cfg.Shell != "":
		argv = []string{"/bin/sh", "-c", cfg.Shell}
	case len(cfg.Command) > 0:
		argv = cfg.Command
	default:
		return nil, &FieldError{"command", `required: the program and its arguments, e.g. ["./resize.sh", "--fast"] (or set shell)`}
	}
	if argv[0] == "" {
		return nil, &FieldError{"command", "the program name (first element) is empty"}
	}
	switch {
	case cfg.Timeout < 0:
		return nil, &FieldError{"timeout", "must not be negative (0 means no limit but the task timeout)"}
	case cfg.KillGrace < 0:
		return nil, &FieldError{"kill_grace", "must not be negative (0 means the default, 2s)"}
	}
	if cfg.Dir != "" {
		if fi, err := os.Stat(cfg.Dir); err != nil || !fi.IsDir() {
			return nil, &FieldError{"dir", fmt.Sprintf("%q is not a directory", cfg.Dir)}
		}
	}
	path, err := findProgram(argv[0], cfg.Dir)
	if err != nil {
		return nil, &FieldError{"command", err.Error()}
	}
	e := &Exec{
		path:      path,
		args:      argv[1:],
		dir:       cfg.Dir,
		env:       os.Environ(),
		timeout:   cfg.Timeout,
		killGrace: cfg.KillGrace,
		dead:      cfg.DeadExitCodes,
		stdout:    cfg.Stdout,
		result:    cfg.StdoutResult,
	}
	if e.killGrace == 0 {
		e.killGrace = 2 * time.Second
	}
	if cfg.Supervise && canSupervise {
		if e.self, err = selfProgram(); err != nil {
			return nil, fmt.Errorf("find this program, to supervise commands: %w", err)
		}
	}
	keys := make([]string, 0, len(cfg.Env))
	for k := range cfg.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, &FieldError{"env", fmt.Sprintf("%q is not a valid variable name", k)}
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		e.env = append(e.env, k+"="+cfg.Env[k])
	}
	return e, nil
}

// findProgram resolves a program name the way the command will be run:
// through PATH when it has no slash, else relative to dir.
func findProgram(name, dir string) (string, error) {
	if !strings.Contains(name, "/") {
		p, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("program %q not found in PATH: give its path, or install it", name)
		}
		return p, nil
	}
	check := name
	if !filepath.IsAbs(name) && dir != "" {
		check = filepath.Join(dir, name)
	}
	fi, err := os.Stat(check)
	switch {
	case err != nil:
		return "", fmt.Errorf("program %q not found (relative paths start from dir, or from the working directory without dir)", name)
	case fi.IsDir():
		return "", fmt.Errorf("program %q is a directory", name)
	case fi.Mode()&0o111 == 0:
		return "", fmt.Errorf("program %q is not executable: chmod +x it", name)
	}
	return name, nil
}

// Execute runs the command for t.
func (e *Exec) Execute(ctx context.Context, t *peonify.Task) error {
	if e.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, e.timeout,
			fmt.Errorf("command ran longer than its timeout (%s)", e.timeout))
		defer cancel()
	}
	env := append(slices.Clip(e.env),
		EnvTaskID+"="+t.ID, EnvTaskType+"="+t.Type, EnvTaskAttempt+"="+strconv.Itoa(t.Attempt))
	if len(t.Headers) > 0 {
		hj, _ := json.Marshal(t.Headers) // a map of strings always encodes
		env = append(env, EnvTaskHeaders+"="+string(hj))
	}
	// The attempt's span is the parent of the command's work, passed the
	// way OpenTelemetry passes context through the environment.
	tc := propagation.MapCarrier{}
	traceContext.Inject(ctx, tc)
	for _, k := range []string{"traceparent", "tracestate"} {
		if v := tc[k]; v != "" {
			env = append(env, strings.ToUpper(k)+"="+v)
		}
	}

	var stderr tailBuffer
	cmd := exec.CommandContext(ctx, e.path, e.args...)
	cmd.Dir = e.dir
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(t.Payload)
	cmd.Stdout = e.stdout
	var out *resultBuffer
	if e.result {
		out = &resultBuffer{}
		if e.stdout != nil {
			cmd.Stdout = io.MultiWriter(out, e.stdout)
		} else {
			cmd.Stdout = out
		}
	}
	cmd.Stderr = &stderr
	ownGroup(cmd)
	var sup *supervision
	if e.self != "" {
		var err error
		if sup, err = supervise(cmd, e.self, e.path, e.args); err != nil {
			return err
		}
	}
	var (
		mu       sync.Mutex
		killer   *time.Timer
		canceled bool
	)
	cmd.Cancel = func() error {
		pgid := cmd.Process.Pid
		mu.Lock()
		defer mu.Unlock()
		canceled = true
		terminateGroup(pgid)
		killer = time.AfterFunc(e.killGrace, func() { killGroup(pgid) })
		return nil
	}
	// The pipes of children that outlive the command are closed after this.
	cmd.WaitDelay = e.killGrace + time.Second

	err := cmd.Start()
	if sup != nil {
		sup.started(cmd, err)
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", e.path, err)
	}
	err = cmd.Wait()
	end := endingOf(err)
	if sup != nil {
		end = sup.ended(err)
	}
	mu.Lock()
	if killer != nil {
		killer.Stop()
	}
	if canceled || end.lost {
		// Whatever of the group survived SIGTERM, or its supervisor, goes
		// now.
		killGroup(cmd.Process.Pid)
	}
	mu.Unlock()
	if end.startErr != nil {
		return fmt.Errorf("start %s: %w", e.path, end.startErr)
	}
	if end.exited && end.code == 0 && end.err == nil {
		if out != nil {
			return out.keep(ctx)
		}
		return nil
	}

	tail := stderr.String()
	if canceled || ctx.Err() != nil {
		msg := "command stopped"
		if cause := context.Cause(ctx); cause != nil {
			msg += ": " + cause.Error()
		}
		return &ExitError{Msg: msg, Stderr: tail, Code: -1, cause: context.Cause(ctx)}
	}
	if !end.exited || end.code == 0 {
		// Such as output pipes that a child kept open past WaitDelay.
		return fmt.Errorf("run %s: %w", e.path, end.err)
	}
	ee := &ExitError{Code: end.code, Stderr: tail}
	if end.signal != "" {
		ee.Msg = "command killed by signal " + end.signal
	} else {
		ee.Msg = "command exited with status " + strconv.Itoa(ee.Code)
	}
	if slices.Contains(e.dead, ee.Code) {
		ee.Msg += " (listed in dead_exit_codes: not retried)"
		return peonify.SkipRetry(ee)
	}
	return ee
}

// ending is how a command ended.
type ending struct {
	exited   bool   // code and signal are known
	code     int    // the exit status; -1 if a signal killed it
	signal   string // the signal that killed it, if one did
	err      error  // nil if the command, and its output, ended cleanly
	startErr error  // the command could not start (reported by its supervisor)
	lost     bool   // its supervisor ended without saying how the command did
}

// endingOf returns how a command run without a supervisor ended, from
// cmd.Wait's error.
func endingOf(err error) ending {
	var xe *exec.ExitError
	switch {
	case err == nil:
		return ending{exited: true}
	case errors.As(err, &xe):
		return ending{exited: true, code: xe.ExitCode(), signal: signalOf(xe), err: err}
	}
	return ending{err: err}
}

// ExitError is the error of a command that did not exit with status 0.
type ExitError struct {
	Msg    string // what happened, e.g. "command exited with status 3"
	Code   int    // the exit status; -1 if the command was stopped or killed by a signal
	Stderr string // the end of its standard error
	cause  error
}

// Error gives the message and the end of the command's standard error.
func (e *ExitError) Error() string {
	if e.Stderr == "" {
		return e.Msg
	}
	return e.Msg + ": " + e.Stderr
}

// Unwrap returns why the command was stopped, such as a timeout, if it was.
func (e *ExitError) Unwrap() error { return e.cause }

// resultBuffer keeps a command's standard output, up to one byte more than
// peonify.MaxResultLen, and counts what it did not keep: the command is
// never blocked by a full pipe, however much it prints.
type resultBuffer struct {
	mu   sync.Mutex
	buf  []byte
	size int64 // bytes written in all
}

func (b *resultBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.size += int64(len(p))
	if room := peonify.MaxResultLen + 1 - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(len(p), room)]...)
	}
	return len(p), nil
}

// keep sets the output as the result of the task whose context ctx is: an
// empty output sets none, and one longer than peonify.MaxResultLen fails
// the task for good, on a store that keeps results; elsewhere the output
// is dropped.
func (b *resultBuffer) keep(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.size <= peonify.MaxResultLen {
		if b.size > 0 {
			// Without a store that keeps results (errors.ErrUnsupported),
			// or outside a processor, there is nothing to keep it.
			_ = peonify.SetResult(ctx, b.buf)
		}
		return nil
	}
	// Only a store that keeps results refuses the task for its size:
	// setting an empty result tells if it is one (the failed attempt's
	// result is discarded anyway).
	if peonify.SetResult(ctx, []byte{}) != nil {
		return nil
	}
	return peonify.SkipRetry(fmt.Errorf("command exited with status 0 but printed %d bytes, more than a task result can be (peonify.MaxResultLen, %d bytes): "+
		"print a reference to the data instead, or keep stdout out of the result", b.size, peonify.MaxResultLen))
}

// tailBuffer keeps the last stderrTail bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	cut bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	if len(p) >= stderrTail {
		b.buf = append(b.buf[:0], p[len(p)-stderrTail:]...)
		b.cut = true
		return n, nil
	}
	if over := len(b.buf) + len(p) - stderrTail; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
		b.cut = true
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

// String returns the tail, trimmed, with invalid UTF-8 replaced.
func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(strings.ToValidUTF8(string(b.buf), "\uFFFD"))
	if s == "" {
		return ""
	}
	if b.cut {
		// Drop the partial first line.
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
		s = "…" + s
	}
	return s
}
