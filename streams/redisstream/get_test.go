package redisstream

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestGetNeverMissesAMovingTask reads a task over and over while it is
// claimed and handed back every millisecond, which moves it to a new
// stream entry each time: Get reads a task's location and then the task,
// and a task that moved in between must be read again, not reported
// missing (a waiter would otherwise give up on a task that exists).
func TestGetNeverMissesAMovingTask(t *testing.T) {
	s := newTestStream(t, testClient(t), Config{})
	ctx := streamtest.Context(t)
	tk := task("t")
	tk.ID = "moving"
	if err := s.Enqueue(ctx, tk); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			ds, err := s.Poll(ctx, 1)
			if err != nil {
				t.Error(err)
				return
			}
			for _, d := range ds {
				time.Sleep(time.Millisecond) // the task runs
				if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeReleased}); err != nil {
					t.Error(err)
					return
				}
			}
		}
	})
	deadline := time.Now().Add(2 * time.Second)
	reads := 0
	for time.Now().Before(deadline) {
		if _, err := s.Get(context.Background(), "moving"); errors.Is(err, peonify.ErrNotFound) {
			t.Errorf("Get after %d reads: %v; the task exists all along", reads, err)
			break
		} else if err != nil {
			t.Fatal(err)
		}
		reads++
	}
	close(stop)
	wg.Wait()
	t.Logf("%d reads while the task moved", reads)
}
