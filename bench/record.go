package main

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// recorder collects what one run observed: when each task became available,
// when its handler started, how often it ran, and how many completions the
// library reported. Tasks are numbered 0..n-1 by the sequence number that
// travels in their payload.
type recorder struct {
	n     int
	epoch time.Time // monotonic base of every timestamp below

	insertedAt []atomic.Int64 // nanoseconds since epoch
	startedAt  []atomic.Int64
	runs       []atomic.Int32

	distinct  atomic.Int64 // tasks whose handler ran at least once
	dups      atomic.Int64 // handler runs beyond the first of a task
	outside   atomic.Int64 // handler runs of a sequence number outside 0..n-1
	completed atomic.Int64 // completions the library reported durable

	doneOnce sync.Once
	done     chan struct{} // closed when completed reaches n
	doneAt   atomic.Int64
}

func newRecorder(n int) *recorder {
	return &recorder{
		n:          n,
		epoch:      time.Now(),
		insertedAt: make([]atomic.Int64, n),
		startedAt:  make([]atomic.Int64, n),
		runs:       make([]atomic.Int32, n),
		done:       make(chan struct{}),
	}
}

// now returns the time since the recorder's epoch, on the monotonic clock.
func (r *recorder) now() int64 { return int64(time.Since(r.epoch)) }

// inserted records that tasks first..first+count-1 were committed at t.
func (r *recorder) inserted(first, count int, t int64) {
	for i := first; i < first+count && i < r.n; i++ {
		r.insertedAt[i].Store(t)
	}
}

// started is called by the handlers with the task's sequence number.
func (r *recorder) started(seq int) {
	t := r.now()
	if seq < 0 || seq >= r.n {
		r.outside.Add(1)
		return
	}
	if r.runs[seq].Add(1) == 1 {
		r.startedAt[seq].Store(t)
		r.distinct.Add(1)
	} else {
		r.dups.Add(1)
	}
}

// completedN records k durable completions.
func (r *recorder) completedN(k int) {
	if r.completed.Add(int64(k)) >= int64(r.n) {
		r.doneOnce.Do(func() {
			r.doneAt.Store(r.now())
			close(r.done)
		})
	}
}

// check reports an error unless every task ran exactly once.
func (r *recorder) check() error {
	if d := r.distinct.Load(); d != int64(r.n) || r.outside.Load() != 0 {
		return fmt.Errorf("%d of %d distinct tasks ran (%d runs of unknown tasks)", d, r.n, r.outside.Load())
	}
	if dup := r.dups.Load(); dup != 0 {
		return fmt.Errorf("%d tasks ran more than once: nothing failed, so every task must run once", dup)
	}
	if c := r.completed.Load(); c != int64(r.n) {
		return fmt.Errorf("the library reported %d completions for %d tasks", c, r.n)
	}
	return nil
}

// latencies returns the time from each task's availability to its
// handler's start, sorted. A handler that started before the producer's
// insert call returned counts as zero.
func (r *recorder) latencies() []time.Duration {
	out := make([]time.Duration, 0, r.n)
	for i := range r.n {
		s := r.startedAt[i].Load()
		if r.runs[i].Load() == 0 {
			continue
		}
		out = append(out, time.Duration(max(s-r.insertedAt[i].Load(), 0)))
	}
	slices.Sort(out)
	return out
}

// percentile returns the q-quantile (0 < q <= 1) of sorted values, by the
// nearest-rank method.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// cpuTime returns the CPU time (user plus system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
