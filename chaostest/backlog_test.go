//go:build unix

package chaostest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// backlogTasks is the size of the backlog scenario's queue.
const backlogTasks = 1_000_000

// Limits of the backlog scenario: between a tenth and nine tenths of the
// backlog drained, the live heap may grow by at most backlogHeapGrowth and
// the goroutines may vary by at most backlogGoroutineSpread.
const (
	backlogHeapGrowth      = 16 << 20
	backlogGoroutineSpread = 4
)

// scenarioBacklog fills the embedded store with a million tasks, then
// drains them with one processor that records its live heap and its
// goroutines every second: both must stay flat, because a processor
// claims only its free capacity however long the queue is.
//
// The child enqueues and drains the backlog itself, without the race
// detector, which slows the store's SQLite engine a hundredfold: under
// -race the scenario builds a test binary without it.
func scenarioBacklog(c *cell) {
	c.bin = plainBinary(c.t)
	// Enqueueing a million tasks is setup, with a budget of its own; the
	// drain has the cell's.
	c.start, c.deadline = time.Now(), time.Now().Add(cellBudget)
	ch := c.startChild(func(o *orders) {
		o.Backlog, o.Workers, o.QueueSize, o.Sample = backlogTasks, 16, 256, time.Second
	})
	c.mu.Lock()
	c.enqueued = make([]string, backlogTasks)
	for i := range c.enqueued {
		c.enqueued[i] = backlogID(i)
	}
	c.mu.Unlock()

	var filled []note
	if !waitFor(c.remaining(), func() bool { filled = c.notesOf(kindBacklog, ch.pid); return len(filled) > 0 || ch.Exited() }) || ch.Exited() {
		c.t.Fatalf("the child did not enqueue the backlog: %v\n%s", ch.Err(), ch.Output())
	}
	fillMs, _ := strconv.Atoi(filled[0].fields[1])
	drain := time.Now()
	c.deadline = drain.Add(cellBudget)
	if !waitFor(c.remaining(), func() bool {
		c.refresh()
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.hist.Completed() >= backlogTasks
	}) {
		c.t.Fatalf("%d of %d tasks completed within the budget", c.hist.Completed(), backlogTasks)
	}
	drained := time.Since(drain)
	c.waitQuiet()
	c.finish()

	type sample struct{ heap, goroutines, completed int }
	var samples []sample
	for _, n := range c.notesOf(kindSample, ch.pid) {
		if len(n.fields) != 4 {
			continue
		}
		heap, _ := strconv.Atoi(n.fields[1])
		g, _ := strconv.Atoi(n.fields[2])
		done, _ := strconv.Atoi(n.fields[3])
		if done > 0 && done < backlogTasks {
			samples = append(samples, sample{heap, g, done})
		}
	}
	if len(samples) < 5 {
		c.t.Fatalf("only %d samples were taken while the backlog drained; want at least 5", len(samples))
	}
	nearest := func(done int) sample {
		best := samples[0]
		for _, s := range samples {
			if abs(s.completed-done) < abs(best.completed-done) {
				best = s
			}
		}
		return best
	}
	early, late := nearest(backlogTasks/10), nearest(9*backlogTasks/10)
	minG, maxG := samples[0].goroutines, samples[0].goroutines
	maxHeap := 0
	for _, s := range samples {
		minG, maxG, maxHeap = min(minG, s.goroutines), max(maxG, s.goroutines), max(maxHeap, s.heap)
	}
	mib := func(b int) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	c.note("enqueued in %.1fs, drained in %.1fs (%d tasks/s); live heap %s at %d done, %s at %d done, at most %s; goroutines %d to %d",
		float64(fillMs)/1000, drained.Seconds(), int(float64(backlogTasks)/drained.Seconds()),
		mib(early.heap), early.completed, mib(late.heap), late.completed, mib(maxHeap), minG, maxG)
	if late.heap > early.heap+backlogHeapGrowth {
		c.t.Errorf("the live heap grew from %s to %s while the backlog drained from %d to %d done: the processor's memory is not flat",
			mib(early.heap), mib(late.heap), early.completed, late.completed)
	}
	if maxG-minG > backlogGoroutineSpread {
		c.t.Errorf("goroutines ranged from %d to %d while the backlog drained: not flat", minG, maxG)
	}
}

func abs(x int) int { return max(x, -x) }

// plainBinary returns a test binary without the race detector: this one,
// or, if it has the detector, one built now with the go command.
func plainBinary(t *testing.T) string {
	if !raceEnabled {
		return os.Args[0]
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goCmd); err != nil {
			skipOrFail(t, "the backlog scenario builds a test binary without -race, but the go command is not on PATH")
		}
	}
	out := filepath.Join(t.TempDir(), "chaostest-norace.test")
	cmd := exec.Command(goCmd, "test", "-c", "-o", out, ".")
	var flags []string
	for _, f := range strings.Fields(os.Getenv("GOFLAGS")) {
		if f != "-race" && f != "--race" {
			flags = append(flags, f)
		}
	}
	cmd.Env = append(os.Environ(), "GOFLAGS="+strings.Join(flags, " "))
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the test binary without -race: %v\n%s", err, b)
	}
	t.Logf("built a test binary without -race in %s", time.Since(start).Round(100*time.Millisecond))
	return out
}
