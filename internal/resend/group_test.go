package resend

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// holdFirstSync makes the first sync of l wait until n more records wait
// for theirs, then return first; later syncs return next(). It returns
// the count of syncs.
func holdFirstSync(t *testing.T, l *Log, n int, first error, next func() error) *int {
	t.Helper()
	var syncs int
	real := l.sync
	l.sync = func(f *os.File) error {
		syncs++ // syncs do not overlap
		if syncs > 1 {
			if err := next(); err != nil {
				return err
			}
			return real(f)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			l.mu.Lock()
			waiting := 0
			if l.next != nil {
				waiting = l.next.n
			}
			l.mu.Unlock()
			if waiting == n {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%d records wait for a sync, want %d", waiting, n)
				break
			}
			time.Sleep(time.Millisecond) // nothing to wait on: the Records wait in the Log
		}
		if first != nil {
			return first
		}
		return real(f)
	}
	return &syncs
}

// recordAll records "0".."n-1", each in its own goroutine, and returns
// their errors.
func recordAll(l *Log, n int) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = l.Record(fmt.Sprint(i)) })
	}
	wg.Wait()
	return errs
}

// The Records that arrive while the file is written share the next write
// and sync, and each returns once its record is synced.
func TestGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r")
	l, err := Open(path, time.Hour, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	syncs := holdFirstSync(t, l, 8, nil, func() error { return nil })
	for i, err := range recordAll(l, 9) {
		if err != nil {
			t.Fatalf("Record %d: %v", i, err)
		}
	}
	if *syncs != 2 {
		t.Fatalf("9 concurrent Records synced the file %d times, want 2 (the first, then the other 8 at once)", *syncs)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(path, time.Hour, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 9 {
		if !l.Seen(fmt.Sprint(i)) {
			t.Fatalf("record %d not in the file", i)
		}
	}
}

// A failed sync is returned to every Record whose record it held, and to
// every Record after it.
func TestGroupCommitFailure(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "r"), time.Hour, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	bad := errors.New("disk on fire")
	holdFirstSync(t, l, 8, nil, func() error { return bad })
	failed := 0
	for _, err := range recordAll(l, 9) {
		if errors.Is(err, bad) {
			failed++
		}
	}
	if failed != 8 {
		t.Fatalf("%d Records returned the failed sync, want the 8 it held", failed)
	}
	if err := l.Record("later"); !errors.Is(err, bad) {
		t.Fatalf("Record after a failed sync = %v, want it", err)
	}
	if !l.Seen("later") {
		t.Fatal("an ID is not remembered in memory after a failed sync")
	}
}

// Parallel Records on a real file: "serial" takes turns, one write and
// sync per Record, as the Log did before its group commit; "group" is the
// Log.
func BenchmarkRecordParallel(b *testing.B) {
	for _, mode := range []string{"serial", "group"} {
		b.Run(mode, func(b *testing.B) {
			l, err := Open(filepath.Join(b.TempDir(), "r"), time.Hour, 1<<20, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			var turns sync.Mutex
			var next sync.Mutex
			n := 0
			b.SetParallelism(8) // connections waiting, not CPUs working
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					next.Lock()
					n++
					id := fmt.Sprint(n)
					next.Unlock()
					if mode == "serial" {
						turns.Lock()
					}
					err := l.Record(id)
					if mode == "serial" {
						turns.Unlock()
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// Concurrent Records while the file is rewritten leave the file holding
// what the Log remembers.
func TestGroupCommitRewrite(t *testing.T) {
	c := newClock()
	path := filepath.Join(t.TempDir(), "r")
	l, err := Open(path, time.Minute, 1<<20, c.now)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				ids := make([]string, 10)
				for j := range ids {
					ids[j] = fmt.Sprint(g, "-", i, "-", j)
				}
				if err := l.Record(ids...); err != nil {
					t.Error(err)
					return
				}
				if i%25 == 24 {
					c.add(10 * time.Second)
				}
			}
		})
	}
	wg.Wait()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := fi.Size() / recordSize; n >= 8*300*10 {
		t.Fatalf("the file holds all %d records; want it rewritten", n)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(path, time.Minute, 1<<20, c.now)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for g := range 8 {
		for i := range 300 {
			for j := range 10 {
				id := fmt.Sprint(g, "-", i, "-", j)
				if l.Seen(id) != l2.Seen(id) {
					t.Fatalf("%s: seen %v in memory, %v in the file", id, l.Seen(id), l2.Seen(id))
				}
			}
		}
	}
}
