package wsstream

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// openSQLite opens a SQLite store that keeps no finished task (KeepDone
// 0, its default), closed at the end of the test.
func openSQLite(t *testing.T, path string) *sqlitestream.Stream {
	t.Helper()
	s, err := sqlitestream.Open(path, sqlitestream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// runAll claims and acks every task of store, as a processor that ran
// them would; the store then forgets them. It returns their IDs.
func runAll(t *testing.T, store *sqlitestream.Stream) []string {
	t.Helper()
	ds, err := store.Poll(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.Task.ID)
	}
	if err := store.Ack(context.Background(), ds...); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(context.Background(), "dup-1"); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("the store still holds dup-1 after its ack (err %v): this test needs a store that forgets", err)
	}
	return ids
}

// A task resent after it ran, when the store has already forgotten it,
// is acknowledged and not stored (so not run) again.
func TestResendAfterTaskRanIsNotStoredAgain(t *testing.T) {
	store := openSQLite(t, filepath.Join(t.TempDir(), "tasks.db"))
	_, url := serve(t, store, Config{})
	c := dialRaw(t, url, nil)
	c.send(`{"id":"dup-1","type":"t","payload":{}}`)
	c.want(`{"ack":"dup-1"}`)
	if ids := runAll(t, store); len(ids) != 1 {
		t.Fatalf("ran %v, want dup-1", ids)
	}

	c.send(`{"id":"dup-1","type":"t","payload":{}}`)
	c.want(`{"ack":"dup-1"}`)
	if n := total(t, store); n != 0 {
		t.Fatalf("the resend was stored again: the store holds %d tasks, want 0", n)
	}
	// A resend within a batch of new tasks: only the new ones are stored.
	c.send(`{"id":"new-1","type":"t"}`)
	c.send(`{"id":"dup-1","type":"t"}`)
	c.send(`{"id":"new-2","type":"t"}`)
	c.want(`{"ack":"new-1"}`)
	c.want(`{"ack":"dup-1"}`)
	c.want(`{"ack":"new-2"}`)
	if n := total(t, store); n != 2 {
		t.Fatalf("the store holds %d tasks, want new-1 and new-2", n)
	}
}

// With a ResendLog the window holds across a restart of the Handler.
func TestResendAfterRestartIsNotStoredAgain(t *testing.T) {
	dir := t.TempDir()
	store := openSQLite(t, filepath.Join(dir, "tasks.db"))
	log := filepath.Join(dir, "ws.resends")

	h1, url1 := serve(t, store, Config{ResendLog: log})
	c := dialRaw(t, url1, nil)
	c.send(`{"id":"dup-1","type":"t","payload":{}}`)
	c.want(`{"ack":"dup-1"}`)
	runAll(t, store)
	_ = c.ws.CloseNow()
	if err := h1.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	_, url2 := serve(t, store, Config{ResendLog: log})
	c = dialRaw(t, url2, nil)
	c.send(`{"id":"dup-1","type":"t","payload":{}}`)
	c.want(`{"ack":"dup-1"}`)
	if n := total(t, store); n != 0 {
		t.Fatalf("the resend after a restart was stored again: the store holds %d tasks, want 0", n)
	}
}

// After the ResendWindow a resend is a new task, and with the window off
// only the store detects resends.
func TestResendWindowEnds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		window time.Duration
	}{{"after the window", 100 * time.Millisecond}, {"window off", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			store := openSQLite(t, filepath.Join(t.TempDir(), "tasks.db"))
			_, url := serve(t, store, Config{ResendWindow: tc.window})
			c := dialRaw(t, url, nil)
			c.send(`{"id":"dup-1","type":"t","payload":{}}`)
			c.want(`{"ack":"dup-1"}`)
			runAll(t, store)
			if tc.window > 0 {
				time.Sleep(tc.window + 50*time.Millisecond) // the window is time itself
			}
			c.send(`{"id":"dup-1","type":"t","payload":{}}`)
			c.want(`{"ack":"dup-1"}`)
			if n := total(t, store); n != 1 {
				t.Fatalf("the store holds %d tasks, want the resend stored again", n)
			}
		})
	}
}

// A ResendLog that cannot be opened fails New, naming the field.
func TestResendLogCannotOpen(t *testing.T) {
	_, err := New(newMem(t), Config{ResendLog: t.TempDir()}) // a directory
	if err == nil || !strings.Contains(err.Error(), "Config.ResendLog") {
		t.Fatalf("New = %v, want an error naming Config.ResendLog", err)
	}
}
