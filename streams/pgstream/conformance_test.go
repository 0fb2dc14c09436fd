package pgstream

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/peonifytest"
)

// TestConformance runs the public stream suite against the real server.
// Its parallel subtests share one pool, sized for a listening connection
// per stream plus the claimers.
func TestConformance(t *testing.T) {
	cfg, err := pgxpool.ParseConfig(testenv.URL(t, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 48
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := MigrateSchema(t.Context(), pool, testSchema); err != nil {
		t.Fatal(err)
	}
	const lease = 500 * time.Millisecond
	peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
		return newTestStream(t, pool, Config{Lease: lease, RescueInterval: 25 * time.Millisecond})
	}, peonifytest.Features{Lease: lease, NoTracker: true, NoWorkflows: true}) // the flags go when the store implements issue 16
}
