package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/testcluster"
	"github.com/peonify/peonify/streams/redisstream"
)

// -backend redis-cluster drains a backlog spread over three queues with
// one Peonify processor, on a Redis Cluster of 3 masters (with a replica
// each under -cluster-replicas) that the benchmark starts (redis-server
// and redis-cli in PATH), and
// the same on the single server of -redis-url, in the same run. Each
// cluster queue lives on another master. The RESULT line compares the
// two: on one machine a cluster cannot be faster than a server (its nodes
// share the cores), the point is that it does not collapse.

// clusterBackend is the -backend value of this file.
const clusterBackend = "redis-cluster"

// clusterQueues is how many queues the backlog is spread over.
const clusterQueues = 3

// runRedisCluster runs -backend redis-cluster and writes its report to w.
func runRedisCluster(ctx context.Context, o options, w io.Writer) error {
	level := slog.LevelError
	if o.verbose {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	single, err := dialRedis(ctx, o.redisURL, log)
	if err != nil {
		return err
	}
	defer single.close()
	dir, err := os.MkdirTemp("", "peonify-bench-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rc, err := testcluster.StartRedis(ctx, testcluster.RedisOptions{Dir: dir, NoReplicas: !o.clusterReplicas})
	if err != nil {
		return fmt.Errorf("starting a Redis Cluster (needs redis-server and redis-cli in PATH): %w", err)
	}
	defer rc.Stop()

	cfg := brokerPeonifyDefaults["redis"]
	fmt.Fprintf(w, "peonify bench: backend=%s tasks=%d in %d queues, %d runs each, Peonify Workers %d QueueSize %d, GOMAXPROCS=%d\n",
		clusterBackend, o.tasks, clusterQueues, o.count, cfg.Workers, cfg.QueueSize, runtime.GOMAXPROCS(0))
	shape := "3 masters without replicas, like the single server"
	if o.clusterReplicas {
		shape = "3 masters with a replica each"
	}
	fmt.Fprintf(w, "cluster: %s, local processes (%s); single: %s\n", shape, rc.Addrs(), single.describe())
	if la := loadAverage(); la != "" {
		fmt.Fprintf(w, "load average before: %s (other processes on this machine skew the figures)\n", la)
	}
	queues, err := spreadQueues(ctx, rc)
	if err != nil {
		return err
	}
	var onCluster, onSingle []float64
	for i := range o.count {
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
		rate, err := clusterDrain(ctx, cc, queues, o.tasks, cfg, log)
		_ = cc.Close()
		if err != nil {
			return fmt.Errorf("cluster drain %d: %w", i+1, err)
		}
		onCluster = append(onCluster, rate)
		fmt.Fprintf(w, "drain %d: cluster %.0f jobs/s\n", i+1, rate)

		sc := single.client()
		prefix := randName("benchcl_")
		names := []string{prefix + "a", prefix + "b", prefix + "c"}
		rate, err = clusterDrain(ctx, sc, names, o.tasks, cfg, log)
		_ = sc.Close()
		for _, q := range names {
			single.cleanup("peonify:{" + q + "}:*")
		}
		if err != nil {
			return fmt.Errorf("single-server drain %d: %w", i+1, err)
		}
		onSingle = append(onSingle, rate)
		fmt.Fprintf(w, "drain %d: single %.0f jobs/s\n", i+1, rate)
	}
	c, s := medianRate(onCluster), medianRate(onSingle)
	fmt.Fprintf(w, "median: cluster %.0f jobs/s, single %.0f jobs/s (goal: ratio ≥ 0.7)\n", c, s)
	fmt.Fprintln(w, resultLine(clusterBackend, "single", c, s))
	return nil
}

// spreadQueues returns clusterQueues queue names, each served by another
// master of rc.
func spreadQueues(ctx context.Context, rc *testcluster.RedisCluster) ([]string, error) {
	base := randName("benchcl_")
	seen := map[string]bool{}
	var qs []string
	for i := 0; len(qs) < clusterQueues && i < 1000; i++ {
		q := base + strconv.Itoa(i)
		m, err := rc.MasterOf(ctx, "{"+q+"}")
		if err != nil {
			return nil, err
		}
		if !seen[m] {
			seen[m] = true
			qs = append(qs, q)
		}
	}
	if len(qs) < clusterQueues {
		return nil, errors.New("found no queue names on every master")
	}
	return qs, nil
}

// clusterDrain enqueues n tasks spread over queues on client, then drains
// them with one processor over all the queues, and returns the drain's
// rate in tasks per second.
func clusterDrain(ctx context.Context, client redis.UniversalClient, queues []string, n int, cfg peonifyConfig, log *slog.Logger) (float64, error) {
	var streams []*redisstream.Stream
	defer func() {
		for _, s := range streams {
			_ = s.Close(context.WithoutCancel(ctx))
		}
	}()
	for _, q := range queues {
		s, err := redisstream.New(client, redisstream.Config{Queue: q, DedupWindow: -1, Logger: log})
		if err != nil {
			return 0, err
		}
		streams = append(streams, s)
	}
	const batch = 1000
	tasks := make([]*peonify.Task, 0, batch)
	for i := 0; i < n; {
		s := streams[(i/batch)%len(streams)]
		tasks = tasks[:0]
		for j := 0; j < batch && i < n; j++ {
			tasks = append(tasks, &peonify.Task{Type: "noop", Payload: []byte(`{}`)})
			i++
		}
		if err := s.Enqueue(ctx, tasks...); err != nil {
			return 0, err
		}
	}
	var handled atomic.Int64
	done := make(chan struct{})
	p, err := peonify.New(peonify.Config{Workers: cfg.Workers, QueueSize: cfg.QueueSize, Logger: log})
	if err != nil {
		return 0, err
	}
	err = p.AddTaskList(peonify.TaskList{"noop": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		if handled.Add(1) == int64(n) {
			close(done)
		}
		return nil
	})})
	if err != nil {
		return 0, err
	}
	for _, s := range streams {
		if err := p.AddStream(s); err != nil {
			return 0, err
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- p.Run(runCtx) }()
	var took time.Duration
	select {
	case <-done:
		took = time.Since(start)
	case err := <-errc:
		cancel()
		return 0, fmt.Errorf("the processor stopped before the drain ended: %v", err)
	case <-time.After(5 * time.Minute):
		cancel()
		<-errc
		return 0, fmt.Errorf("only %d of %d tasks ran within 5 minutes", handled.Load(), n)
	}
	cancel()
	if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
		return 0, err
	}
	return float64(n) / took.Seconds(), nil
}

// medianRate returns the median of xs.
func medianRate(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
