//go:build linux

package testcluster

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"
)

// noLeaks checks, after every other cleanup of t, that no goroutine is
// left. (A check per test rather than a TestMain, which the package's
// other clusters would share.)
func noLeaks(t *testing.T) { t.Cleanup(func() { goleak.VerifyNone(t) }) }

// TestPostgresFailover starts an asynchronous pair, checks that the
// standby catches up and refuses writes, makes replication synchronous
// (remote_apply), writes through the multi-host URL, fails over, and
// checks that the writes are on the promoted standby and that the same
// URL now writes there. One pair for every step: each costs seconds to
// start.
func TestPostgresFailover(t *testing.T) {
	noLeaks(t)
	p := StartPostgres(t, PostgresOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Asynchronous: the standby catches up a moment later.
	if err := p.Primary.exec(ctx, p.database, "CREATE TABLE t (n int PRIMARY KEY); INSERT INTO t VALUES (0)"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for count(t, p.Standby) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the standby has not replayed the insert within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.Standby.exec(ctx, p.database, "INSERT INTO t VALUES (-1)"); err == nil {
		t.Fatal("the standby took a write before its promotion")
	}
	if _, _, _, err := p.ReplicationLag(ctx); err != nil {
		t.Fatal(err)
	}

	p.SetSynchronous(t, "remote_apply")
	pool, err := pgxpool.New(ctx, p.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	// remote_apply: the standby shows the row as soon as the commit returns.
	if n := count(t, p.Standby); n != 2 {
		t.Fatalf("the standby has %d rows right after a remote_apply commit, want 2", n)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}

	p.Failover(t)
	if p.Primary.Running() {
		t.Fatal("the primary runs after the failover")
	}
	// The pool's connections to the old primary are gone; a new one goes
	// to the promoted standby.
	deadline = time.Now().Add(30 * time.Second)
	for {
		_, err := pool.Exec(ctx, "INSERT INTO t VALUES (3)")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write through the multi-host URL within 30s of the promotion: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := count(t, p.Standby); n != 4 {
		t.Fatalf("the promoted standby has %d rows, want 4", n)
	}
	var port int
	if err := pool.QueryRow(ctx, "SELECT current_setting('port')::int").Scan(&port); err != nil {
		t.Fatal(err)
	}
	if port != p.Standby.Port {
		t.Fatalf("the multi-host URL writes to port %d, want the promoted standby's %d", port, p.Standby.Port)
	}
}

// count returns the rows of table t on server n, or -1 if it has no such
// table yet.
func count(t *testing.T, n *PostgresNode) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := -1
	err := n.query(ctx, func(c *pgx.Conn) error {
		var exists bool
		if err := c.QueryRow(ctx, "SELECT to_regclass('t') IS NOT NULL").Scan(&exists); err != nil || !exists {
			return err
		}
		return c.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&got)
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
