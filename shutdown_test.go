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
			fill(t, s.Stream, "t", 10)
			if err := p.AddStream(s); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		runUntil(t, p, &done, 30) // the acks hang from the first
		if took := time.Since(start); took < 20*time.Second || took > 20*time.Second+100*time.Millisecond {
			t.Errorf("Run took %s; want 20s after the tasks ran: 10s for the acks, 10s for the closes", took)
		}
		if n := p.Stats().AckErrors; n != 30 {
			t.Errorf("AckErrors = %d, want the 30 tasks whose acks never completed", n)
		}
	})
}
