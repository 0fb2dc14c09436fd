package streamtest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Ledger is a directory of append-only logs, one ID a line, that child
// processes write and the parent test reads: a record of what each child
// enqueued, completed or acknowledged that survives a SIGKILL. Each record
// is one write of whole lines, so a kill never leaves a partial line.
type Ledger string

// NewLedger returns a ledger in a fresh temporary directory of the test.
func NewLedger(t testing.TB) Ledger { return Ledger(t.TempDir()) }

// ChildLog is the name of the log where child i records its completions.
func ChildLog(i int) string { return fmt.Sprintf("done-%d.log", i) }

// Log is one log of a Ledger, open for appending.
type Log struct {
	mu sync.Mutex
	f  *os.File
}

// Open opens the log called name for appending, creating it if need be,
// and closes it when the test ends.
func (l Ledger) Open(t testing.TB, name string) *Log {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(string(l), name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &Log{f: f}
}

// Add appends ids to the log, one line each, in one write.
func (g *Log) Add(ids ...string) error {
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(id + "\n")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	_, err := g.f.WriteString(b.String())
	return err
}

// Read returns the lines of the log called name, or none if it does not
// exist yet.
func (l Ledger) Read(t testing.TB, name string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(string(l), name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			lines = append(lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// Size returns the size in bytes of the log called name, 0 if it does not
// exist yet: a cheap measure of progress.
func (l Ledger) Size(name string) int64 {
	fi, err := os.Stat(filepath.Join(string(l), name))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Runs returns the completions that children 0 to n-1 logged in their
// ChildLog, in a form for ScaleOut.Runs.
func (l Ledger) Runs(t testing.TB, n int) []Run {
	t.Helper()
	var runs []Run
	for i := range n {
		for _, id := range l.Read(t, ChildLog(i)) {
			runs = append(runs, Run{ID: id, Child: i})
		}
	}
	return runs
}
