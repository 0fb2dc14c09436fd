package redisstream

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testcluster"
	"github.com/peonify/peonify/peonifytest"
	"github.com/redis/go-redis/v9"
)

// clusterClient returns a client of rc, closed when the test ends.
func clusterClient(t testing.TB, rc *testcluster.RedisCluster) *redis.ClusterClient {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), PoolSize: 64})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// spreadQueues returns n queue names whose slots are served by n different
// masters of rc when n is at most the number of masters, so that a test
// over them touches every master.
func spreadQueues(t testing.TB, rc *testcluster.RedisCluster, n int) []string {
	t.Helper()
	ctx := streamtest.Context(t)
	seen := map[string]bool{}
	var qs []string
	for i := 0; len(qs) < n && i < 1000; i++ {
		q := "q" + strconv.Itoa(i)
		m, err := rc.MasterOf(ctx, "{"+q+"}")
		if err != nil {
			t.Fatal(err)
		}
		if !seen[m] || len(seen) >= 3 {
			seen[m] = true
			qs = append(qs, q)
		}
	}
	return qs
}

// TestCluster runs the stream on a Redis Cluster of 3 masters with a
// replica each, through a redis.ClusterClient: the conformance suite with
// every check on a queue of its own (so spread over the slots of all the
// masters), one processor over queues on three masters, and the
// scale-out test.
func TestCluster(t *testing.T) {
	rc := testcluster.Redis(t)
	c := clusterClient(t, rc)

	t.Run("conformance", func(t *testing.T) {
		const lease = 500 * time.Millisecond
		peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
			return newTestStream(t, c, Config{Queue: "c" + streamtest.RandHex(4), Lease: lease, RescueInterval: 20 * time.Millisecond})
		}, peonifytest.Features{
			Lease:      lease,
			NoPriority: true,
		})
	})

	t.Run("queues", func(t *testing.T) {
		// One processor over three queues, each on another master: every
		// task runs, and Wait, whose notifications travel by the
		// cluster's Pub/Sub, sees each finish.
		var ss []*Stream
		tl := peonify.TaskList{}
		var mu sync.Mutex
		ran := map[string]int{}
		prefix := uniquePrefix(t, c)
		for _, q := range spreadQueues(t, rc, 3) {
			ss = append(ss, newTestStream(t, c, Config{Prefix: prefix, Queue: q}))
		}
		tl["job"] = peonify.HandlerFunc(func(ctx context.Context, task *peonify.Task) error {
			mu.Lock()
			ran[task.ID]++
			mu.Unlock()
			return peonify.SetResult(ctx, []byte(`"ok"`))
		})
		cfg := peonify.Config{Workers: 4}
		p := streamtest.Processor(t, cfg, ss[0], tl)
		for _, s := range ss[1:] {
			if err := p.AddStream(s); err != nil {
				t.Fatal(err)
			}
		}
		const per = 200
		for i, s := range ss {
			for j := range per {
				streamtest.Enqueue(t, s, &peonify.Task{ID: "t" + strconv.Itoa(i) + "-" + strconv.Itoa(j), Type: "job"})
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- p.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer wcancel()
		for i, s := range ss {
			id := "t" + strconv.Itoa(i) + "-" + strconv.Itoa(per-1)
			info, err := s.Wait(wctx, id)
			if err != nil {
				t.Fatalf("Wait(%s) on queue %s: %v", id, s.Queue(), err)
			}
			if info.State != peonify.StateDone || string(info.Result) != `"ok"` {
				t.Errorf("Wait(%s) = %v with result %q, want done with \"ok\"", id, info.State, info.Result)
			}
		}
		for _, s := range ss {
			waitCounts(t, s, map[peonify.State]int{peonify.StateDone: per}, 30*time.Second)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(ran) != 3*per {
			t.Errorf("%d tasks ran, want %d", len(ran), 3*per)
		}
	})

	t.Run("waitreplicas", func(t *testing.T) {
		// Each master has one replica: waiting for it succeeds, waiting
		// for two reports the write as not replicated, though applied.
		ctx := streamtest.Context(t)
		for i, q := range spreadQueues(t, rc, 3) {
			s := newTestStream(t, c, Config{Queue: q, WaitReplicas: 1})
			streamtest.Enqueue(t, s, task("a"))
			ds := streamtest.Poll(t, s, 10)
			if len(ds) != 1 {
				t.Fatalf("queue %d: Poll returned %d tasks, want 1", i, len(ds))
			}
			if err := s.Ack(ctx, ds...); err != nil {
				t.Fatalf("queue %d: Ack: %v", i, err)
			}
			two := newTestStream(t, c, Config{Queue: q, WaitReplicas: 2, WaitTimeout: 50 * time.Millisecond})
			err := two.Enqueue(ctx, task("b"))
			var re *ReplicationError
			if !errors.As(err, &re) || re.Got != 1 || re.Wanted != 2 {
				t.Fatalf("queue %d: Enqueue waiting for 2 replicas = %v, want a *ReplicationError of 1 of 2", i, err)
			}
			waitCounts(t, two, map[peonify.State]int{peonify.StatePending: 1}, 5*time.Second)
		}
	})

	t.Run("stalledreplica", func(t *testing.T) {
		// While the replica is stopped, an Enqueue that waits for it
		// stores the task and reports it as not replicated; once the
		// replica is back, enqueueing the task again reports it as a
		// duplicate, with no replication error: the fence made the second
		// WAIT cover the first write.
		ctx := streamtest.Context(t)
		q := "stall" + streamtest.RandHex(4)
		s := newTestStream(t, c, Config{Queue: q, WaitReplicas: 1, WaitTimeout: 200 * time.Millisecond})
		streamtest.Enqueue(t, s, task("warm")) // the client knows the slot, the script is loaded
		replica, err := rc.ReplicaOf(ctx, "{"+q+"}")
		if err != nil {
			t.Fatal(err)
		}
		if err := rc.Freeze(replica); err != nil {
			t.Fatal(err)
		}
		tk := &peonify.Task{ID: "stalled", Type: "a"}
		err = s.Enqueue(ctx, tk)
		if terr := rc.Thaw(replica); terr != nil {
			t.Fatal(terr)
		}
		var re *ReplicationError
		if !errors.As(err, &re) || re.Got != 0 || re.Wanted != 1 {
			t.Fatalf("Enqueue while the replica is stopped = %v, want a *ReplicationError of 0 of 1", err)
		}
		streamtest.WaitFor(t, 10*time.Second, "the enqueue to be replicated", func() bool {
			err = s.Enqueue(ctx, &peonify.Task{ID: "stalled", Type: "a"})
			return !errors.Is(err, ErrNotReplicated)
		})
		if !isDup(err) {
			t.Fatalf("Enqueue again once the replica is back = %v, want a duplicate", err)
		}
	})

	t.Run("scaleout", func(t *testing.T) {
		if testing.Short() {
			t.Skip("runs child processes; skipped with -short")
		}
		scaleOut(t, c, scaleOrders{Queue: "scale", Cluster: rc.Addrs()}, 5000)
	})
}

// BenchmarkClusterWaitReplicas measures what Config.WaitReplicas costs on
// a Redis Cluster of 3 masters with a replica each: one task enqueued,
// claimed and acked per operation, one at a time, as a producer and a
// processor that each handle one task do. Compare the ns/op of wait=0
// and wait=1.
func BenchmarkClusterWaitReplicas(b *testing.B) {
	rc := testcluster.Redis(b)
	c := clusterClient(b, rc)
	for _, wait := range []int{0, 1} {
		b.Run("wait="+strconv.Itoa(wait), func(b *testing.B) {
			s := newTestStream(b, c, Config{Queue: "bench" + strconv.Itoa(wait), WaitReplicas: wait})
			ctx := context.Background()
			tk := task("bench")
			for b.Loop() {
				tk.ID = ""
				if err := s.Enqueue(ctx, tk); err != nil {
					b.Fatal(err)
				}
				ds, err := s.Poll(ctx, 1)
				if err != nil || len(ds) != 1 {
					b.Fatalf("Poll = %d tasks, %v", len(ds), err)
				}
				if err := s.Ack(ctx, ds...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
