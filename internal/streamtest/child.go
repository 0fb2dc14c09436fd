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

// Child is the test binary re-executed as a child process: the child side
// of a scale-out, crash, chaos or durability test, in a process of its
// own that the test can signal and kill.
type Child struct {
	name     string
	cmd      *exec.Cmd
	out      BoundedBuffer
	done     chan struct{} // closed once the child has exited
	err      error         // cmd.Wait's result, set before done is closed
	exitedAt time.Time     // set before done is closed
}

// StartChild starts the test binary again running only the test function
// named test, with orders encoded as JSON in the environment variable env,
// where the child reads them with Orders. A child still running when the
// test ends is killed; a failed test logs the output of each child, and a
// child that reports a data race fails the test.
func StartChild(t *testing.T, test, env string, orders any) *Child {
	t.Helper()
	return start(t, test, env, orders, "-test.run=^"+test+"$", "-test.count=1", "-test.timeout=10m", "-test.v=false")
}

// StartMain starts a test binary, bin or this one if bin is empty, with
// orders encoded as JSON in the environment variable env and no test to
// run: for a package whose TestMain runs the child itself when env is set.
// Otherwise it is as StartChild.
func StartMain(t *testing.T, bin, env string, orders any) *Child {
	t.Helper()
	if bin == "" {
		bin = os.Args[0]
	}
	return startBinary(t, bin, "TestMain", env, orders, "-test.run=^$")
}

func start(t *testing.T, name, env string, orders any, args ...string) *Child {
	t.Helper()
	return startBinary(t, os.Args[0], name, env, orders, args...)
}

func startBinary(t *testing.T, bin, name, env string, orders any, args ...string) *Child {
	t.Helper()
	b, err := json.Marshal(orders)
	if err != nil {
		t.Fatal(err)
	}
	c := &Child{name: fmt.Sprintf("%s %.200s", name, b), done: make(chan struct{})}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = append(os.Environ(), env+"="+string(b))
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := c.cmd.Wait()
		c.err, c.exitedAt = err, time.Now()
		close(c.done)
	}()
	t.Cleanup(func() {
		if !c.Exited() {
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		out := c.Output()
		if strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("child %s (pid %d) found a data race:\n%s", c.name, c.Pid(), out)
		} else if t.Failed() && out != "" {
			t.Logf("child %s (pid %d, %v) output:\n%s", c.name, c.Pid(), c.err, out)
		}
	})
	return c
}

// Pid returns the child's process ID.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Signal sends sig to the child.
func (c *Child) Signal(sig os.Signal) error { return c.cmd.Process.Signal(sig) }

// Done returns a channel that is closed once the child has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Exited reports whether the child has exited.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Err returns how the child exited (cmd.Wait's result) once it has.
func (c *Child) Err() error {
	<-c.done
	return c.err
}

// ExitedAt returns when the child exited, once it has.
func (c *Child) ExitedAt() time.Time {
	<-c.done
	return c.exitedAt
}

// Kill kills the child with SIGKILL and waits for it to exit.
func (c *Child) Kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if c.Err() == nil {
		t.Fatalf("child %s exited cleanly after SIGKILL; want it killed", c.name)
	}
}

// Wait waits up to within for the child to exit on its own. It returns an
// error, with the child's output, if the child failed or did not exit in
// time; a child that does not exit runs until the test ends.
func (c *Child) Wait(within time.Duration) error {
	select {
	case <-c.done:
	case <-time.After(within):
		return fmt.Errorf("child %s did not exit within %s\n%s", c.name, within, c.Output())
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
		exited := c.Exited()
		out := c.Output()
		for line := range strings.Lines(out) {
			if rest, ok := strings.CutPrefix(line, prefix); ok && strings.HasSuffix(rest, "\n") {
				return strings.TrimSuffix(rest, "\n")
			}
		}
		if exited {
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

// BoundedBuffer is where a child process's stdout and stderr go: safe for
// their concurrent writes and for reading while the child writes, it keeps
// the first and the last 64 KiB of what a chatty child writes.
type BoundedBuffer struct {
	mu   sync.Mutex
	head bytes.Buffer
	tail []byte
	cut  int // bytes dropped between head and tail
}

const boundedHalf = 64 << 10

func (b *BoundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	if room := boundedHalf - b.head.Len(); room > 0 {
		k := min(room, len(p))
		b.head.Write(p[:k])
		p = p[k:]
	}
	b.tail = append(b.tail, p...)
	if over := len(b.tail) - boundedHalf; over > 0 {
		b.cut += over
		b.tail = append(b.tail[:0], b.tail[over:]...)
	}
	return n, nil
}

func (b *BoundedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cut == 0 {
		return b.head.String() + string(b.tail)
	}
	return b.head.String() + fmt.Sprintf("\n[... %d bytes ...]\n", b.cut) + string(b.tail)
}
