package testcluster

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNATS starts a cluster, stores messages in a stream with three
// replicas through a client that knows every node, kills the stream
// leader's node, checks that another node takes over and that every
// acknowledged message is still there, and starts the node again until it
// has caught up.
func TestNATS(t *testing.T) {
	c := StartNATS(t)
	if got := len(c.URLs()); got != NATSNodes {
		t.Fatalf("URLs returned %d URLs, want %d", got, NATSNodes)
	}
	nc, err := nats.Connect(c.Servers(1), nats.Name("testcluster-test"), nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got, want := nc.ConnectedUrl(), c.URL(1); got != want {
		t.Errorf("connected to %s, want node 1 at %s first", got, want)
	}
	if got, err := c.ConnectedTo("testcluster-test"); got != 1 || err != nil {
		t.Errorf("ConnectedTo = %d, %v; want node 1", got, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	const n = 50
	for range n {
		if _, err := js.Publish(ctx, "t", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	leader, err := c.StreamLeader("T", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(leader)
	if c.Running(leader) {
		t.Fatalf("node %d runs after Kill", leader)
	}
	next, err := c.StreamLeader("T", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if next == leader {
		t.Fatalf("node %d, killed, is still the stream's leader", leader)
	}
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().State.Msgs; got != n {
		t.Errorf("after the leader's node was killed the stream holds %d messages, want the %d acknowledged", got, n)
	}
	if _, err := js.Publish(ctx, "t", []byte("x")); err != nil {
		t.Fatalf("publishing with two of three nodes up: %v", err)
	}
	c.Start(leader)
	if err := c.WaitStreamCurrent("T", 30*time.Second); err != nil {
		t.Fatal(err)
	}
}
