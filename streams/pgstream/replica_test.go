//go:build linux

package pgstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testcluster"
	"github.com/peonify/peonify/peonifytest"
)

// TestReplicaConformance runs the public stream suite on a primary with a
// synchronous streaming replica, through the multi-host URL that a
// deployment with a standby uses.
func TestReplicaConformance(t *testing.T) {
	p := testcluster.StartPostgres(t, testcluster.PostgresOptions{Synchronous: "on"})
	pool := migratedPool(t, p.URL(), 48)
	const lease = 500 * time.Millisecond
	peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
		return newTestStream(t, pool, Config{Lease: lease, RescueInterval: 25 * time.Millisecond, SyncCommit: true})
	}, peonifytest.Features{Lease: lease})
}

// TestReplicaScaleOut runs the scale-out test (see TestScaleOut) on a
// primary with a synchronous replica, its processes connected through the
// multi-host URL.
func TestReplicaScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four processes over 20,000 tasks; skipped with -short")
	}
	p := testcluster.StartPostgres(t, testcluster.PostgresOptions{Synchronous: "on"})
	scaleOut(t, migratedPool(t, p.URL(), 8), p.URL())
}

// TestReplicaFailover runs a processor on the multi-host URL of a primary
// with a synchronous replica, stops the primary as a crash would and
// promotes the standby. The processor, its stream's listener and the
// producer reconnect to the new primary by themselves: every task
// enqueued before and after completes, and none of those acked before the
// failover runs again (claims and acks commit synchronously).
func TestReplicaFailover(t *testing.T) {
	p := testcluster.StartPostgres(t, testcluster.PostgresOptions{Synchronous: "on"})
	pool := migratedPool(t, p.URL(), 16)
	s := newTestStream(t, pool, Config{Lease: 2 * time.Second, RescueInterval: 250 * time.Millisecond, SyncCommit: true})

	var mu sync.Mutex
	runs := make(map[string]int)
	proc, err := peonify.New(peonify.Config{Workers: 4, QueueSize: 4, ShutdownGrace: 2 * time.Second,
		PollInterval: 200 * time.Millisecond, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.AddTaskList(peonify.TaskList{"failover": peonify.HandlerFunc(func(ctx context.Context, tk *peonify.Task) error {
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		runs[tk.ID]++
		mu.Unlock()
		return nil
	})}); err != nil {
		t.Fatal(err)
	}
	if err := proc.AddStream(s); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- proc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	batch := func(prefix string, n int) []string {
		ids := make([]string, n)
		tasks := make([]*peonify.Task, n)
		for i := range tasks {
			ids[i] = fmt.Sprintf("%s-%03d", prefix, i)
			tasks[i] = &peonify.Task{ID: ids[i], Type: "failover", Payload: []byte(`{}`)}
		}
		// Retried until the new primary takes it: a failed call may
		// have stored some, which the retry reports as duplicates.
		deadline := time.Now().Add(45 * time.Second)
		for {
			ectx, ecancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := s.Enqueue(ectx, tasks...)
			ecancel()
			if err == nil || errors.Is(err, peonify.ErrDuplicate) {
				return ids
			}
			if time.Now().After(deadline) {
				t.Fatalf("Enqueue of %s still fails 45s on: %v", prefix, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitDone := func(ids []string, what string) {
		t.Helper()
		deadline := time.Now().Add(45 * time.Second)
		for {
			mu.Lock()
			n := 0
			for _, id := range ids {
				if runs[id] > 0 {
					n++
				}
			}
			mu.Unlock()
			if n == len(ids) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d tasks %s completed within 45s", n, len(ids), what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	before := batch("before", 200)
	waitDone(before[:50], "enqueued before the failover (the first 50)")
	// The tasks acked now: with KeepDone 0 an ack deletes the row.
	rows, err := pool.Query(context.Background(), "SELECT id FROM "+testSchema+".peonify_tasks WHERE queue = $1", s.cfg.Queue)
	if err != nil {
		t.Fatal(err)
	}
	live, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	acked := make(map[string]bool)
	mu.Lock()
	for id := range runs {
		if !slices.Contains(live, id) {
			acked[id] = true
		}
	}
	mu.Unlock()

	p.Failover(t)
	after := batch("after", 200)
	waitDone(before, "enqueued before the failover")
	waitDone(after, "enqueued after the failover")

	// The queue ends empty: nothing stays leased on the new primary.
	deadline := time.Now().Add(30 * time.Second)
	for {
		counts, err := s.Counts(context.Background())
		if err == nil && len(counts) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the queue is not empty 30s after every task completed: %v (%v)", counts, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	var again []string
	for id, n := range runs {
		if n > 1 && acked[id] {
			again = append(again, id)
		}
	}
	// Their acks were committed on the standby too before they returned.
	if len(again) > 0 {
		t.Errorf("%d of the %d tasks acked before the failover ran again after it, though claims and acks commit synchronously on a synchronous replica: %v",
			len(again), len(acked), again)
	}
}
