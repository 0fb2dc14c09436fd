// Package intaketest is the conformance suite of Peonify's push intakes
// (webhookstream, wsstream, mqttstream) and the test helpers their tests
// share: a store that fails or stalls on demand in front of a real one, a
// SQLite store that forgets finished tasks, and small waits and counts.
//
// An intake is the other side of a stream: it takes tasks from senders
// and stores them with peonify.Enqueuer. Every intake promises its
// senders the same three things, which Run checks against a real
// sqlitestream store, the intake serving on loopback (and, for MQTT, a
// real broker):
//
//   - the durable write happens before the sender is acknowledged;
//   - a store that fails means the sender is told to retry, and nothing
//     is stored;
//   - a resend is recognised: it is acknowledged and not stored twice,
//     while the store holds the task and, for intakes with a resend
//     window, after the task ran and the store forgot it, and after a
//     restart of the intake.
//
// The suite is internal, not a part of peonifytest: intakes are not a
// contract of the root package (each speaks its own protocol, and the
// root has no Intake interface to hold them to), peonifytest must import
// only the standard library, and the suite's value is in running on a real
// store (sqlitestream), which peonifytest could not import. Each intake
// package supplies a small Driver: how to start it over a store, and how a
// sender sends one task and learns what it was told. KillAfterAck proves
// the first promise across a SIGKILL of the intake's process, which runs
// with streamtest's child harness.
package intaketest

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// Answer is what a sender was told about one task it sent.
type Answer int

// The answers.
const (
	// Accepted: the task is stored (now or before); the sender may
	// forget it.
	Accepted Answer = iota + 1
	// Retry: the task is not stored; the sender should send it again
	// later.
	Retry
	// Refused: the task will never be stored.
	Refused
)

func (a Answer) String() string {
	switch a {
	case Accepted:
		return "accepted"
	case Retry:
		return "retry"
	case Refused:
		return "refused"
	}
	return "no answer"
}

// Send sends one task with this ID and payload to the intake and returns
// what the sender was told, once it was told. It is called from the
// test's goroutine or from one other goroutine at a time.
type Send func(id string, payload []byte) Answer

// Start starts the intake over store and returns how to send to it and
// how to stop it; the intake also stops when the test ends. Start may be
// called again after stop, in the same test, over the same store: the new
// intake keeps what the intake keeps across restarts (an MQTT session, a
// resend log).
type Start func(store peonify.Enqueuer) (send Send, stop func())

// Driver is how the suite drives one intake.
type Driver struct {
	// New returns how to start a fresh intake of the test t, with
	// durable state of its own (a session, a resend log under t.TempDir).
	New func(t *testing.T) Start

	// TaskID returns the ID of the task that the intake stores for a
	// task sent with id. Defaults to id itself.
	TaskID func(id string) string

	// ResendWindow says that the intake remembers what it stored for a
	// while, so that it recognises a resend after the store forgot the
	// task and after a restart. Without it, the suite checks resends only
	// while the store holds the task.
	ResendWindow bool
}

// Run runs the conformance suite on the intake that d drives.
func Run(t *testing.T, d Driver) {
	t.Helper()
	if d.TaskID == nil {
		d.TaskID = func(id string) string { return id }
	}
	t.Run("DurableBeforeAck", func(t *testing.T) { durableBeforeAck(t, d) })
	t.Run("StoreFailureMeansRetry", func(t *testing.T) { storeFailure(t, d) })
	t.Run("ResendIsRecognised", func(t *testing.T) { resend(t, d) })
	if d.ResendWindow {
		t.Run("ResendAfterTaskRan", func(t *testing.T) { resendAfterRun(t, d) })
		t.Run("ResendAfterRestart", func(t *testing.T) { resendAfterRestart(t, d) })
	}
}

// storeIn returns a real store in a fresh file of the test, behind a
// FaultStore.
func storeIn(t *testing.T) (*FaultStore, *sqlitestream.Stream) {
	s := OpenSQLite(t, filepath.Join(t.TempDir(), "tasks.db"))
	return &FaultStore{Enqueuer: s}, s
}

// The acknowledgement of a task comes only after the store's Enqueue
// returned: while the store holds the call, the sender hears nothing; once
// it returns, the sender is told the task is accepted, and it is in the
// store, byte for byte.
func durableBeforeAck(t *testing.T, d Driver) {
	fs, store := storeIn(t)
	fs.Hold()
	send, _ := d.New(t)(fs)
	payload := []byte(`{"durable":"before ack"}`)
	answered := make(chan Answer, 1)
	go func() { answered <- send("d-1", payload) }()
	ids := fs.Held(t)
	select {
	case a := <-answered:
		t.Fatalf("the sender was told %s while the store still held the Enqueue of %v", a, ids)
	case <-time.After(200 * time.Millisecond):
	}
	fs.Release()
	if a := waitAnswer(t, answered); a != Accepted {
		t.Fatalf("the sender was told %s, want %s", a, Accepted)
	}
	got := Stored(t, store, d.TaskID("d-1"))
	if got == nil || string(got.Payload) != string(payload) {
		t.Fatalf("accepted task stored as %+v, want payload %s", got, payload)
	}
}

// A store that fails makes the intake tell the sender to retry, and store
// nothing; the sender's retry is accepted once the store is back, and
// stores the task once.
func storeFailure(t *testing.T, d Driver) {
	fs, store := storeIn(t)
	fs.Fail(ErrUnavailable)
	send, _ := d.New(t)(fs)
	if a := send("f-1", []byte(`{}`)); a != Retry {
		t.Fatalf("with the store failing, the sender was told %s, want %s", a, Retry)
	}
	if n := Total(t, store); n != 0 {
		t.Fatalf("a failing store holds %d tasks, want none", n)
	}
	fs.Fail(nil)
	if a := send("f-1", []byte(`{}`)); a != Accepted {
		t.Fatalf("the retry once the store was back was told %s, want %s", a, Accepted)
	}
	wantOnly(t, store, d.TaskID("f-1"))
}

// A task sent again while the store holds it is acknowledged and not
// stored twice.
func resend(t *testing.T, d Driver) {
	fs, store := storeIn(t)
	send, _ := d.New(t)(fs)
	for i := range 3 {
		if a := send("r-1", []byte(`{"n":1}`)); a != Accepted {
			t.Fatalf("send %d of the same task was told %s, want %s", i+1, a, Accepted)
		}
	}
	wantOnly(t, store, d.TaskID("r-1"))
}

// A task sent again after it ran, when the store has already forgotten
// it, is acknowledged and not stored (so not run) again.
func resendAfterRun(t *testing.T, d Driver) {
	fs, store := storeIn(t)
	send, _ := d.New(t)(fs)
	if a := send("ran-1", []byte(`{}`)); a != Accepted {
		t.Fatalf("told %s, want %s", a, Accepted)
	}
	if ids := RunAll(t, store); len(ids) != 1 {
		t.Fatalf("ran %v, want one task", ids)
	}
	if a := send("ran-1", []byte(`{}`)); a != Accepted {
		t.Fatalf("the resend was told %s, want %s", a, Accepted)
	}
	if n := Total(t, store); n != 0 {
		t.Fatalf("the resend was stored again: the store holds %d tasks, want 0", n)
	}
}

// The resend window holds across a restart of the intake.
func resendAfterRestart(t *testing.T, d Driver) {
	fs, store := storeIn(t)
	start := d.New(t)
	send, stop := start(fs)
	if a := send("rs-1", []byte(`{}`)); a != Accepted {
		t.Fatalf("told %s, want %s", a, Accepted)
	}
	RunAll(t, store)
	stop()
	send, _ = start(fs)
	if a := send("rs-1", []byte(`{}`)); a != Accepted {
		t.Fatalf("the resend after a restart was told %s, want %s", a, Accepted)
	}
	if n := Total(t, store); n != 0 {
		t.Fatalf("the resend after a restart was stored again: the store holds %d tasks, want 0", n)
	}
}

// wantOnly fails the test unless the store holds exactly one task, id.
func wantOnly(t *testing.T, store peonify.Inspector, id string) {
	t.Helper()
	if n := Total(t, store); n != 1 || Stored(t, store, id) == nil {
		t.Fatalf("the store holds %d tasks, want only %s", n, id)
	}
}

func waitAnswer(t *testing.T, answered <-chan Answer) Answer {
	t.Helper()
	select {
	case a := <-answered:
		return a
	case <-time.After(15 * time.Second):
		t.Fatal("the sender was told nothing within 15s")
		return 0
	}
}

// ErrUnavailable is the failure a FaultStore reports by default.
var ErrUnavailable = errors.New("disk full (injected)")

// FaultStore wraps a real store to refuse or hold its enqueues, as a
// failing or stalled store would.
type FaultStore struct {
	peonify.Enqueuer

	mu        sync.Mutex
	fail      error         // what every call returns while set
	refuse    int           // refuse this many more calls
	refuseErr error         // what a refused call returns
	refuseID  string        // refuse every call with a task of this ID as invalid
	gate      chan struct{} // while not nil, each call waits for it to close
	held      chan []string // receives the IDs of each call since Hold
	calls     int
}

// Fail makes every call return err from now on; nil ends it.
func (f *FaultStore) Fail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

// Refuse makes the next n calls return err, or ErrUnavailable if err is
// nil.
func (f *FaultStore) Refuse(n int, err error) {
	if err == nil {
		err = ErrUnavailable
	}
	f.mu.Lock()
	f.refuse, f.refuseErr = n, err
	f.mu.Unlock()
}

// RefuseID makes every call with a task of this ID fail with an
// InvalidTaskError.
func (f *FaultStore) RefuseID(id string) {
	f.mu.Lock()
	f.refuseID = id
	f.mu.Unlock()
}

// Hold makes every call wait, from now on, until Release, and report its
// task IDs to Held.
func (f *FaultStore) Hold() {
	f.mu.Lock()
	f.gate = make(chan struct{})
	f.held = make(chan []string, 1000)
	f.mu.Unlock()
}

// Held waits for the next call since Hold (held at the gate, or let
// through after Release) and returns its task IDs.
func (f *FaultStore) Held(t testing.TB) []string {
	t.Helper()
	f.mu.Lock()
	held := f.held
	f.mu.Unlock()
	select {
	case ids := <-held:
		return ids
	case <-time.After(15 * time.Second):
		t.Fatal("no Enqueue reached the store within 15s")
		return nil
	}
}

// Release lets the held calls, and those to come, through; they still
// report their IDs to Held.
func (f *FaultStore) Release() {
	f.mu.Lock()
	if f.gate != nil {
		select {
		case <-f.gate:
		default:
			close(f.gate)
		}
	}
	f.mu.Unlock()
}

// Calls returns how many times Enqueue was called, refused calls included.
func (f *FaultStore) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// Enqueue passes the call on unless the store is made to fail, refuse or
// hold it.
func (f *FaultStore) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	f.mu.Lock()
	f.calls++
	gate, held, fail, refuseID := f.gate, f.held, f.fail, f.refuseID
	var refused error
	if f.refuse > 0 {
		f.refuse--
		refused = f.refuseErr
	}
	f.mu.Unlock()
	if gate != nil {
		ids := make([]string, len(tasks))
		for i, t := range tasks {
			ids[i] = t.ID
		}
		select {
		case held <- ids:
		default: // nobody is reading: a test that holds calls reads them
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if refuseID != "" {
		for _, t := range tasks {
			if t.ID == refuseID {
				return &peonify.InvalidTaskError{ID: t.ID, Reason: "refused"}
			}
		}
	}
	switch {
	case fail != nil:
		return fail
	case refused != nil:
		return refused
	}
	return f.Enqueuer.Enqueue(ctx, tasks...)
}

// Holding returns a FaultStore over e that holds every call until
// Release (see Hold).
func Holding(e peonify.Enqueuer) *FaultStore {
	f := &FaultStore{Enqueuer: e}
	f.Hold()
	return f
}
