// Package testqueue readies and cleans up the queues that tests of several
// processes (chaostest, limittest) make on the shared Postgres and Redis
// servers, and opens their streams on clients of their own. It imports the
// stream packages, so their own tests cannot use it.
package testqueue

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify/streams/pgstream"
	"github.com/peonify/peonify/streams/redisstream"
)

var migrated sync.Map // Postgres URL -> *migration

type migration struct {
	once sync.Once
	err  error
}

// Postgres readies the Postgres server at url for a test's queue:
// it migrates the public schema (once per URL and test binary) and, when
// the test ends, deletes the queue's tasks.
func Postgres(t testing.TB, url, queue string) {
	t.Helper()
	m, _ := migrated.LoadOrStore(url, &migration{})
	mig := m.(*migration)
	mig.once.Do(func() {
		pool, err := pgxpool.New(context.Background(), url)
		if err != nil {
			mig.err = err
			return
		}
		defer pool.Close()
		mig.err = pgstream.Migrate(context.Background(), pool)
	})
	if mig.err != nil {
		t.Fatal(mig.err)
	}
	t.Cleanup(func() {
		pool, err := pgxpool.New(context.Background(), url)
		if err != nil {
			t.Error(err)
			return
		}
		defer pool.Close()
		if _, err := pool.Exec(context.Background(), "DELETE FROM peonify_tasks WHERE queue = $1", queue); err != nil {
			t.Errorf("removing queue %s: %v", queue, err)
		}
	})
}

// Redis deletes, when the test ends, every key of the Redis server at
// url whose name starts with prefix and a colon: the keys of a stream
// configured with that prefix.
func Redis(t testing.TB, url, prefix string) {
	t.Cleanup(func() {
		opts, err := redis.ParseURL(url)
		if err != nil {
			t.Error(err)
			return
		}
		c := redis.NewClient(opts)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("listing the keys of %s: %v", prefix, err)
			return
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			if err := c.Unlink(ctx, keys[:n]...).Err(); err != nil {
				t.Errorf("deleting the keys of %s: %v", prefix, err)
				return
			}
			keys = keys[n:]
		}
	})
}

// PostgresStream opens a pgstream with scfg on a pool of its own, made
// with cfg; done closes the pool, after the stream is closed.
func PostgresStream(ctx context.Context, cfg *pgxpool.Config, scfg pgstream.Config) (s *pgstream.Stream, done func(), err error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	s, err = pgstream.New(pool, scfg)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return s, pool.Close, nil
}

// RedisStream opens a redisstream with cfg on a client of its own for the
// Redis server at url; done closes the client, after the stream is closed.
func RedisStream(url string, cfg redisstream.Config) (s *redisstream.Stream, done func(), err error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, nil, err
	}
	c := redis.NewClient(opts)
	s, err = redisstream.New(c, cfg)
	if err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	return s, func() { _ = c.Close() }, nil
}
