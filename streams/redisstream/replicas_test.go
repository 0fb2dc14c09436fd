package redisstream

import (
	"errors"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/redis/go-redis/v9"
)

// TestWaitReplicasWithoutReplicas: on the test server, which has no
// replica, a stream that waits for one reports every write as not
// replicated, and the write was applied all the same.
func TestWaitReplicasWithoutReplicas(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{WaitReplicas: 1, WaitTimeout: 20 * time.Millisecond})
	err := s.Enqueue(streamtest.Context(t), task("a"))
	var re *ReplicationError
	if !errors.Is(err, ErrNotReplicated) || !errors.As(err, &re) || re.Wanted != 1 || re.Got != 0 {
		t.Fatalf("Enqueue = %v, want a *ReplicationError of 0 of 1 replicas", err)
	}
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 1 {
		t.Fatalf("Poll returned %d tasks, want the 1 stored despite the error", len(ds))
	}
	if err := s.Ack(streamtest.Context(t), ds...); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("Ack = %v, want an error wrapping ErrNotReplicated", err)
	}
	wantCounts(t, s, map[peonify.State]int{})
}

// TestWaitReplicasNeedsKnownClient: WAIT must follow the write on its
// connection, which only the clients the stream knows let it find.
func TestWaitReplicasNeedsKnownClient(t *testing.T) {
	r := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer r.Close()
	if _, err := New(r, Config{WaitReplicas: 1}); err == nil {
		t.Fatal("New with a Ring and WaitReplicas returned no error")
	}
	if _, err := New(r, Config{}); err != nil {
		t.Fatalf("New with a Ring: %v", err)
	}
}
