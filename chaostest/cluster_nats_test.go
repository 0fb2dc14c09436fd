//go:build unix

package chaostest

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peonify/peonify/internal/testcluster"
	"github.com/peonify/peonify/streams/natsstream"
)

// The JetStream cluster cells: each starts a 3-node nats-server cluster of
// its own (internal/testcluster), sets the cell's stream up with three
// replicas, and runs three processors, each connected to a different node
// first, while a producer enqueues. The scenarios kill a node with
// SIGKILL mid-run and start it again: a node that leads nothing of the
// stream (nodefail), the stream leader's node (leaderfail), or the node of
// the leader of the consumer the processors share (consumerfail). Every task
// whose Enqueue returned nil must complete (JetStream acknowledges a
// publish once a majority of the replicas stored it), processing must go
// on while the node is down, and only tasks in flight around the fault
// may run twice.

func init() {
	backends = append(backends, &backend{name: "nats-cluster", cluster: true, prepare: prepareNATSCluster,
		seesRunning: true, acksConfirmed: true})
	scenarios = append(scenarios,
		scenario{name: "nodefail", cluster: true, only: "nats-cluster", run: func(c *cell) { scenarioNATSNodeFail(c, killFollower) }},
		scenario{name: "leaderfail", cluster: true, only: "nats-cluster", run: func(c *cell) { scenarioNATSNodeFail(c, killStreamLeader) }},
		scenario{name: "consumerfail", cluster: true, only: "nats-cluster", run: func(c *cell) { scenarioNATSNodeFail(c, killConsumerLeader) }},
	)
	openers["nats-cluster"] = openNATSCluster
}

// natsVictim is the node a cluster scenario kills.
type natsVictim int

const (
	killFollower       natsVictim = iota // a node that leads neither the stream nor its work consumer
	killStreamLeader                     // the stream leader's node
	killConsumerLeader                   // the node of the work consumer's leader, which takes pull requests and acks
)

// natsClusters are the clusters of the running cells, by queue.
var natsClusters sync.Map // string → *testcluster.NATS

// natsReplicas is the replication of the cells' streams.
const natsReplicas = 3

// natsMinDown is the least time a killed node stays down: longer than
// the lease, so that the claims of deliveries the fault cut off expire
// while it is down.
const natsMinDown = 3 * time.Second

// prepareNATSCluster starts the cell's cluster and sets its stream up
// with three replicas. The spec's Addr is every node's URL,
// comma-separated.
func prepareNATSCluster(t *testing.T, _, _ string) streamSpec {
	cl := testcluster.StartNATS(t)
	spec := streamSpec{Kind: "nats-cluster", Addr: strings.Join(cl.URLs(), ","), Queue: "CHAOS_" + randHex(6), Lease: chaosLease}
	natsClusters.Store(spec.Queue, cl)
	t.Cleanup(func() { natsClusters.Delete(spec.Queue) })
	withJS(t, spec.Addr, func(ctx context.Context, js jetstream.JetStream) error {
		cfg := natsConfig(spec, nil)
		cfg.Replicas = natsReplicas
		return natsstream.Setup(ctx, js, cfg)
	})
	if t.Failed() {
		t.FailNow()
	}
	return spec
}

// openNATSCluster opens a stream of kind "nats-cluster": a connection that
// tries the nodes in order, starting with one chosen by the process's
// name, so that the children of a cell connect to different nodes, and
// fails over to the others.
func openNATSCluster(_ context.Context, spec streamSpec, name string, logger *slog.Logger) (*opened, error) {
	urls := strings.Split(spec.Addr, ",")
	first := natsFirstNode(name, len(urls))
	urls = append(urls[first:], urls[:first]...)
	return openNATS(strings.Join(urls, ","), spec, name, logger, nats.DontRandomize())
}

// natsFirstNode returns the node a process named name connects to first:
// a child's sequence number in its cell (its name is
// scenario-backend-N-hex), or else a hash of the name.
func natsFirstNode(name string, nodes int) int {
	f := strings.Split(name, "-")
	if len(f) >= 3 {
		if n, err := strconv.Atoi(f[len(f)-2]); err == nil {
			return n % nodes
		}
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return int(h.Sum32() % uint32(nodes))
}

// scenarioNATSNodeFail kills a node of the cell's cluster with SIGKILL
// while three processors drain what a producer enqueues: the node that
// kill names. Tasks must keep completing while the node
// is down; then it is started again and must catch up. In flight at the
// fault: what the processors held when the node died and when it came
// back, and every task they claimed, ran, acked or nacked meanwhile (an
// ack sent to a leader that died may not have been applied).
func scenarioNATSNodeFail(c *cell, kill natsVictim) {
	v, ok := natsClusters.Load(c.spec.Queue)
	if !ok {
		c.t.Fatal("the cell's cluster is not registered")
	}
	cl := v.(*testcluster.NATS)
	cfg := natsConfig(c.spec, nil)
	children := []*child{c.startChild(nil), c.startChild(nil), c.startChild(nil)}
	c.waitUp(children...)
	pids := make([]int, len(children))
	for i, ch := range children {
		pids[i] = ch.pid
	}

	const total, batch = 1500, 10
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var failures int
	var misleading string // an Enqueue error that asks for Setup and says nothing of a leader
	var firstErr string   // the first Enqueue error, for the cell's note
	wg.Go(func() {
		for i := 0; i < total && ctx.Err() == nil; i += batch {
			tasks := c.tasks(fmt.Sprintf("%s%04d", c.scenario, i), batch, work{Ms: 10})
			stored := c.enqueueUntilStored(ctx, tasks, func(err error) {
				msg := err.Error()
				if strings.Contains(msg, "Setup") && !strings.Contains(msg, "leader") && misleading == "" {
					misleading = msg
				}
				if firstErr == "" {
					firstErr = msg[:min(len(msg), 160)]
				}
				failures++
			})
			if !stored {
				return
			}
			time.Sleep(40 * time.Millisecond)
		}
	})
	c.t.Cleanup(func() { cancel(); wg.Wait() })

	c.waitProgress(total)
	streamLeader, err := cl.StreamLeader(cfg.Stream, 10*time.Second)
	if err != nil {
		c.t.Fatal(err)
	}
	consumerLeader, err := natsConsumerLeader(cl, cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	victim, what := -1, ""
	switch kill {
	case killFollower:
		for i := range testcluster.NATSNodes {
			if i != streamLeader && i != consumerLeader {
				victim = i
				break
			}
		}
		if victim < 0 {
			c.t.Fatalf("every node leads the stream (node %d) or its consumer (node %d): no node to kill that leads nothing", streamLeader, consumerLeader)
		}
		what = "a node leading nothing of the stream"
	case killStreamLeader:
		victim, what = streamLeader, "the stream leader's node"
		if victim == consumerLeader {
			what += ", which also led the work consumer"
		}
	case killConsumerLeader:
		victim, what = consumerLeader, "the work consumer leader's node"
		if victim == streamLeader {
			what += ", which also led the stream"
		}
	}
	leader := victim == streamLeader

	before := c.heldBy(pids...)
	doneBefore := c.completedAll()
	down := time.Now()
	cl.Kill(victim)

	// Processing goes on with two nodes of three: wait for 100 more
	// completions, and for longer than the lease, so that claims stranded
	// by the fault come back, before starting the node again.
	var elected, consumerElected time.Duration
	if leader {
		next, err := cl.StreamLeader(cfg.Stream, 30*time.Second)
		if err != nil {
			c.t.Fatalf("no new stream leader after the leader's node was killed: %v", err)
		}
		elected = time.Since(down)
		if next == victim {
			c.t.Fatalf("node %d, killed, still leads the stream", victim)
		}
	}
	if victim == consumerLeader {
		var next int
		var err error
		if !waitFor(min(30*time.Second, c.remaining()), func() bool {
			next, err = natsConsumerLeader(cl, cfg)
			return err == nil && next != victim
		}) {
			c.t.Fatalf("no new leader of the work consumer after its node was killed: node %d, %v", next, err)
		}
		consumerElected = time.Since(down)
	}
	if !waitFor(min(30*time.Second, c.remaining()), func() bool { return c.completedAll() >= doneBefore+100 }) {
		c.t.Fatalf("processing stopped with node %d down: %d completions in %s", victim, c.completedAll()-doneBefore, time.Since(down).Round(time.Millisecond))
	}
	progressed := time.Since(down)
	time.Sleep(time.Until(down.Add(natsMinDown)))
	cl.Start(victim)
	restarted := time.Now()
	if err := cl.WaitStreamCurrent(cfg.Stream, 30*time.Second); err != nil {
		c.t.Fatalf("node %d did not catch up after its restart: %v", victim, err)
	}
	caughtUp := time.Since(restarted)
	after := c.heldBy(pids...)
	touched, _ := c.recordsBetween(down, time.Now())
	c.addFault(before, after, touched)
	note := fmt.Sprintf("killed %s (node %d) for %s; 100 completions %s after the kill", what, victim,
		restarted.Sub(down).Round(100*time.Millisecond), progressed.Round(100*time.Millisecond))
	if leader {
		note += fmt.Sprintf(", new stream leader in %s", elected.Round(100*time.Millisecond))
	}
	if victim == consumerLeader {
		note += fmt.Sprintf(", new consumer leader in %s", consumerElected.Round(100*time.Millisecond))
	}
	c.note("%s; caught up %s after its restart", note, caughtUp.Round(100*time.Millisecond))

	c.waitProducer(&wg)
	c.waitAll()
	c.waitQuiet()
	c.note("%d enqueues failed and were retried", failures)
	if firstErr != "" {
		c.note("first enqueue error: %s", firstErr)
	}
	if misleading != "" {
		c.t.Errorf("an Enqueue while the cluster was short of a node failed with %q, which asks for Setup without saying that a cluster may be electing a leader", misleading)
	}
	c.finish()
}

// completedAll returns how many enqueued tasks completed at least once.
func (c *cell) completedAll() int {
	c.mu.Lock()
	all := slices.Clone(c.enqueued)
	c.mu.Unlock()
	return c.completed(all)
}

// natsConsumerLeader returns the node that leads the work consumer of
// the stream cfg describes.
func natsConsumerLeader(cl *testcluster.NATS, cfg natsstream.Config) (int, error) {
	nc, err := nats.Connect(strings.Join(cl.URLs(), ","), nats.Timeout(2*time.Second))
	if err != nil {
		return -1, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return -1, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	consumer := cfg.Consumer
	if consumer == "" {
		consumer = "peonify" // natsstream's default
	}
	cons, err := js.Consumer(ctx, cfg.Stream, consumer)
	if err != nil {
		return -1, err
	}
	info := cons.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return -1, fmt.Errorf("consumer %s of stream %s has no leader", info.Name, cfg.Stream)
	}
	return cl.Node(info.Cluster.Leader), nil
}
