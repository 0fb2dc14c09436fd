package natsstream

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testcluster"
	"github.com/peonify/peonify/peonifytest"
)

// clusterJS connects to the cluster's nodes, node first, reconnecting to
// the others for ever, and returns a JetStream context on the connection,
// closed when the test ends.
func clusterJS(t testing.TB, c *testcluster.NATS, first int) jetstream.JetStream {
	t.Helper()
	return jetStreamOn(t, connectTest(t, c.Servers(first), nats.DontRandomize()))
}

// TestCluster runs the conformance suite and the scale-out test on a
// 3-node JetStream cluster of the test's own, with streams and consumers of
// three replicas. The streams are set up through one node and used
// through another, and the scale-out processors each connect to a
// different node first, so that every delivery, ack and republished copy
// crosses the cluster's routes.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node nats-server cluster; skipped with -short")
	}
	c := testcluster.StartNATS(t)
	setup, use := clusterJS(t, c, 0), clusterJS(t, c, 1)

	t.Run("conformance", func(t *testing.T) {
		const lease = time.Second
		peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
			cfg := uniqueConfig(t, Config{AckWait: lease, Replicas: 3})
			if !skippedCheck(t.Name()) {
				setupTest(t, setup, cfg)
			}
			s, err := New(use, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close(t.Context()) })
			return s
		}, features(lease))
	})

	// A Poll must not wait for a status the server never sends: the
	// consumer's leader delivers what its replica of the stream holds and
	// may end the request silently (see fetchTail). A large task makes
	// the replica lag behind the stream leader's acknowledgement.
	t.Run("partialfetch", func(t *testing.T) {
		for round := range 2 {
			cfg := uniqueConfig(t, Config{Stream: fmt.Sprintf("T_partial_%d_%s", round, streamtest.RandHex(3)), Replicas: 3})
			setupTest(t, setup, cfg)
			s, err := New(use, cfg)
			if err != nil {
				t.Fatal(err)
			}
			streamtest.CloseAtEnd(t, s)
			var tasks []*peonify.Task
			for i := range 5 {
				tk := &peonify.Task{Type: "partial", Payload: []byte("{}")}
				if i == 3 {
					tk.Payload = make([]byte, 512<<10)
				}
				tasks = append(tasks, tk)
			}
			streamtest.Enqueue(t, s, tasks...)
			got := 0
			for polls := 0; got < len(tasks); polls++ {
				if polls == 10 {
					t.Fatalf("round %d: %d of %d tasks after 10 polls", round, got, len(tasks))
				}
				start := time.Now()
				ds := streamtest.Poll(t, s, len(tasks))
				// A Poll that got nothing may wait fetchNoReply: the server
				// also leaves some empty requests unanswered (README.md).
				if took := time.Since(start); len(ds) > 0 && took >= fetchNoReply {
					t.Errorf("round %d: a Poll that returned %d tasks took %s: it waited for the server to end a request it had ended", round, len(ds), took)
				}
				got += len(ds)
				if err := s.Ack(streamtest.Context(t), ds...); err != nil {
					t.Fatal(err)
				}
			}
		}
	})

	t.Run("scaleout", func(t *testing.T) {
		s, cfg := newTestStream(t, setup, Config{AckWait: scaleAckWait, Replicas: 3})
		scaleOut(t, s, cfg, func(child int) string { return c.Servers(child) })
	})
}

// skippedCheck reports whether the conformance check named name (a
// subtest's full name) is one that the features of TestConformance skip
// without using the stream. Setting up four replicated JetStream objects
// takes about two seconds on a loaded machine, so TestCluster gives those
// checks a stream that New made without Setup: if one of them did use it,
// it would fail, saying the stream does not exist.
func skippedCheck(name string) bool {
	check := name[strings.LastIndexByte(name, '/')+1:]
	for _, prefix := range []string{"Limit", "Workflow", "Cancel", "Result", "Progress"} {
		if strings.HasPrefix(check, prefix) {
			return true
		}
	}
	switch check {
	case "Tracker", "DuplicateUniqueKey", "Priority":
		return true
	}
	return false
}
