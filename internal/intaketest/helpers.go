package intaketest

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// Logger returns a logger of every level whose lines go to t.Log, next to
// the test's own lines.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// NewMem returns an in-memory store, closed at the end of the test.
func NewMem(t testing.TB) *memstream.Stream {
	s := memstream.New(memstream.Config{})
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// OpenSQLite opens a SQLite store in the file at path that keeps no
// finished task (KeepDone 0, its default), closed at the end of the test
// unless a processor closed it first.
func OpenSQLite(t testing.TB, path string) *sqlitestream.Stream {
	t.Helper()
	return OpenSQLiteWith(t, path, sqlitestream.Config{})
}

// OpenSQLiteWith is OpenSQLite with cfg, whose Logger defaults to the
// test's.
func OpenSQLiteWith(t testing.TB, path string, cfg sqlitestream.Config) *sqlitestream.Stream {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = Logger(t)
	}
	s, err := sqlitestream.Open(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// RunAll claims and acks every task of store, as a processor that ran
// them would; a store that keeps no finished task then forgets them. It
// returns their IDs.
func RunAll(t testing.TB, store peonify.Stream) []string {
	t.Helper()
	ds, err := store.Poll(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.Task.ID
	}
	if err := store.Ack(context.Background(), ds...); err != nil {
		t.Fatal(err)
	}
	return ids
}

// Total returns how many tasks a store holds, in any state.
func Total(t testing.TB, s peonify.Inspector) int {
	t.Helper()
	c, err := s.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// Stored returns the task with this ID in a store, or nil.
func Stored(t testing.TB, s peonify.Inspector, id string) *peonify.Task {
	t.Helper()
	info, err := s.Get(context.Background(), id)
	if errors.Is(err, peonify.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return &info.Task
}

// Eventually waits until cond, which reads state the test does not get
// signals of, holds; it fails the test after 15 seconds.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
