package httpapi_test

import (
	"context"
	"sync/atomic"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// noDup is a store that detects no duplicates (as RabbitMQ): it stores
// every task under a new ID, counting the enqueues.
type noDup struct {
	*memstream.Stream
	stored atomic.Int64
}

func (s *noDup) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	s.stored.Add(int64(len(tasks)))
	for _, t := range tasks {
		c := t.Clone()
		c.ID = peonify.NewID()
		if err := s.Stream.Enqueue(ctx, c); err != nil {
			return err
		}
	}
	return nil
}
