package pgstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// pgx closes a connection whose query was cancelled (as a processor
	// cancels a Poll at shutdown) in a goroutine that may take a moment to
	// finish on a loaded machine; it ends on its own within 15 s.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgconn.(*PgConn).asyncClose.func1"))
}

// testSchema is the schema the tests use unless they make one of their
// own: the public schema of a shared test server may be at an older
// version, used by older builds, that migrating it would break, and so
// may the schema an older build of these tests made: the name carries the
// schema version.
const testSchema = "pgstream_test_v3"

// migrateOnce migrates testSchema once per test binary.
var migrateOnce sync.Once

// testPool returns a pool on the test database with testSchema migrated,
// closed when the test ends. appName tags its connections.
func testPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool := openPool(t, testenv.URL(t, "postgres"), nil)
	var merr error
	migrateOnce.Do(func() { merr = MigrateSchema(context.Background(), pool, testSchema) })
	if merr != nil {
		t.Fatal(merr)
	}
	return pool
}

// openPool returns a pool on url, its connections tagged with appName,
// closed when the test ends. configure, when not nil, adjusts the pool's
// config before the pool is made.
func openPool(t testing.TB, url string, configure func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = appName(t)
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// migratedPool returns a pool of up to maxConns connections on url, with
// testSchema migrated, closed when the test ends.
func migratedPool(t *testing.T, url string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	pool := openPool(t, url, func(cfg *pgxpool.Config) { cfg.MaxConns = maxConns })
	if err := MigrateSchema(t.Context(), pool, testSchema); err != nil {
		t.Fatal(err)
	}
	return pool
}

// appName is a connection tag unique to the test.
func appName(t testing.TB) string {
	n := "pgstream-" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	if len(n) > 50 {
		n = n[:50]
	}
	return n + "-" + streamtest.RandHex(4)
}

// uniqueQueue returns a queue name that no other test uses.
func uniqueQueue(t testing.TB) string {
	return "t-" + t.Name() + "-" + streamtest.RandHex(6)
}

// newTestStream returns a stream on a fresh queue, closed when the test
// ends. cfg.Queue, when empty, is set to a unique name, and cfg.Schema to
// testSchema.
func newTestStream(t testing.TB, pool *pgxpool.Pool, cfg Config) *Stream {
	t.Helper()
	if cfg.Queue == "" {
		cfg.Queue = uniqueQueue(t)
	}
	if cfg.Schema == "" {
		cfg.Schema = testSchema
	}
	if cfg.Logger == nil {
		cfg.Logger = streamtest.Logger(t)
	}
	s, err := New(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Error(err)
		}
		// Leave the shared test database as we found it.
		for _, table := range []string{"peonify_tasks", "peonify_queues", "peonify_buckets", "peonify_edges"} {
			q := "DELETE FROM " + pgx.Identifier{cfg.Schema, table}.Sanitize() + " WHERE queue = $1"
			if _, err := pool.Exec(context.Background(), q, cfg.Queue); err != nil {
				t.Logf("cleaning up queue %s: %v", cfg.Queue, err)
			}
		}
	})
	return s
}

// waitWake waits for the stream's Wake channel.
func waitWake(t testing.TB, s *Stream, within time.Duration) {
	t.Helper()
	select {
	case <-s.Wake():
	case <-time.After(within):
		t.Fatalf("no wake-up within %s", within)
	}
}

// waitListening waits until the stream's listener has connected (and sent
// its connect wake-up) at least n times, then empties the wake channel: a
// wake-up after it comes from a notification.
func waitListening(t testing.TB, s *Stream, n int64) {
	t.Helper()
	if err := s.Start(context.Background()); err != nil { // starts the listener
		t.Fatal(err)
	}
	s.mu.Lock()
	l := s.listener
	s.mu.Unlock()
	if l == nil {
		t.Fatal("the stream has no listener")
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.connects.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("listener connected %d times within 10s, want %d", l.connects.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	drainWake(s)
}

// drainWake empties a pending wake-up.
func drainWake(s *Stream) {
	select {
	case <-s.Wake():
	default:
	}
}

func task(typ string) *peonify.Task {
	return &peonify.Task{Type: typ, Payload: []byte(`{"n":1}`)}
}

func isDup(err error) bool { return errors.Is(err, peonify.ErrDuplicate) }

// sharedListenerStreams returns a Listener on pool, closed after the
// streams' own cleanups, and two streams of queues of their own that share
// it, both listening.
func sharedListenerStreams(t *testing.T, pool *pgxpool.Pool) (l *Listener, a, b *Stream) {
	t.Helper()
	l, err := NewListener(pool, ListenerConfig{Schema: testSchema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the streams' own cleanups
		if err := l.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	a = newTestStream(t, pool, Config{Listener: l})
	b = newTestStream(t, pool, Config{Listener: l})
	waitListening(t, a, 1)
	waitListening(t, b, 1)
	return l, a, b
}

// migratedFrom makes a schema of its own at the given schema version, runs
// seed in it (its %s, or %[1]s, the schema's name), migrates it to
// SchemaVersion, checks the version, and returns a stream of the queue "q"
// in it.
func migratedFrom(t *testing.T, version int, seed string) *Stream {
	t.Helper()
	pool := testPool(t)
	ctx := streamtest.Context(t)
	schema := schemaAtVersion(t, pool, version)
	if _, err := pool.Exec(ctx, fmt.Sprintf(seed, schema)); err != nil {
		t.Fatal(err)
	}
	if err := MigrateSchema(ctx, pool, schema); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := pool.QueryRow(ctx, "SELECT max(version) FROM "+schema+".peonify_migrations").Scan(&v); err != nil || v != SchemaVersion {
		t.Fatalf("version %d, %v", v, err)
	}
	return newTestStream(t, pool, Config{Schema: schema, Queue: "q", NoListen: true})
}

// schemaAtVersion makes a schema of its own at the given schema version,
// dropped when the test ends, and returns its name.
func schemaAtVersion(t *testing.T, pool *pgxpool.Pool, version int) string {
	t.Helper()
	schema := fmt.Sprintf("peonify_v%d_%s", version, streamtest.RandHex(4))
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	if err := migrateTo(streamtest.Context(t), pool, schema, version); err != nil {
		t.Fatal(err)
	}
	return schema
}
