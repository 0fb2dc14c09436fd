// Package testlimiter is a stand-in peonify.Limiter on a real memstream,
// for the tests of what shows a store's limits (the dashboard, the
// Prometheus export) apart from how any store enforces them.
package testlimiter

import (
	"context"
	"sync"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// Stream is a real memstream with a stand-in Limiter: it records the
// limits it is given and reports the stats the test sets. It also records
// the ListOptions of each List, to check what is asked of the store.
type Stream struct {
	*memstream.Stream

	mu     sync.Mutex
	limits []peonify.Limit
	stats  []peonify.LimitStat
	err    error
	block  <-chan struct{} // when set, LimitStats waits for it, ignoring ctx
	lists  []peonify.ListOptions
}

// New returns s with a stand-in Limiter that reports stats.
func New(s *memstream.Stream, stats ...peonify.LimitStat) *Stream {
	return &Stream{Stream: s, stats: stats}
}

// Unwrap returns the memstream.
func (s *Stream) Unwrap() peonify.Stream { return s.Stream }

// SetLimits records limits, normalized.
func (s *Stream) SetLimits(limits []peonify.Limit) error {
	n, err := peonify.NormalizeLimits(limits)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits = n
	return nil
}

// Limits returns the limits last given to SetLimits.
func (s *Stream) Limits() []peonify.Limit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limits
}

// LimitStats returns what SetStats set, after waiting for the channel
// given to Block, if any.
func (s *Stream) LimitStats(context.Context) ([]peonify.LimitStat, error) {
	s.mu.Lock()
	block, stats, err := s.block, s.stats, s.err
	s.mu.Unlock()
	if block != nil {
		<-block
	}
	return stats, err
}

// SetStats sets what LimitStats returns.
func (s *Stream) SetStats(stats []peonify.LimitStat, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats, s.err = stats, err
}

// Block makes LimitStats wait for block, ignoring its context, as a store
// that does not answer.
func (s *Stream) Block(block <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.block = block
}

// List records opts and lists the memstream's tasks.
func (s *Stream) List(ctx context.Context, opts peonify.ListOptions) ([]peonify.TaskInfo, error) {
	s.mu.Lock()
	s.lists = append(s.lists, opts)
	s.mu.Unlock()
	return s.Stream.List(ctx, opts)
}

// Lists returns the ListOptions of each List so far, in order.
func (s *Stream) Lists() []peonify.ListOptions {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lists
}
