package wsstream

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"

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

// gatedStore holds every Enqueue until its gate opens, and counts the
// Enqueue calls of each task ID.
type gatedStore struct {
	peonify.Enqueuer
	gate    chan struct{}
	entered chan string
	mu      sync.Mutex
	calls   map[string]int
}

func (s *gatedStore) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	s.mu.Lock()
	for _, t := range tasks {
		s.calls[t.ID]++
	}
	s.mu.Unlock()
	for _, t := range tasks {
		select {
		case s.entered <- t.ID:
		default: // the test failed already
		}
	}
	select {
	case <-s.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Enqueuer.Enqueue(ctx, tasks...)
}

// A resend that arrives on a new connection while the first connection's
// Enqueue of the same task is still running (the client reconnected and
// sent it again before that Enqueue returned) waits for it and is
// acknowledged without a second Enqueue, which a store that detects no
// duplicates (RabbitMQ) would store twice.
func TestResendWhileFirstSendIsStoring(t *testing.T) {
	store := &gatedStore{Enqueuer: intaketest.NewMem(t), gate: make(chan struct{}), entered: make(chan string, 10), calls: make(map[string]int)}
	_, url := serve(t, store, Config{EnqueueTimeout: 3 * time.Second})
	first, second := dialRaw(t, url, nil), dialRaw(t, url, nil)
	first.send(`{"id":"slow-1","type":"t"}`)
	if id := <-store.entered; id != "slow-1" {
		t.Fatalf("the store got %s, want slow-1", id)
	}
	second.send(`{"id":"slow-1","type":"t"}`)
	select {
	case id := <-store.entered:
		t.Fatalf("a second Enqueue of %s began while the first was running", id)
	case <-time.After(200 * time.Millisecond):
	}
	close(store.gate)
	first.want(`{"ack":"slow-1"}`)
	second.want(`{"ack":"slow-1"}`)
	store.mu.Lock()
	defer store.mu.Unlock()
	if n := store.calls["slow-1"]; n != 1 {
		t.Fatalf("slow-1 reached the store %d times, want once", n)
	}
}
