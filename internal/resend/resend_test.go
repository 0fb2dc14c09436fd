package resend

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// clock is a clock the tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func TestRecordSeenAndExpire(t *testing.T) {
	c := newClock()
	l, err := Open("", time.Hour, 100, c.now)
	if err != nil {
		t.Fatal(err)
	}
	if l.Seen("a") {
		t.Fatal("a seen before it was recorded")
	}
	if err := l.Record("a", "b"); err != nil {
		t.Fatal(err)
	}
	c.add(30 * time.Minute)
	if err := l.Record("b"); err != nil { // recorded again: its window starts again
		t.Fatal(err)
	}
	if !l.Seen("a") || !l.Seen("b") {
		t.Fatal("a recorded ID is not seen within the window")
	}
	c.add(31 * time.Minute)
	if l.Seen("a") {
		t.Fatal("a is still seen after the window")
	}
	if !l.Seen("b") {
		t.Fatal("b, recorded again 31 minutes ago, is not seen")
	}
	c.add(30 * time.Minute)
	if l.Seen("b") {
		t.Fatal("b is still seen after the window")
	}
}

func TestMax(t *testing.T) {
	l, err := Open("", time.Hour, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Record("a", "b", "c"); err != nil {
		t.Fatal(err)
	}
	if l.Seen("a") || !l.Seen("b") || !l.Seen("c") {
		t.Fatal("the Log does not keep the newest max IDs")
	}
}

// The records survive reopening, a torn last record is ignored, and the
// expired ones are dropped from the file.
func TestFile(t *testing.T) {
	c := newClock()
	path := filepath.Join(t.TempDir(), "ws.resends")
	l, err := Open(path, time.Hour, 100, c.now)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Record("old"); err != nil {
		t.Fatal(err)
	}
	c.add(40 * time.Minute)
	if err := l.Record("new"); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("torn")); err != nil {
		t.Fatal(err)
	}
	f.Close()

	c.add(30 * time.Minute)
	l, err = Open(path, time.Hour, 100, c.now)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Seen("old") || !l.Seen("new") {
		t.Fatal("reopening did not keep exactly the records within the window")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != recordSize {
		t.Fatalf("the file holds %d bytes after reopening; want one record (%d)", fi.Size(), recordSize)
	}
	if err := l.Record("newer"); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(path, time.Hour, 100, c.now)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if !l2.Seen("new") || !l2.Seen("newer") {
		t.Fatal("a record appended after reopening is lost")
	}
}

// Expired records are rewritten out of the file as it grows.
func TestRewrite(t *testing.T) {
	c := newClock()
	path := filepath.Join(t.TempDir(), "ws.resends")
	l, err := Open(path, time.Minute, 1<<20, c.now)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 400 { // 20,000 IDs, 1,000 a minute
		ids := make([]string, 50)
		for j := range ids {
			ids[j] = fmt.Sprint(i, "-", j)
		}
		if err := l.Record(ids...); err != nil {
			t.Fatal(err)
		}
		if i%20 == 19 {
			c.add(time.Minute)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := fi.Size() / recordSize; n > 8000 {
		t.Fatalf("the file holds %d records, most of them expired; want it rewritten", n)
	}
}
