package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify/internal/streamtest"
)

// env is where a run's systems live: the backend, and how to make a fresh
// database on it for each system and mode.
type env struct {
	backend string // "sqlite" or "postgres"
	pgURL   string
	pgConns int32  // pool size for every system on postgres
	dir     string // temporary directory for SQLite files
	log     *slog.Logger
}

// randName returns prefix followed by 12 random hex digits: a schema, queue
// or file name that no other run uses.
func randName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// sqliteFile returns the path of a new SQLite file in the run's temporary
// directory.
func (e *env) sqliteFile(label string) string {
	return filepath.Join(e.dir, randName(label+"-")+".db")
}

// removeSQLite deletes a SQLite file with its WAL and shared-memory files.
func removeSQLite(path string) {
	for _, suffix := range []string{"", "-wal", "-shm"} {
		_ = os.Remove(path + suffix)
	}
}

// freshSchema is a new, empty Postgres schema with a pool whose
// connections look there first.
type freshSchema struct {
	name string
	pool *pgxpool.Pool
	url  string
}

// newSchema creates a schema that no other run uses and a pool of
// e.pgConns connections on it.
func (e *env) newSchema(ctx context.Context) (*freshSchema, error) {
	name := randName("pbench_")
	conn, err := pgx.Connect(ctx, e.pgURL)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres (set -pg-url or PEONIFY_TEST_POSTGRES_URL): %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		return nil, fmt.Errorf("create schema %s: %w", name, err)
	}
	cfg, err := pgxpool.ParseConfig(e.pgURL)
	if err != nil {
		return nil, fmt.Errorf("parse -pg-url: %w", err)
	}
	cfg.MaxConns = e.pgConns
	cfg.ConnConfig.RuntimeParams["search_path"] = name
	cfg.ConnConfig.RuntimeParams["application_name"] = "pbench-" + name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &freshSchema{name: name, pool: pool, url: e.pgURL}, nil
}

// drop closes the pool and removes the schema with everything in it.
func (s *freshSchema) drop() {
	s.pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+s.name+" CASCADE")
}

// backendCPU returns the CPU time used so far by each server process that
// serves the schema's pool, found by the pool's application_name. It
// returns nil when the server does not run on this machine (its processes
// are not in /proc) or on any error: the report then shows no server CPU.
func (s *freshSchema) backendCPU(ctx context.Context) map[int]time.Duration {
	rows, err := s.pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, "pbench-"+s.name)
	if err != nil {
		return nil
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil
	}
	out := make(map[int]time.Duration, len(pids))
	for _, pid := range pids {
		d, ok := streamtest.ProcessCPU(pid)
		if !ok {
			return nil
		}
		out[pid] = d
	}
	return out
}

// serverCPUBetween returns the server CPU time used between two snapshots
// of backendCPU, and false if it cannot tell.
func serverCPUBetween(before, after map[int]time.Duration) (time.Duration, bool) {
	if before == nil || after == nil {
		return 0, false
	}
	var sum time.Duration
	for pid, d := range after {
		sum += d - before[pid] // a process started meanwhile began at zero
	}
	return sum, true
}
