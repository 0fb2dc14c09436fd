package peonifytest_test

import (
	"context"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifytest"
	"github.com/peonify/peonify/streams/memstream"
)

// conformance is how a stream package runs the suite: from a test
// function, with a new, empty stream for each check and the lease the
// stream was given. A stream for a server finds it with the repository's
// test environment and names its queue uniquely per call.
func conformance(t *testing.T) {
	const lease = 500 * time.Millisecond
	peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
		s := memstream.New(memstream.Config{Lease: lease})
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		return s
	}, peonifytest.Features{Lease: lease})
}

// A stream's conformance test, as it appears in the stream's package as
// func TestConformance(t *testing.T).
func Example() {
	_ = conformance
}
