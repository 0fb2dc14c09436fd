package main

import (
	"context"
	"strconv"
)

// system is one task processor under test, set up on a fresh database with
// a no-op handler that reports to a recorder.
type system interface {
	// Insert stores the tasks with sequence numbers first..first+count-1
	// in one batch, with the fastest batch insert the library offers.
	Insert(ctx context.Context, first, count int) error

	// Start starts working tasks in the background.
	Start(ctx context.Context) error

	// Stop stops working and waits until the system has shut down.
	Stop(ctx context.Context) error

	// Verify checks in the database that every task completed and nothing
	// is left pending, running or dead.
	Verify(ctx context.Context, n int) error

	// Close releases the database; the system cannot be used after it.
	Close()
}

// newSystemFunc sets a system up on a fresh database of e.
type newSystemFunc func(ctx context.Context, e *env, rec *recorder) (system, error)

// benchArgs is the payload of every task: its sequence number, as JSON.
type benchArgs struct {
	Seq int `json:"seq"`
}

// payload returns the JSON of benchArgs{seq} without reflection, so the
// producers' cost is the libraries', not the encoder's.
func payload(seq int) []byte {
	b := make([]byte, 0, 20)
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, int64(seq), 10)
	return append(b, '}')
}
