package redisstream

import (
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifytest"
)

// TestConformance runs the public stream suite against the real server,
// each check on a stream with a key prefix of its own. Redis streams are
// FIFO, so the suite's priority check does not apply.
func TestConformance(t *testing.T) {
	c := testClient(t)
	const lease = 500 * time.Millisecond
	peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
		return newTestStream(t, c, Config{Lease: lease, RescueInterval: 20 * time.Millisecond})
	}, peonifytest.Features{
		Lease:      lease,
		NoPriority: true,
	})
}
