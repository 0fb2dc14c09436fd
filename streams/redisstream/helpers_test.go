package redisstream

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
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

// uniquePrefix returns a key prefix that no other test uses, and deletes
// every key under it when the test ends.
func uniquePrefix(t testing.TB, c redis.UniversalClient) string {
	p := "ptest-" + streamtest.RandHex(6)
	t.Cleanup(func() { deleteKeys(t, c, p) })
	return p
}

// deleteKeys deletes every key whose name starts with prefix, on every
// master of a cluster.
func deleteKeys(t testing.TB, c redis.UniversalClient, prefix string) {
	if cc, ok := c.(*redis.ClusterClient); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			deleteKeys(t, m, prefix)
			return nil
		})
		return
	}
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

// newTestStream returns a stream with a key prefix of its own, closed
// when the test ends. Empty cfg.Prefix and Logger are filled in.
func newTestStream(t testing.TB, c redis.UniversalClient, cfg Config) *Stream {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = uniquePrefix(t, c)
	}
	if cfg.Logger == nil {
		cfg.Logger = streamtest.Logger(t)
	}
	s, err := New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	streamtest.CloseAtEnd(t, s)
	return s
}

func task(typ string) *peonify.Task {
	return &peonify.Task{Type: typ, Payload: []byte(`{"n":1}`)}
}

func isDup(err error) bool { return errors.Is(err, peonify.ErrDuplicate) }
