package pgstream

import (
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/peonifytest"
)

// TestConformance runs the public stream suite against the real server.
// Its parallel subtests share one pool, sized for a listening connection
// per stream plus the claimers.
func TestConformance(t *testing.T) {
	pool := migratedPool(t, testenv.URL(t, "postgres"), 48)
	const lease = 500 * time.Millisecond
	peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
		return newTestStream(t, pool, Config{Lease: lease, RescueInterval: 25 * time.Millisecond})
	}, peonifytest.Features{Lease: lease})
}
