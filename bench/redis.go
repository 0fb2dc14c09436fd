package main

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/redisstream"
)

// redisBroker runs Peonify (redisstream), asynq and the raw Redis Streams
// ceiling on one Redis server. Every system gets a client of its own with
// go-redis's default pool, and keys that no other run uses, deleted after
// the run (never FLUSHDB: the server may be shared).
type redisBroker struct {
	opts    *redis.Options
	admin   *redis.Client // set-up, checks and clean-up
	log     *slog.Logger
	version string
}

func dialRedis(ctx context.Context, url string, log *slog.Logger) (*redisBroker, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("-redis-url %q: %w (want redis://host:port/db)", url, err)
	}
	admin := redis.NewClient(opts)
	info, err := admin.Info(ctx, "server").Result()
	if err != nil {
		admin.Close()
		return nil, fmt.Errorf("connect to redis at %s (set -redis-url or PEONIFY_TEST_REDIS_URL): %w", opts.Addr, err)
	}
	return &redisBroker{opts: opts, admin: admin, log: log, version: infoField(info, "redis_version")}, nil
}

func (b *redisBroker) describe() string {
	return fmt.Sprintf("redis: server %s at %s, db %d; a client per system with go-redis's default pool (%d connections)",
		b.version, b.opts.Addr, b.opts.DB, 10*runtime.GOMAXPROCS(0))
}

func (b *redisBroker) close() { _ = b.admin.Close() }

// client returns a new client of the server for one system.
func (b *redisBroker) client() *redis.Client { return redis.NewClient(b.opts) }

// serverCPU reads the server's CPU time (user plus system) from INFO cpu.
func (b *redisBroker) serverCPU(ctx context.Context) (time.Duration, bool) {
	info, err := b.admin.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, false
	}
	var total float64
	for _, name := range []string{"used_cpu_sys", "used_cpu_user"} {
		v, err := strconv.ParseFloat(infoField(info, name), 64)
		if err != nil {
			return 0, false
		}
		total += v
	}
	return time.Duration(total * float64(time.Second)), true
}

// infoField returns one field of an INFO reply.
func infoField(info, name string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == name {
			return v
		}
	}
	return ""
}

// deleteKeys deletes every key matching pattern, with SCAN and UNLINK.
func (b *redisBroker) deleteKeys(pattern string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	iter := b.admin.Scan(ctx, 0, pattern, 1000).Iterator()
	var keys []string
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		err := b.admin.Unlink(ctx, keys...).Err()
		keys = keys[:0]
		return err
	}
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 1000 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	return flush()
}

// cleanup deletes the keys of pattern and logs a failure.
func (b *redisBroker) cleanup(pattern string) {
	if err := b.deleteKeys(pattern); err != nil {
		b.log.Error("bench: deleting redis keys", "pattern", pattern, "err", err)
	}
}

func (b *redisBroker) fetchNote(cfg peonifyConfig) string {
	return fmt.Sprintf("fetch: Peonify claims its free capacity per XREADGROUP (at most QueueSize %d); "+
		"asynq dequeues one task per worker per script call; the raw loop reads COUNT %d", cfg.QueueSize, rawRedisBatch)
}

func (b *redisBroker) peonify(cfg peonifyConfig) contender {
	config := cfg.String() + ", redisstream DedupWindow -1 (off)"
	return contender{name: "peonify", config: config, make: func(ctx context.Context, e *env, rec *recorder) (system, error) {
		client := b.client()
		scfg := redisstream.Config{Queue: randName("bench_"), DedupWindow: -1, Logger: e.log}
		st, err := redisstream.New(client, scfg)
		if err != nil {
			client.Close()
			return nil, err
		}
		pattern := "peonify:{" + scfg.Queue + "}:*"
		verify := func(ctx context.Context, n int) error {
			check, err := redisstream.New(b.admin, scfg)
			if err != nil {
				return err
			}
			defer check.Close(context.WithoutCancel(ctx))
			return emptyCounts(ctx, check, n)
		}
		cleanup := func() {
			client.Close()
			b.cleanup(pattern)
		}
		return newBrokerPeonify(cfg, e, rec, st, b.serverCPU, verify, cleanup)
	}}
}

// emptyCounts checks with an Inspector that no task is left in any state.
func emptyCounts(ctx context.Context, in peonify.Inspector, n int) error {
	counts, err := in.Counts(ctx)
	if err != nil {
		return err
	}
	var left []string
	for _, state := range peonify.States {
		if c := counts[state]; c != 0 {
			left = append(left, fmt.Sprintf("%d %s", c, state))
		}
	}
	if left != nil {
		return fmt.Errorf("tasks left in the stream after all %d were acked: %v", n, left)
	}
	return nil
}

func (b *redisBroker) peers(systems map[string]bool) (tuned, once []contender) {
	if systems[asynqTuned.Label] {
		tuned = append(tuned, b.asynq(asynqTuned))
	}
	if systems[asynqDefault.Label] {
		once = append(once, b.asynq(asynqDefault))
	}
	return tuned, once
}

// rawRedisBatch is the COUNT of the raw loop's XREADGROUP.
const rawRedisBatch = 100

// raw drains n entries from a Redis stream with no library: one goroutine
// reads batches of rawRedisBatch with XREADGROUP while another acks and
// deletes each batch with a pipelined XACK and XDEL, as a processor
// overlaps its claims and acks. No fencing, no task index, no handler.
func (b *redisBroker) raw(ctx context.Context, n int, _ peonifyConfig) (result, error) {
	res := result{mode: "drain", system: rawLabel("redis"), n: n,
		config: fmt.Sprintf("XREADGROUP COUNT %d and a JSON decode of each entry, then XACK + XDEL pipelined by a second goroutine", rawRedisBatch)}
	client := b.client()
	defer client.Close()
	queue := randName("raw_")
	key := "pbench:{" + queue + "}:stream"
	defer b.cleanup("pbench:{" + queue + "}:*")
	for first := 0; first < n; first += 1000 {
		pipe := client.Pipeline()
		for i := first; i < min(n, first+1000); i++ {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"type", "bench", "payload", payload(i)}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return res, fmt.Errorf("raw: XADD: %w", err)
		}
	}
	const group = "raw"
	if err := client.XGroupCreate(ctx, key, group, "0").Err(); err != nil {
		return res, fmt.Errorf("raw: XGROUP CREATE: %w", err)
	}
	seen := newSeenSet(n)

	t0, cpu0 := time.Now(), cpuTime()
	srv0, srvOK := b.serverCPU(ctx)
	batches := make(chan []string, 4)
	acked := make(chan error, 1)
	go func() {
		var err error
		for ids := range batches {
			if err != nil {
				continue // drain the channel
			}
			pipe := client.Pipeline()
			pipe.XAck(ctx, key, group, ids...)
			pipe.XDel(ctx, key, ids...)
			_, err = pipe.Exec(ctx)
		}
		acked <- err
	}()
	var readErr error
	for got := 0; got < n; {
		streams, err := client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "raw",
			Streams: []string{key, ">"}, Count: rawRedisBatch, Block: -1}).Result()
		if err == nil && (len(streams) == 0 || len(streams[0].Messages) == 0) {
			err = fmt.Errorf("the stream ran dry after %d of %d entries", got, n)
		}
		if err != nil {
			readErr = fmt.Errorf("raw: XREADGROUP: %w", err)
			break
		}
		ids := make([]string, len(streams[0].Messages))
		for i, m := range streams[0].Messages {
			ids[i] = m.ID
			p, _ := m.Values["payload"].(string)
			seen.add([]byte(p))
		}
		batches <- ids
		got += len(ids)
	}
	close(batches)
	ackErr := <-acked
	res.elapsed, res.cpu = time.Since(t0), cpuTime()-cpu0
	if srv1, ok := b.serverCPU(ctx); ok && srvOK {
		res.dbCPU, res.hasDBCPU = srv1-srv0, true
	}
	if readErr != nil {
		return res, readErr
	}
	if ackErr != nil {
		return res, fmt.Errorf("raw: XACK/XDEL: %w", ackErr)
	}
	if err := seen.check(); err != nil {
		return res, err
	}
	left, err := client.XLen(ctx, key).Result()
	if err != nil {
		return res, err
	}
	pending, err := client.XPending(ctx, key, group).Result()
	if err != nil {
		return res, err
	}
	if left != 0 || pending.Count != 0 {
		return res, fmt.Errorf("raw: %d entries left in the stream, %d pending", left, pending.Count)
	}
	return res, nil
}
