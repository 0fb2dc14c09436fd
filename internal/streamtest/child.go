package streamtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// Child is the test binary re-executed to run one test function, the
// child side of a scale-out, crash or durability test, in a process of
// its own.
type Child struct {
	name   string
	cmd    *exec.Cmd
	out    lockedBuffer
	done   chan error // receives cmd.Wait's result once
	exited bool       // done has been received from
	err    error      // what done gave
}

// StartChild starts the test binary again running only the test function
// named test, with orders encoded as JSON in the environment variable env,
// where the child reads them with Orders. A child still running when the
// test ends is killed, and a failed test logs the output of each child.
func StartChild(t *testing.T, test, env string, orders any) *Child {
	t.Helper()
	b, err := json.Marshal(orders)
	if err != nil {
		t.Fatal(err)
	}
	c := &Child{name: fmt.Sprintf("%s %s", test, b), done: make(chan error, 1)}
	c.cmd = exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.timeout=2m", "-test.v=false")
	c.cmd.Env = append(os.Environ(), env+"="+string(b))
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		if !c.exited {
			_ = c.cmd.Process.Kill()
			c.wait()
		}
		if t.Failed() {
			t.Logf("child %s output:\n%s", c.name, c.Output())
		}
	})
	return c
}

// wait waits for the child to exit, once.
func (c *Child) wait() error {
	if !c.exited {
		c.err = <-c.done
		c.exited = true
	}
	return c.err
}

// Kill kills the child with SIGKILL and waits for it to exit.
func (c *Child) Kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if c.wait() == nil {
		t.Fatalf("child %s exited cleanly after SIGKILL; want it killed", c.name)
	}
}

// Wait waits up to within for the child to exit on its own. It returns an
// error, with the child's output, if the child failed or did not exit in
// time; a child that does not exit runs until the test ends.
func (c *Child) Wait(within time.Duration) error {
	if !c.exited {
		select {
		case c.err = <-c.done:
			c.exited = true
		case <-time.After(within):
			return fmt.Errorf("child %s did not exit within %s\n%s", c.name, within, c.Output())
		}
	}
	if c.err != nil {
		return fmt.Errorf("child %s: %w\n%s", c.name, c.err, c.Output())
	}
	return nil
}

// listening starts the line in which a child that serves tells the test
// where it listens, the address following it.
const listening = "listening on "

// Listen, in a child that serves, listens on a free port of the loopback
// interface and tells the parent test where, in a line that the parent
// reads with Addr.
func Listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s%s\n", listening, ln.Addr()) // one write, so that the parent reads it whole
	return ln
}

// Addr waits up to within for the child to call Listen and returns the
// address it listens on. It fails the test if the child exits first or
// within passes.
func (c *Child) Addr(t *testing.T, within time.Duration) string {
	t.Helper()
	return c.Line(t, listening, within)
}

// Line waits up to within for the child to write a whole line that
// starts with prefix, and returns the rest of that line: how a child
// tells the test what only it knows, such as where it listens. It fails the test if the
// child exits first or within passes; StartChild's cleanup then logs the
// child's output.
func (c *Child) Line(t *testing.T, prefix string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		// Whether it has exited comes first: all it wrote before then is
		// in the output read next.
		if !c.exited {
			select {
			case c.err = <-c.done:
				c.exited = true
			default:
			}
		}
		out := c.Output()
		for line := range strings.Lines(out) {
			if rest, ok := strings.CutPrefix(line, prefix); ok && strings.HasSuffix(rest, "\n") {
				return strings.TrimSuffix(rest, "\n")
			}
		}
		if c.exited {
			t.Fatalf("child %s exited (%v) without writing a line %q...", c.name, c.err, prefix)
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %s wrote no line %q... within %s", c.name, prefix, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Output returns what the child has written to stdout and stderr so far.
func (c *Child) Output() string { return c.out.String() }

// Orders decodes, in a child, the orders that StartChild put in env into
// orders. Run as anything but a child, where env is unset, it skips the
// test.
func Orders(t *testing.T, env string, orders any) {
	t.Helper()
	s := os.Getenv(env)
	if s == "" {
		t.Skip("runs only as a child process of another test")
	}
	if err := json.Unmarshal([]byte(s), orders); err != nil {
		t.Fatalf("%s holds bad orders %q: %v", env, s, err)
	}
}

// RunProcessor runs, in a child, a processor with cfg on s until ctx ends:
// each task of type typ goes to handle, which records it. Run closes s.
func RunProcessor(t *testing.T, ctx context.Context, cfg peonify.Config, s peonify.Stream, typ string, handle peonify.HandlerFunc) {
	t.Helper()
	p := Processor(t, cfg, s, peonify.TaskList{typ: handle})
	if err := p.Run(ctx); err != nil {
		t.Errorf("run: %v", err)
	}
}

// UntilDrained returns a context that ends with ctx or once c counts no
// task pending, scheduled or running (leased tasks included), checked
// every interval; call stop to end it and wait for the checking goroutine.
// A Counts error fails the test and ends the context.
func UntilDrained(t *testing.T, ctx context.Context, c Counter, every time.Duration) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer cancel()
		for {
			n, err := c.Counts(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				t.Errorf("counts: %v", err)
				return
			}
			if n[peonify.StatePending]+n[peonify.StateScheduled]+n[peonify.StateRunning] == 0 {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
		}
	})
	return ctx, func() { cancel(); wg.Wait() }
}

// lockedBuffer is a bytes.Buffer that a child's output can be read from
// while the child writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
