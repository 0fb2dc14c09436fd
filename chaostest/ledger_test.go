package chaostest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

func openTestLedger(t *testing.T) (*Ledger, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger")
	l, err := OpenLedger(path, LedgerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

func readTestLedger(t *testing.T, path string) *History {
	t.Helper()
	h, err := ReadLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Records written at once from many goroutines and two ledger handles,
// as by two processes, all arrive whole.
func TestLedgerConcurrentWriters(t *testing.T) {
	l1, path := openTestLedger(t)
	l2, err := OpenLedger(path, LedgerConfig{Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		l := l1
		if g%2 == 1 {
			l = l2
		}
		wg.Go(func() {
			for i := range each {
				if err := l.Done(&peonify.Task{ID: strconv.Itoa(g) + "-" + strconv.Itoa(i), Attempt: 1}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	h := readTestLedger(t, path)
	if got := h.Completed(); got != goroutines*each {
		t.Fatalf("Completed() = %d, want %d", got, goroutines*each)
	}
	for g := range goroutines {
		for i := range each {
			if n := h.Completions(strconv.Itoa(g) + "-" + strconv.Itoa(i)); n != 1 {
				t.Fatalf("task %d-%d: %d completions, want 1", g, i, n)
			}
		}
	}
}

// Refresh reads only what was appended, and a record cut in the middle
// is read once its end arrives.
func TestHistoryRefreshPartialRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger")
	h := readTestLedger(t, path) // a missing file is an empty history
	if h.Completed() != 0 {
		t.Fatal("a missing ledger has completions")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	write := func(s string) {
		t.Helper()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
		if err := h.Refresh(); err != nil {
			t.Fatal(err)
		}
	}
	write("D 1 0 a 1\nD 1 0 b")
	if h.Completions("a") != 1 || h.Completions("b") != 0 {
		t.Fatalf("after a record and a half: a %d, b %d; want 1 and 0", h.Completions("a"), h.Completions("b"))
	}
	write(" 1\nD 1 0 b 2\n")
	if h.Completions("a") != 1 || h.Completions("b") != 2 {
		t.Fatalf("after the rest: a %d, b %d; want 1 and 2", h.Completions("a"), h.Completions("b"))
	}
	write("garbage\n\nX\nD notapid 0 a 1\nD 1\n")
	if h.Completions("a") != 1 {
		t.Fatal("malformed records changed the history")
	}
}

// Held follows each process's claims, acks and nacks through the
// wrapper; failed acks leave tasks held.
func TestWrapRecordsHeldTasks(t *testing.T) {
	l, path := openTestLedger(t)
	ctx := context.Background()
	s := memstream.New(memstream.Config{Lease: time.Minute})
	for _, id := range []string{"a", "b", "c", "d"} {
		if err := s.Enqueue(ctx, &peonify.Task{ID: id, Type: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	w := l.Wrap(s)
	ds, err := w.Poll(ctx, 4)
	if err != nil || len(ds) != 4 {
		t.Fatalf("Poll = %d deliveries, %v; want 4", len(ds), err)
	}
	pid := os.Getpid()
	if got := readTestLedger(t, path).Held(pid); strings.Join(got, ",") != "a,b,c,d" {
		t.Fatalf("Held after claiming = %v, want all four", got)
	}
	if err := w.Ack(ctx, ds[0]); err != nil {
		t.Fatal(err)
	}
	if err := w.Nack(ctx, ds[1], peonify.NackOptions{Outcome: peonify.OutcomeReleased}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Ack(ctx, ds[2]); err == nil {
		t.Fatal("Ack after Close succeeded")
	}
	h := readTestLedger(t, path)
	if got := h.Held(pid); strings.Join(got, ",") != "c,d" {
		t.Fatalf("Held after an ack, a nack and a failed ack = %v, want [c d]", got)
	}
	if h.Acked("a") != 1 || h.Acked("c") != 0 {
		t.Fatalf("Acked: a %d, c %d; want 1 and 0", h.Acked("a"), h.Acked("c"))
	}
}

// peonify.As finds the wrapped stream's Extend, Wake and name through the
// wrapper, and neither Extend nor Wake for a stream without them.
func TestWrapCapabilities(t *testing.T) {
	l, _ := openTestLedger(t)
	ctx := context.Background()
	s := memstream.New(memstream.Config{Lease: time.Minute})
	if err := s.Enqueue(ctx, &peonify.Task{ID: "a", Type: "x"}); err != nil {
		t.Fatal(err)
	}
	w := l.Wrap(s)
	if wk, ok := peonify.As[peonify.Waker](w); !ok || wk.Wake() != s.Wake() {
		t.Error("Wake is not the wrapped stream's channel")
	}
	if n, ok := peonify.As[peonify.Namer](w); !ok || n.Name() != s.Name() {
		t.Errorf("As[Namer] does not find the wrapped stream's name %q", s.Name())
	}
	ds, err := w.Poll(ctx, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Poll = %d, %v", len(ds), err)
	}
	ext, ok := peonify.As[peonify.Extender](w)
	if !ok {
		t.Fatal("As[Extender] does not find the wrapped stream's Extend")
	}
	d, err := ext.Extend(ctx, ds[0], time.Hour)
	if err != nil || time.Until(d.Deadline) < 50*time.Minute {
		t.Fatalf("Extend = deadline in %s, %v; want about an hour", time.Until(d.Deadline), err)
	}

	// Through the wrapper of a stream without the optional interfaces, the
	// processor does not take it for one that has them.
	inner := struct{ peonify.Stream }{s}
	bare := l.Wrap(inner)
	if _, ok := peonify.As[peonify.Extender](bare); ok {
		t.Error("the wrapper of a stream without Extend implements peonify.Extender")
	}
	if _, ok := peonify.As[peonify.Waker](bare); ok {
		t.Error("the wrapper of a stream without Wake implements peonify.Waker")
	}
	if u, ok := bare.(interface{ Unwrap() peonify.Stream }); !ok || u.Unwrap() != inner {
		t.Error("Unwrap does not return the wrapped stream")
	}
}

// A middleware failure to record fails the run, so it is retried rather
// than acked unrecorded.
func TestMiddlewareFailsRunItCannotRecord(t *testing.T) {
	l, _ := openTestLedger(t)
	h := l.Middleware()(peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil }))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Execute(context.Background(), &peonify.Task{ID: "a"}); err == nil {
		t.Fatal("a run whose completion could not be recorded succeeded")
	}
	boom := errors.New("boom")
	h = l.Middleware()(peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return boom }))
	if err := h.Execute(context.Background(), &peonify.Task{ID: "a"}); err != boom {
		t.Fatalf("Execute = %v, want the handler's own error", err)
	}
}

func TestOpenLedgerErrors(t *testing.T) {
	if _, err := OpenLedger("", LedgerConfig{}); err == nil || !strings.Contains(err.Error(), "ledger path") {
		t.Errorf("OpenLedger(\"\") = %v, want an error naming the path", err)
	}
	if _, err := OpenLedger(filepath.Join(t.TempDir(), "missing", "ledger"), LedgerConfig{}); err == nil {
		t.Error("OpenLedger in a missing directory succeeded")
	}
}

// Enqueued records read back in order, with IDs that need escaping, and
// a history whose producer recorded its tasks verifies against them.
func TestLedgerEnqueued(t *testing.T) {
	l, path := openTestLedger(t)
	if err := l.Enqueued("a", "b c", "%d"); err != nil {
		t.Fatal(err)
	}
	if err := l.Enqueued(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b c", "%d"} {
		if err := l.Done(&peonify.Task{ID: id, Attempt: 1}); err != nil {
			t.Fatal(err)
		}
	}
	h := readTestLedger(t, path)
	if got := h.Enqueued(); strings.Join(got, "|") != "a|b c|%d" {
		t.Fatalf("Enqueued = %q, want a, b c, %%d", got)
	}
	if err := h.Verify(h.Enqueued()).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestVerify(t *testing.T) {
	l, path := openTestLedger(t)
	for _, id := range []string{"a", "b", "b", "c", "c", "c", "x"} {
		if err := l.Done(&peonify.Task{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	h := readTestLedger(t, path)
	enqueued := []string{"a", "b", "c", "d"}

	v := h.Verify(enqueued, []string{"b", "c"}, []string{"c"})
	if strings.Join(v.Lost, ",") != "d" || strings.Join(v.Unknown, ",") != "x" || v.Duplicates != 3 || v.Bound != 3 || len(v.Excess) != 0 {
		t.Fatalf("Verify = %+v; want d lost, x unknown, 3 duplicates within a bound of 3", v)
	}
	err := v.Err()
	if err == nil || !strings.Contains(err.Error(), "never completed") || !strings.Contains(err.Error(), "never enqueued") {
		t.Fatalf("Err() = %v, want lost and unknown tasks named", err)
	}

	v = h.Verify([]string{"a", "b", "c"}, []string{"b", "c"})
	if strings.Join(v.Excess, ",") != "c" || v.Duplicates != 3 || v.Bound != 2 {
		t.Fatalf("Verify = %+v; want c in excess, 3 duplicates over a bound of 2", v)
	}
	if err := v.Err(); err == nil || !strings.Contains(err.Error(), "more often") {
		t.Fatalf("Err() = %v, want the excess named", err)
	}
	if err := h.Verify([]string{"a", "b", "c", "x"}, []string{"b", "c", "c"}).Err(); err != nil {
		t.Fatalf("a passing history: %v", err)
	}
}

// TestVerdictAllowLoss checks that only the tasks a fault may lose stop
// counting as lost.
func TestVerdictAllowLoss(t *testing.T) {
	v := Verdict{Tasks: 5, Lost: []string{"a", "b", "c"}}
	v.AllowLoss([]string{"b", "c", "z"})
	if strings.Join(v.Lost, ",") != "a" || strings.Join(v.MayLose, ",") != "b,c" {
		t.Fatalf("after AllowLoss: Lost %v, MayLose %v; want [a], [b c]", v.Lost, v.MayLose)
	}
	if err := v.Err(); err == nil || !strings.Contains(err.Error(), "1 of 5") {
		t.Fatalf("Err() = %v, want the one task not allowed named as lost", err)
	}
	v.AllowLoss([]string{"a"})
	if err := v.Err(); err != nil {
		t.Fatalf("Err() = %v with every loss allowed", err)
	}
}

func TestVerdictErrListsSome(t *testing.T) {
	var lost []string
	for i := range 12 {
		lost = append(lost, strconv.Itoa(i))
	}
	err := Verdict{Tasks: 12, Lost: lost}.Err()
	if err == nil || !strings.Contains(err.Error(), "and 7 more") {
		t.Fatalf("Err() = %v, want the first five and a count of the rest", err)
	}
}

func TestEscape(t *testing.T) {
	for _, id := range []string{"", "plain", "with space", "new\nline", "per%cent", "%", "%41", "tab\there", "\x7f", "ünï🙂"} {
		e := escape(id)
		if strings.ContainsAny(e, " \n\t") || e == "" {
			t.Errorf("escape(%q) = %q, which is not one field", id, e)
		}
		if got := unescape(e); got != id {
			t.Errorf("unescape(escape(%q)) = %q", id, got)
		}
	}
}

func TestTable(t *testing.T) {
	var tbl Table
	tbl.Add(Row{Scenario: "kill", Stream: "sqlite", Tasks: 600, Duplicates: 3, Bound: 20, Took: 4200 * time.Millisecond, Note: "3 kills"})
	tbl.Add(Row{Scenario: "restart", Stream: "sqlite", Skipped: true, Note: "no server"})
	tbl.Add(Row{Scenario: "stop", Stream: "postgres", Tasks: 300, Lost: 1, Failed: true})
	got := tbl.String()
	for _, want := range []string{"scenario", "kill", "3 (≤ 20)", "4.2", "ok", "skip", "FAIL", "3 kills"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if n := len(tbl.Rows()); n != 3 {
		t.Errorf("Rows() has %d rows, want 3", n)
	}
}

// FuzzHistory feeds arbitrary bytes to the ledger reader: it must never
// panic, whatever a dying process left in the file.
func FuzzHistory(f *testing.F) {
	f.Add([]byte("C 1 5 a 1 b 2\nD 1 6 a 1\nA 1 7 a\nN 1 8 released b\na 1 9 c\nE 1 10 %7B%7D\n"))
	f.Add([]byte("D 1 5 a"))
	f.Add([]byte("\n\n%%%\nC 2 3 x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "ledger")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		h, err := ReadLedger(path)
		if err != nil {
			t.Fatal(err)
		}
		_ = h.Held(1)
		_ = h.Verify([]string{"a"}, h.Held(1)).Err()
	})
}

// FuzzEscape checks that any ID survives the ledger as one field.
func FuzzEscape(f *testing.F) {
	f.Add("a b")
	f.Add("%zz")
	f.Add("non\u00a0breaking")
	f.Fuzz(func(t *testing.T, id string) {
		path := filepath.Join(t.TempDir(), "ledger")
		l, err := OpenLedger(path, LedgerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if err := l.Done(&peonify.Task{ID: id}); err != nil {
			t.Fatal(err)
		}
		if h, err := ReadLedger(path); err != nil || h.Completions(id) != 1 {
			t.Fatalf("the completion of %q did not read back: %v", id, err)
		}
		e := escape(id)
		if strings.ContainsAny(e, " \n\t\r\v\f") || e == "" {
			t.Fatalf("escape(%q) = %q, not one field", id, e)
		}
		if got := unescape(e); got != id {
			t.Fatalf("unescape(escape(%q)) = %q", id, got)
		}
	})
}

// Timed records each run's begin, key and end, failed or not, and a run
// still going reads as not ended until its end arrives.
func TestTimedRuns(t *testing.T) {
	l, path := openTestLedger(t)
	boom := errors.New("boom")
	release := make(chan struct{})
	began := make(chan struct{})
	h := l.Timed()(peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
		switch tk.ID {
		case "fails":
			return boom
		case "slow":
			close(began)
			<-release
		}
		return nil
	}))
	if err := h.Execute(context.Background(), &peonify.Task{ID: "ok one", Key: "tenant a", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if err := h.Execute(context.Background(), &peonify.Task{ID: "fails", Attempt: 2}); err != boom {
		t.Fatalf("Execute = %v, want the handler's own error", err)
	}
	done := make(chan error)
	go func() { done <- h.Execute(context.Background(), &peonify.Task{ID: "slow", Attempt: 1}) }()
	<-began
	hist := readTestLedger(t, path)
	runs := hist.Runs()
	if len(runs) != 3 {
		t.Fatalf("Runs() = %+v, want 3", runs)
	}
	if r := runs[0]; r.ID != "ok one" || r.Key != "tenant a" || r.Attempt != 1 || r.Failed || !r.Ended() ||
		r.Pid != os.Getpid() || r.End.Before(r.Start) || time.Since(r.Start) > time.Minute {
		t.Errorf("first run = %+v", r)
	}
	if r := runs[1]; r.ID != "fails" || r.Key != "" || r.Attempt != 2 || !r.Failed || !r.Ended() {
		t.Errorf("second run = %+v", r)
	}
	if r := runs[2]; r.ID != "slow" || r.Ended() {
		t.Errorf("running run = %+v, want not ended", r)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := hist.Refresh(); err != nil {
		t.Fatal(err)
	}
	if r := hist.Runs()[2]; !r.Ended() || r.Failed {
		t.Errorf("run after it returned = %+v, want ended, not failed", r)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Execute(context.Background(), &peonify.Task{ID: "x"}); err == nil {
		t.Error("a run whose begin could not be recorded succeeded")
	}
}

// Marks read back by name, in order, with fields that need escaping.
func TestMarks(t *testing.T) {
	l, path := openTestLedger(t)
	for _, m := range [][]string{{"poll", "0"}, {"up"}, {"poll", "3", "a b%"}} {
		if err := l.Mark(m[0], m[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	h := readTestLedger(t, path)
	polls := h.Marks("poll")
	if len(polls) != 2 || strings.Join(polls[0].Fields, "|") != "0" || strings.Join(polls[1].Fields, "|") != "3|a b%" ||
		polls[0].Pid != os.Getpid() || polls[1].At.Before(polls[0].At) {
		t.Errorf("Marks(poll) = %+v", polls)
	}
	if up := h.Marks("up"); len(up) != 1 || len(up[0].Fields) != 0 {
		t.Errorf("Marks(up) = %+v", up)
	}
	if n := h.Marks("none"); len(n) != 0 {
		t.Errorf("Marks(none) = %+v", n)
	}
}
