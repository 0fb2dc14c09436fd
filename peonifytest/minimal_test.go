package peonifytest_test

import (
	"context"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifytest"
	"github.com/peonify/peonify/streams/memstream"
)

// minimal exposes only the required peonify.Stream methods of a memstream,
// like a stream in front of a broker that the suite feeds through
// Features.Enqueue.
type minimal struct{ s *memstream.Stream }

func (m minimal) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	return m.s.Poll(ctx, limit)
}

func (m minimal) Ack(ctx context.Context, ds ...peonify.Delivery) error { return m.s.Ack(ctx, ds...) }

func (m minimal) Nack(ctx context.Context, d peonify.Delivery, o peonify.NackOptions) error {
	return m.s.Nack(ctx, d, o)
}

func (m minimal) Close(ctx context.Context) error { return m.s.Close(ctx) }

// TestMinimalStream runs the suite against a stream with no optional
// capability, fed by Features.Enqueue, and with every Features flag set
// but NoKey (the memstream behind it carries Task.Key) and the flags of
// kinds of limits (it enforces none): the checks that need what it lacks
// skip, the others pass.
func TestMinimalStream(t *testing.T) {
	peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
		s := memstream.New(memstream.Config{Lease: lease})
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		return minimal{s}
	}, peonifytest.Features{
		Lease: lease,
		Enqueue: func(ctx context.Context, s peonify.Stream, tasks ...*peonify.Task) error {
			return s.(minimal).s.Enqueue(ctx, tasks...)
		},
		NoScheduling:     true,
		NoPriority:       true,
		NoHeaders:        true,
		NoLastError:      true,
		NoDuplicateCheck: true,
		NoLimiter:        true,
		NoTracker:        true,
		NoWorkflows:      true,
		MaxPayload:       1 << 10,
	})
}
