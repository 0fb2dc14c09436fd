package memstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifytest"
	"github.com/peonify/peonify/streams/memstream"
)

// TestConformance runs the public stream conformance suite against
// memstream, which implements every optional capability.
func TestConformance(t *testing.T) {
	const lease = 300 * time.Millisecond
	peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
		s := memstream.New(memstream.Config{Lease: lease})
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		return s
	}, peonifytest.Features{Lease: lease})
}
