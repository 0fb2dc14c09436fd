package peonify_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// hungStore is a store that stopped answering after handing out tasks:
// Ack and Close block until their context ends.
type hungStore struct {
	*memstream.Stream
	name string
}

func (h hungStore) Name() string { return h.name }

func (h hungStore) Ack(ctx context.Context, _ ...peonify.Delivery) error {
	<-ctx.Done()
	return ctx.Err()
}

func (h hungStore) Close(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestShutdownIsBoundedWhenTheStoreHangs checks that Run returns a bounded
// time after its context ends even if every stream hangs: acks get 10s in
// all (however many calls and retries), and streams close side by side
// within 10s more. The tasks whose acks failed are counted, and come back
// when their leases end. Virtual time (testing/synctest) makes the 20s
// instant and exact.
func TestShutdownIsBoundedWhenTheStoreHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := peonify.New(peonify.Config{Workers: 4, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		var done atomic.Int64
		_ = p.AddTaskList(peonify.TaskList{"t": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
			done.Add(1)
			return nil
		})})
		for _, name := range []string{"a", "b", "c"} {
			s := hungStore{Stream: memstream.New(memstream.Config{}), name: name}
			for range 10 {
				if err := s.Enqueue(t.Context(), &peonify.Task{Type: "t"}); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.AddStream(s); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error)
		go func() { errc <- p.Run(ctx) }()
		for done.Load() < 30 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(5 * time.Millisecond) // the acks are sent, and hang
		stop := time.Now()
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run = %v", err)
		}
		if took := time.Since(stop); took != 20*time.Second {
			t.Errorf("Run returned %s after its context ended; want 20s: 10s for the acks, 10s for the closes", took)
		}
		if n := p.Stats().AckErrors; n != 30 {
			t.Errorf("AckErrors = %d, want the 30 tasks whose acks never completed", n)
		}
	})
}
