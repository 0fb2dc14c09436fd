package chaostest

import (
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Row is one scenario run against one stream, as the Table shows it.
type Row struct {
	Scenario   string
	Stream     string
	Tasks      int           // tasks whose Enqueue returned nil
	Lost       int           // of those, never completed
	Duplicates int           // completed runs beyond the first
	Bound      int           // duplicates allowed: tasks in flight at the faults
	Took       time.Duration // from the first enqueue to the last process's exit
	Failed     bool
	Skipped    bool   // the scenario does not apply to the stream, or its service is missing
	Note       string // what else the scenario saw, or why it was skipped
}

// Table collects the rows of a chaos run and prints them aligned. It is
// safe for concurrent use.
type Table struct {
	mu   sync.Mutex
	rows []Row
}

// Add appends a row.
func (t *Table) Add(r Row) {
	t.mu.Lock()
	t.rows = append(t.rows, r)
	t.mu.Unlock()
}

// Rows returns a copy of the rows, in the order they were added.
func (t *Table) Rows() []Row {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Row(nil), t.rows...)
}

// String returns the table as text: one line per row under a header, the
// columns aligned.
func (t *Table) String() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "scenario\tstream\ttasks\tlost\tduplicates\tseconds\tresult\tnote")
	for _, r := range t.Rows() {
		result := "ok"
		switch {
		case r.Failed:
			result = "FAIL"
		case r.Skipped:
			result = "skip"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d (≤ %d)\t%.1f\t%s\t%s\n",
			r.Scenario, r.Stream, r.Tasks, r.Lost, r.Duplicates, r.Bound, r.Took.Seconds(), result, r.Note)
	}
	w.Flush()
	return b.String()
}
