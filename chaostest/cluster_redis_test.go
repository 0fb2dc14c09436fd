//go:build unix

package chaostest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify/internal/testcluster"
	"github.com/peonify/peonify/streams/redisstream"
)

// The Redis Cluster cells: each starts a cluster of 3 masters with a
// replica each, runs processors on a queue of it through a
// redis.ClusterClient, and SIGKILLs the master of the queue's slot mid-run
// (scenario failover). redis-cluster runs the stream's fast defaults, which
// may lose the writes the master acknowledged just before it died;
// redis-cluster-wait runs it with Config.WaitReplicas = 1, which must lose
// nothing.
func init() {
	backends = append(backends,
		&backend{name: "redis-cluster", cluster: true, prepare: prepareRedisCluster("redis-cluster"), seesRunning: true, acksConfirmed: true},
		&backend{name: "redis-cluster-wait", cluster: true, prepare: prepareRedisCluster("redis-cluster-wait"), seesRunning: true, acksConfirmed: true},
	)
	scenarios = append(scenarios,
		scenario{name: "failover", only: "redis-cluster", cluster: true, run: scenarioRedisFailover},
		scenario{name: "failover", only: "redis-cluster-wait", cluster: true, run: scenarioRedisFailover},
	)
	openers["redis-cluster"] = openRedisCluster
	openers["redis-cluster-wait"] = openRedisCluster
}

// redisClusters are the running clusters of the cells, by their spec's
// Addr, for the scenario to kill a master of.
var redisClusters sync.Map

// lossWindow is how long before the kill an Enqueue may have returned and
// its tasks still be lost with the fast defaults: Redis replicates
// asynchronously, and the replica that takes over lacks the last writes
// its master acknowledged. On loopback the lag is well below a millisecond
// unless the machine stalls; the window is far wider, and the cell notes
// the loss it saw.
const lossWindow = time.Second

// prepareRedisCluster returns the prepare of a cluster backend of kind: it
// starts a cluster of the cell's own. The spec's Addr lists the nodes,
// comma-separated; its Queue is the queue, whose slot the scenario finds.
func prepareRedisCluster(kind string) func(t *testing.T, dir, _ string) streamSpec {
	return func(t *testing.T, _, _ string) streamSpec {
		rc := testcluster.Redis(t)
		spec := streamSpec{Kind: kind, Addr: strings.Join(rc.Addrs(), ","), Queue: "chaos-" + randHex(6), Lease: chaosLease}
		redisClusters.Store(spec.Addr, rc)
		t.Cleanup(func() { redisClusters.Delete(spec.Addr) })
		return spec
	}
}

// openRedisCluster opens a stream of a cluster cell through a
// redis.ClusterClient of the nodes in spec.Addr.
func openRedisCluster(_ context.Context, spec streamSpec, name string, logger *slog.Logger) (*opened, error) {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(spec.Addr, ",")})
	cfg := redisstream.Config{Prefix: "chaos", Queue: spec.Queue, Consumer: name,
		Lease: spec.Lease, RescueInterval: spec.Lease / 4, Logger: logger}
	if spec.Kind == "redis-cluster-wait" {
		cfg.WaitReplicas = 1
	}
	s, err := redisstream.New(c, cfg)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return &opened{s: s, enq: s, insp: s, done: func() { _ = c.Close() }}, nil
}

// scenarioRedisFailover runs two processors and a producer on a queue of a
// Redis Cluster, SIGKILLs the master of the queue's slot once a quarter of
// the tasks is enqueued, waits for its replica to take over, and restarts
// the killed node, which rejoins as the new master's replica. Enqueues that
// fail meanwhile are retried.
//
// In flight at the failover, and so allowed to run twice, are the tasks
// the processors held at the kill or after the node rejoined, and every
// task claimed, run, acked or nacked from lossWindow before the kill until
// the node rejoined: the replica may lack the last claims and acks of the
// master. With the fast defaults, tasks whose Enqueue returned nil within
// lossWindow before the kill may be lost; with WaitReplicas none may, and
// no task whose Ack returned nil before the kill may run again unless it
// was held at the kill.
func scenarioRedisFailover(c *cell) {
	v, ok := redisClusters.Load(c.spec.Addr)
	if !ok {
		c.t.Fatal("no cluster for the cell")
	}
	rc := v.(*testcluster.RedisCluster)
	durable := c.spec.Kind == "redis-cluster-wait"
	a, b := c.startChild(nil), c.startChild(nil)
	c.waitUp(a, b)

	const total, batch = 1200, 20
	type call struct {
		ids        []string
		start, end time.Time
	}
	var (
		callsMu  sync.Mutex
		calls    []call
		failures int
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < total && ctx.Err() == nil; i += batch {
			tasks := c.tasks(fmt.Sprintf("failover%04d", i), batch, work{Ms: 10})
			// A failed call may have stored the tasks; the stream reports
			// them as duplicates when they are enqueued again. The loss
			// window counts from the start of the call that returned nil.
			start := time.Now()
			stored := c.enqueueUntilStored(ctx, tasks, func(error) {
				callsMu.Lock()
				failures++
				callsMu.Unlock()
				start = time.Now()
			})
			if !stored {
				return
			}
			callsMu.Lock()
			calls = append(calls, call{ids(tasks), start, time.Now()})
			callsMu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	})
	c.t.Cleanup(func() { cancel(); wg.Wait() })

	// Fail over once a quarter is enqueued and a sixth done.
	c.waitProgress(total)
	before := c.heldBy(a.pid, b.pid)
	kctx, kcancel := context.WithTimeout(context.Background(), c.remaining())
	defer kcancel()
	killAt := time.Now()
	killed, promoted, err := rc.KillMaster(kctx, "{"+c.spec.Queue+"}")
	if err != nil {
		c.t.Fatal(err)
	}
	promotedAt := time.Now()
	if err := rc.Restart(kctx, killed); err != nil {
		c.t.Fatal(err)
	}
	rejoined := time.Now()
	c.note("master %s killed, replica %s took over in %s, old master back as its replica after %s",
		killed, promoted, promotedAt.Sub(killAt).Round(100*time.Millisecond), rejoined.Sub(promotedAt).Round(100*time.Millisecond))
	after := c.heldBy(a.pid, b.pid)
	held := slices.Compact(slices.Sorted(slices.Values(append(before, after...))))
	touched, _ := c.recordsBetween(killAt.Add(-lossWindow), rejoined)
	// Acks that returned nil before the kill; later ones may be stale,
	// of a lease that ended while the slot had no master, which the
	// stream ignores.
	_, firstOK := c.recordsBetween(killAt.Add(-lossWindow), killAt)
	c.addFault(held, touched)

	c.waitProducer(&wg)

	// The tasks whose Enqueue returned nil just before the kill: the
	// replica that took over may lack them.
	var window []string
	callsMu.Lock()
	for _, cl := range calls {
		if cl.start.Before(killAt) && cl.end.After(killAt.Add(-lossWindow)) {
			window = append(window, cl.ids...)
		}
	}
	callsMu.Unlock()
	c.mu.Lock()
	required := slices.DeleteFunc(slices.Clone(c.enqueued), func(id string) bool { return !durable && slices.Contains(window, id) })
	if !durable {
		c.mayLose = window
	}
	c.mu.Unlock()
	c.waitCompleted(required, len(required))
	c.waitQuiet()
	c.note("%d enqueues failed and were retried; %d tasks enqueued in the %s before the kill", failures, len(window), lossWindow)
	c.finish()

	c.mu.Lock()
	lost := len(c.verdict.MayLose) // any other loss failed the cell in finish
	var again []string
	for _, id := range firstOK {
		if _, ok := slices.BinarySearch(held, id); !ok && c.hist.Completions(id) > 1 {
			again = append(again, id)
		}
	}
	c.mu.Unlock()
	if lost > 0 {
		c.note("%d tasks lost, all enqueued within %s before the kill: allowed without WaitReplicas", lost, lossWindow)
	}
	if len(again) > 0 {
		c.note("%d tasks acked just before the kill ran again", len(again))
		if durable {
			c.t.Errorf("%d tasks whose Ack returned nil with WaitReplicas before the failover were delivered again after it: %s",
				len(again), some(again))
			c.trace(some5(again))
		}
	}
}
