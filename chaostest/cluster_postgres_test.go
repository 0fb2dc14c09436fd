//go:build linux

package chaostest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/peonify/peonify/internal/testcluster"
	"github.com/peonify/peonify/streams/pgstream"
)

// The failover cells of Postgres: each cell starts a primary with a
// streaming hot standby of its own (testcluster.StartPostgres), runs
// processors on the pair's multi-host URL, stops the primary as a crash
// would and promotes the standby. The processors reconnect to the new
// primary by themselves.
//
//   - promote: synchronous replication (synchronous_commit on, the
//     standby synchronous) and Config.SyncCommit: documented as losing
//     nothing, and as running again only the tasks in flight at the
//     failover.
//   - promote-async: asynchronous replication and the default settings:
//     the stream documents that a failover may lose the tasks enqueued
//     within the replication lag before it, and run again those claimed
//     or acked then; the cell measures both, and fails only beyond
//     asyncLossWindow.

// asyncLossWindow is how long before the primary stops a task's Enqueue
// must have returned for the promote-async cell to allow its loss: what
// the standby had not received then is gone. Enqueue commits
// synchronously on the primary, so that is the replication lag,
// milliseconds here; the window leaves room for a loaded machine. The
// stream's README states the same bound.
const asyncLossWindow = time.Second

// asyncAgainWindow is how long before the primary stops a task must have
// been claimed, acked or nacked for the promote-async cell to allow it
// to run again. Claims and acks committed asynchronously (the default,
// without SyncCommit) reach the log, and so the standby, within three
// wal_writer_delay (600ms by default), and then within the replication
// lag.
const asyncAgainWindow = 2 * time.Second

// replicaLease is the lease of the pair's cells: longer than chaosLease,
// since each cell runs two Postgres servers besides its processors, and a
// commit that waits for the synchronous standby on a loaded two-core
// machine has been seen to stall past 2s, which let leases end under live
// processors before the failover.
const replicaLease = 5 * time.Second

func init() {
	backends = append(backends, &backend{name: "postgres-replica", prepare: preparePostgresReplica, cluster: true,
		seesRunning: true, acksConfirmed: true})
	scenarios = append(scenarios,
		scenario{name: "promote", cluster: true, only: "postgres-replica", run: func(c *cell) { scenarioPromote(c, true) }},
		scenario{name: "promote-async", cluster: true, only: "postgres-replica", run: func(c *cell) { scenarioPromote(c, false) }},
	)
	openers["postgres-replica"] = openPostgresReplica(false)
	openers["postgres-replica-synccommit"] = openPostgresReplica(true)
}

// replicaPairs holds the pair each cell started, by the cell's test.
var replicaPairs sync.Map // *testing.T → *testcluster.Postgres

// preparePostgresReplica starts the cell's pair, asynchronous (a scenario
// may make it synchronous), and migrates its public schema.
func preparePostgresReplica(t *testing.T, _, _ string) streamSpec {
	p := testcluster.StartPostgres(t, testcluster.PostgresOptions{})
	replicaPairs.Store(t, p)
	t.Cleanup(func() { replicaPairs.Delete(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, p.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := pgstream.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return streamSpec{Kind: "postgres-replica", Addr: p.URL(), Queue: "chaos-" + randHex(6), Lease: replicaLease}
}

// openPostgresReplica opens a stream on a pgxpool of the pair's multi-host
// URL, with Config.SyncCommit set to syncCommit (kind
// "postgres-replica-synccommit").
func openPostgresReplica(syncCommit bool) func(context.Context, streamSpec, string, *slog.Logger) (*opened, error) {
	return func(ctx context.Context, spec streamSpec, name string, logger *slog.Logger) (*opened, error) {
		cfg, err := pgxpool.ParseConfig(spec.Addr)
		if err != nil {
			return nil, err
		}
		cfg.ConnConfig.RuntimeParams["application_name"] = "chaostest-" + name
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		s, err := pgstream.New(pool, pgstream.Config{Queue: spec.Queue, Lease: spec.Lease, RescueInterval: spec.Lease / 4,
			Identity: name, Logger: logger, SyncCommit: syncCommit})
		if err != nil {
			pool.Close()
			return nil, err
		}
		return &opened{s: s, enq: s, insp: s, done: pool.Close}, nil
	}
}

// scenarioPromote runs two processors and a producer on the pair, stops
// the primary at once when a quarter of the tasks are enqueued and a sixth
// done, while a second producer enqueues back to back, keeps the pair without a primary for a second, and promotes the
// standby. With durable (synchronous replication and SyncCommit) nothing
// may be lost and only the tasks in flight at the failover may run twice;
// without, the tasks enqueued within asyncLossWindow before the stop may
// be lost, and those claimed or acked within asyncAgainWindow may run
// twice.
func scenarioPromote(c *cell, durable bool) {
	v, ok := replicaPairs.Load(c.t)
	if !ok {
		c.t.Fatal("the cell has no Postgres pair")
	}
	p := v.(*testcluster.Postgres)
	if durable {
		p.SetSynchronous(c.t, "on")
		c.spec.Kind = "postgres-replica-synccommit"
	}
	a, b := c.startChild(nil), c.startChild(nil)
	c.waitUp(a, b)

	const total, batch = 1200, 20
	type stored struct {
		at  time.Time // when its Enqueue returned nil
		ids []string
	}
	var (
		smu      sync.Mutex
		stamps   []stored
		failures int
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// produce enqueues batches of tasks named prefix and a number while
	// more says so, pausing between them, and retries a batch whose
	// Enqueue failed until it is stored.
	produce := func(prefix string, batch int, pause time.Duration, more func(i int) bool) {
		for i := 0; more(i) && ctx.Err() == nil; i += batch {
			tasks := c.tasks(fmt.Sprintf("%s%04d", prefix, i), batch, work{Ms: 10})
			// A failed call may have stored the tasks; the retry then
			// finds them stored, or stores them again if the failover
			// lost them.
			ok := c.enqueueUntilStored(ctx, tasks, func(error) {
				smu.Lock()
				failures++
				smu.Unlock()
			})
			if !ok {
				return
			}
			smu.Lock()
			stamps = append(stamps, stored{time.Now(), ids(tasks)})
			smu.Unlock()
			time.Sleep(pause)
		}
	}
	// About 300 tasks a second for 4s.
	wg.Go(func() { produce("promote", batch, 60*time.Millisecond, func(i int) bool { return i < total }) })
	c.t.Cleanup(func() { cancel(); wg.Wait() })

	c.waitProgress(total)
	lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
	write, _, replay, lagErr := p.ReplicationLag(lctx)
	lcancel()
	// A burst of small enqueues back to back, from just before the stop
	// until one goes through after it: some commit as the primary stops.
	var stopped atomic.Bool
	wg.Go(func() { produce("burst", 5, 0, func(int) bool { return !stopped.Load() }) })
	time.Sleep(300 * time.Millisecond)
	before := c.heldBy(a.pid, b.pid)
	stopped.Store(true)
	stop := time.Now()
	p.StopPrimary(c.t)
	time.Sleep(time.Second) // no primary: the processors' polls and the producer's enqueues fail
	p.Promote(c.t)
	promoted := time.Now()
	after := c.heldBy(a.pid, b.pid)
	if lagErr == nil {
		c.note("replication lag before the stop: write %s, replay %s", write, replay)
	}
	c.note("no primary for %s", promoted.Sub(stop).Round(100*time.Millisecond))

	// In flight at the failover: what the processors held when the
	// primary stopped and when the standby took over, and every task they
	// claimed, ran, acked or nacked in between. Without durability also
	// those of the window before the stop, which the standby may not have
	// received.
	from := stop
	if !durable {
		from = stop.Add(-asyncAgainWindow)
	}
	touched, _ := c.recordsBetween(from, promoted)
	c.addFault(before, after, touched)

	c.waitProducer(&wg)

	// The tasks the failover may lose: none when durable; else those
	// whose Enqueue returned nil within the window before the stop, or
	// after it while the primary was going down: SIGQUIT stops it
	// without waiting for the standby, so an Enqueue in flight at the
	// stop can have its commit confirmed and never streamed. (The burst's
	// last batch of 5 did so once in CI.) No Enqueue returns nil between
	// the stop and the promotion from anywhere else: the standby refuses
	// writes until then.
	var mayLose []string
	smu.Lock()
	for _, s := range stamps {
		if !durable && !s.at.Before(stop.Add(-asyncLossWindow)) && s.at.Before(promoted) {
			mayLose = append(mayLose, s.ids...)
		}
	}
	c.note("%d enqueues failed and were retried", failures)
	smu.Unlock()
	c.mu.Lock()
	c.mayLose = mayLose
	must := slices.DeleteFunc(slices.Clone(c.enqueued), func(id string) bool { return slices.Contains(mayLose, id) })
	c.mu.Unlock()
	if !durable {
		c.note("%d tasks enqueued within %s before the stop may be lost", len(mayLose), asyncLossWindow)
	}
	c.waitCompleted(must, len(must))
	c.waitQuiet()
	c.finish()

	// How long before the stop the lost tasks had been stored.
	c.mu.Lock()
	lost := c.verdict.MayLose
	c.mu.Unlock()
	if len(lost) > 0 {
		var oldest, newest time.Duration
		smu.Lock()
		for _, s := range stamps {
			if slices.Contains(lost, s.ids[0]) {
				age := stop.Sub(s.at)
				if oldest == 0 || age > oldest {
					oldest = age
				}
				if newest == 0 || age < newest {
					newest = age
				}
			}
		}
		smu.Unlock()
		c.note("the lost tasks' Enqueue returned %s to %s before the stop", newest.Round(time.Microsecond), oldest.Round(time.Microsecond))
	}
}
