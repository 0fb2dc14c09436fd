package wsstream

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/intaketest"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// runAll runs every task of store, which must then have forgotten them.
func runAll(t *testing.T, store *sqlitestream.Stream) []string {
	t.Helper()
	ids := intaketest.RunAll(t, store)
	if n := intaketest.Total(t, store); n != 0 {
		t.Fatalf("the store still holds %d tasks after their acks: this test needs a store that forgets", n)
	}
	return ids
}

// A task resent after it ran, when the store has already forgotten it,
// is acknowledged and not stored (so not run) again, alone (as the
// conformance suite checks too) or in a batch of new tasks.
func TestResendAfterTaskRanIsNotStoredAgain(t *testing.T) {
	store := intaketest.OpenSQLite(t, filepath.Join(t.TempDir(), "tasks.db"))
	_, url := serve(t, store, Config{})
	c := dialRaw(t, url, nil)
	c.send(`{"id":"dup-1","type":"t","payload":{}}`)
	c.want(`{"ack":"dup-1"}`)
	if ids := runAll(t, store); len(ids) != 1 {
		t.Fatalf("ran %v, want dup-1", ids)
	}

	c.send(`{"id":"dup-1","type":"t","payload":{}}`)
	c.want(`{"ack":"dup-1"}`)
	if n := intaketest.Total(t, store); n != 0 {
		t.Fatalf("the resend was stored again: the store holds %d tasks, want 0", n)
	}
	// A resend within a batch of new tasks: only the new ones are stored.
	c.send(`{"id":"new-1","type":"t"}`)
	c.send(`{"id":"dup-1","type":"t"}`)
	c.send(`{"id":"new-2","type":"t"}`)
	c.want(`{"ack":"new-1"}`)
	c.want(`{"ack":"dup-1"}`)
	c.want(`{"ack":"new-2"}`)
	if n := intaketest.Total(t, store); n != 2 {
		t.Fatalf("the store holds %d tasks, want new-1 and new-2", n)
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
			store := intaketest.OpenSQLite(t, filepath.Join(t.TempDir(), "tasks.db"))
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
			if n := intaketest.Total(t, store); n != 1 {
				t.Fatalf("the store holds %d tasks, want the resend stored again", n)
			}
		})
	}
}

// A ResendLog that cannot be opened fails New, naming the field.
func TestResendLogCannotOpen(t *testing.T) {
	_, err := New(intaketest.NewMem(t), Config{ResendLog: t.TempDir()}) // a directory
	if err == nil || !strings.Contains(err.Error(), "Config.ResendLog") {
		t.Fatalf("New = %v, want an error naming Config.ResendLog", err)
	}
}
