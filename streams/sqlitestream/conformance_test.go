package sqlitestream_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifytest"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// TestConformance runs the public stream conformance suite against a new
// database file for each check.
func TestConformance(t *testing.T) {
	const lease = 500 * time.Millisecond
	peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
		s, err := sqlitestream.Open(filepath.Join(t.TempDir(), "tasks.db"), sqlitestream.Config{Lease: lease})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		return s
	}, peonifytest.Features{
		Lease:     lease,
		NoTracker: true, NoWorkflows: true, // until the store implements issue 16
	})
}
