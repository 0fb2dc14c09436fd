//go:build unix

package limittest

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "modernc.org/sqlite" // the driver of bulkSQLite, which sqlitestream uses too

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/internal/testqueue"
	"github.com/peonify/peonify/streams/pgstream"
	"github.com/peonify/peonify/streams/redisstream"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// streamSpec tells a process, the test or a child, how to open the
// queue of one scenario. It travels to children as JSON.
type streamSpec struct {
	Kind  string        // "sqlite", "postgres" or "redis"
	Addr  string        // the database file, or the server's URL
	Queue string        // the queue or key prefix of the scenario
	Lease time.Duration // the stream's lease; 0 for its default
}

// store is the stream and what the test needs of it besides.
type store interface {
	peonify.Stream
	peonify.Enqueuer
	peonify.Inspector
}

// opened is a stream opened from a streamSpec.
type opened struct {
	s    store
	done func() // closes the client the stream was built on, after the stream is closed
}

// openStream opens the stream spec describes; name identifies the process
// to the server.
func openStream(ctx context.Context, spec streamSpec, name string, logger *slog.Logger) (*opened, error) {
	switch spec.Kind {
	case "sqlite":
		s, err := sqlitestream.Open(spec.Addr, sqlitestream.Config{Lease: spec.Lease, Logger: logger})
		if err != nil {
			return nil, err
		}
		return &opened{s: s, done: func() {}}, nil

	case "postgres":
		cfg, err := pgxpool.ParseConfig(spec.Addr)
		if err != nil {
			return nil, err
		}
		cfg.ConnConfig.RuntimeParams["application_name"] = "limittest-" + name
		s, done, err := testqueue.PostgresStream(ctx, cfg, pgstream.Config{Queue: spec.Queue, Lease: spec.Lease, RescueInterval: spec.Lease / 4,
			Identity: name, Logger: logger})
		if err != nil {
			return nil, err
		}
		return &opened{s: s, done: done}, nil

	case "redis":
		s, done, err := testqueue.RedisStream(spec.Addr, redisstream.Config{Prefix: spec.Queue, Queue: "flow", Consumer: name,
			Lease: spec.Lease, RescueInterval: spec.Lease / 4, Logger: logger})
		if err != nil {
			return nil, err
		}
		return &opened{s: s, done: done}, nil
	}
	return nil, fmt.Errorf("unknown stream kind %q", spec.Kind)
}

// backend is one store the scenarios run on.
type backend struct {
	name string
	// prepare makes a fresh queue for one scenario and returns its spec;
	// the queue is removed when the test ends.
	prepare func(t *testing.T, lease time.Duration) streamSpec
	// bulk, when set, stores n tasks of typ with key, named prefix and a
	// five-digit number from 0 on, in that order, faster than Enqueue,
	// the way a producer without Go does.
	bulk func(t *testing.T, spec streamSpec, n int, typ, key, prefix string)
}

var backends = []backend{
	{name: "sqlite", prepare: prepareSQLite, bulk: bulkSQLite},
	{name: "postgres", prepare: preparePostgres},
	{name: "redis", prepare: prepareRedis},
}

// forEachBackend runs fn as a subtest on each backend, in parallel when
// parallel is set.
func forEachBackend(t *testing.T, parallel bool, fn func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			fn(t, b)
		})
	}
}

func prepareSQLite(t *testing.T, lease time.Duration) streamSpec {
	return streamSpec{Kind: "sqlite", Addr: filepath.Join(t.TempDir(), "tasks.db"), Queue: "flow", Lease: lease}
}

// bulkSQLite stores tasks with one plain INSERT, as sqlitestream's README
// shows a producer without Go doing it: under the race detector the
// SQLite engine is slow enough that 20,000 Enqueues take half a minute.
func bulkSQLite(t *testing.T, spec streamSpec, n int, typ, key, prefix string) {
	db, err := sql.Open("sqlite", "file:"+spec.Addr+"?_pragma=busy_timeout(5000)") // as long as sqlitestream waits
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = db.ExecContext(streamtest.Context(t), `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1)
INSERT INTO peonify_tasks (id, type, payload, key, enqueued_at, state, visible_at, updated_at)
SELECT ? || printf('%05d', i), ?, CAST('{}' AS BLOB), ?, now, 'pending', now, now
FROM n, (SELECT CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER) AS now)
ORDER BY i`, n, prefix, typ, key)
	if err != nil {
		t.Fatalf("storing %d tasks with a plain INSERT: %v", n, err)
	}
}

func preparePostgres(t *testing.T, lease time.Duration) streamSpec {
	url := testenv.URL(t, "postgres")
	spec := streamSpec{Kind: "postgres", Addr: url, Queue: streamtest.Name(t, 40), Lease: lease}
	testqueue.Postgres(t, url, spec.Queue)
	return spec
}

func prepareRedis(t *testing.T, lease time.Duration) streamSpec {
	url := testenv.URL(t, "redis")
	spec := streamSpec{Kind: "redis", Addr: url, Queue: streamtest.Name(t, 40), Lease: lease}
	testqueue.Redis(t, url, spec.Queue)
	return spec
}
