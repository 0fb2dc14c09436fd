package redisstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testClient returns a client of the test server, closed when the test
// ends.
func testClient(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(testenv.URL(t, "redis"))
	if err != nil {
		t.Fatal(err)
	}
	opts.PoolSize = 64
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// uniquePrefix returns a key prefix that no other test uses, and deletes
// every key under it when the test ends.
func uniquePrefix(t testing.TB, c redis.UniversalClient) string {
	p := "ptest-" + randHex(6)
	t.Cleanup(func() { deleteKeys(t, c, p) })
	return p
}

// deleteKeys deletes every key whose name starts with prefix.
func deleteKeys(t testing.TB, c redis.UniversalClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Logf("cleaning up keys %s:*: %v", prefix, err)
		return
	}
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		if err := c.Del(ctx, keys[:n]...).Err(); err != nil {
			t.Logf("cleaning up keys %s:*: %v", prefix, err)
			return
		}
		keys = keys[n:]
	}
}

// testLogger sends warnings and errors to the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newTestStream returns a stream with a key prefix of its own, closed
// when the test ends. Empty cfg.Prefix and Logger are filled in.
func newTestStream(t testing.TB, c redis.UniversalClient, cfg Config) *Stream {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = uniquePrefix(t, c)
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return s
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustEnqueue(t testing.TB, s *Stream, tasks ...*peonify.Task) {
	t.Helper()
	if err := s.Enqueue(ctxT(t), tasks...); err != nil {
		t.Fatal(err)
	}
}

func mustPoll(t testing.TB, s *Stream, max int) []peonify.Delivery {
	t.Helper()
	ds, err := s.Poll(ctxT(t), max)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// pollUntil polls until it gets at least one delivery or the deadline
// passes; it is for state that changes in Redis on its own (lease expiry, a
// scheduled time).
func pollUntil(t testing.TB, s *Stream, max int, within time.Duration) []peonify.Delivery {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if ds := mustPoll(t, s, max); len(ds) > 0 {
			return ds
		}
		if time.Now().After(deadline) {
			t.Fatalf("no task delivered within %s", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func task(typ string) *peonify.Task {
	return &peonify.Task{Type: typ, Payload: []byte(`{"n":1}`)}
}

func isDup(err error) bool { return errors.Is(err, peonify.ErrDuplicate) }

// sleep waits for d or until ctx ends, and reports whether ctx is still
// live.
func sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
