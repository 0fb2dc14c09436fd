package peonify

import (
	"math"
	"math/bits"
	"sort"
	"sync/atomic"
	"time"
)

// EventKind says what happened to a task.
type EventKind int

// The kinds of Event.
const (
	EventSucceeded EventKind = iota + 1 // the handler returned nil; the ack is batched and reaches the stream within milliseconds
	EventRetried                        // the attempt failed; the task will be retried after Event.Delay
	EventDead                           // the task was dead-lettered (permanent error, out of attempts, unknown type)
	EventReleased                       // the task was handed back unstarted or interrupted, not counted as an attempt
	EventSnoozed                        // the handler asked to run the task again after Event.Delay, not counted
	EventLeaseLost                      // the task's lease was lost while it ran; its result was discarded
	EventCancelled                      // the task was cancelled (see Tracker.Cancel) before it started or while it ran; its result was discarded
)

// String returns the kind's lower-case name.
func (k EventKind) String() string {
	switch k {
	case EventSucceeded:
		return "succeeded"
	case EventRetried:
		return "retried"
	case EventDead:
		return "dead"
	case EventReleased:
		return "released"
	case EventSnoozed:
		return "snoozed"
	case EventLeaseLost:
		return "lease_lost"
	case EventCancelled:
		return "cancelled"
	}
	return "unknown"
}

// Event reports one task outcome to Config.OnEvent.
type Event struct {
	Kind     EventKind
	Task     *Task         // read-only
	Stream   string        // name of the stream the task came from
	Claimed  time.Time     // when the stream delivered the task to this processor
	Started  time.Time     // when the handler started; zero if it did not run
	Duration time.Duration // how long the handler ran; zero if it did not run
	Delay    time.Duration // for EventRetried and EventSnoozed: wait before the next attempt
	Err      error         // the handler's error, or why the task is dead
}

// counters are the processor's totals since Run started.
type counters struct {
	polled, started, succeeded, failed, retried, dead, released, snoozed, leaseLost, cancelled, ackErrors atomic.Uint64
}

// latencyBuckets is the number of histogram buckets per task type; bucket i
// counts runs shorter than 2^i microseconds, the last one everything
// longer.
const latencyBuckets = 32

// typeStats accumulates one task type's run times without locks.
type typeStats struct {
	succeeded, failed atomic.Uint64
	totalNanos        atomic.Int64
	buckets           [latencyBuckets]atomic.Uint64
}

func (ts *typeStats) record(d time.Duration, ok bool) {
	if ok {
		ts.succeeded.Add(1)
	} else {
		ts.failed.Add(1)
	}
	ts.totalNanos.Add(int64(d))
	i := bits.Len64(uint64(d / time.Microsecond))
	ts.buckets[min(i, latencyBuckets-1)].Add(1)
}

// Stats is a snapshot of a processor's activity, for metrics, dashboards
// and tests.
type Stats struct {
	Polled    uint64 // tasks received from streams
	Started   uint64 // handler runs started
	Succeeded uint64 // tasks acked
	Failed    uint64 // handler runs that returned an error or panicked
	Retried   uint64 // failed tasks scheduled for another attempt
	Dead      uint64 // tasks dead-lettered
	Released  uint64 // tasks handed back without counting the attempt
	Snoozed   uint64 // tasks that asked to run later
	LeaseLost uint64 // tasks whose lease was lost
	Cancelled uint64 // tasks found cancelled before they started or while they ran
	AckErrors uint64 // acks that failed after retries (the tasks will run again)

	Workers    int        // size of the worker pool
	QueueDepth int        // tasks claimed and waiting for a worker
	InFlight   []InFlight // running tasks, longest-running first

	Types   map[string]TypeStats // per task type; unregistered types under ""
	Streams []StreamStats
}

// InFlight describes one running task.
type InFlight struct {
	ID      string
	Type    string
	Stream  string
	Attempt int
	Started time.Time
	Running time.Duration
}

// TypeStats summarises the runs of one task type.
type TypeStats struct {
	Succeeded uint64
	Failed    uint64
	Total     time.Duration // summed run time
	// Buckets[i] counts runs shorter than 2^i µs (the last bucket: all
	// longer runs).
	Buckets [latencyBuckets]uint64
}

// Quantile estimates the q-quantile (0 < q ≤ 1) of run times from the
// histogram, as the upper bound of the bucket that holds it.
func (ts TypeStats) Quantile(q float64) time.Duration {
	n := ts.Succeeded + ts.Failed
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for i, c := range ts.Buckets {
		seen += c
		if seen >= rank {
			return time.Duration(1<<i) * time.Microsecond
		}
	}
	return time.Duration(1<<(latencyBuckets-1)) * time.Microsecond
}

// StreamStats describes one stream's polling.
type StreamStats struct {
	Name       string
	Weight     int
	Polls      uint64 // Poll calls
	Polled     uint64 // tasks delivered
	PollErrors uint64 // failed Polls, and failed Starts (see Starter)
	LastError  string // the last poll (or start) error, if any
	BackingOff bool   // the last poll (or start) failed and the stream is waiting to retry
}

// Stats returns a snapshot of the processor's counters, queue and running
// tasks. It is safe to call at any time from any goroutine.
func (p *Processor) Stats() Stats {
	c := &p.counters
	s := Stats{
		Polled: c.polled.Load(), Started: c.started.Load(), Succeeded: c.succeeded.Load(),
		Failed: c.failed.Load(), Retried: c.retried.Load(), Dead: c.dead.Load(),
		Released: c.released.Load(), Snoozed: c.snoozed.Load(), LeaseLost: c.leaseLost.Load(),
		Cancelled: c.cancelled.Load(),
		AckErrors: c.ackErrors.Load(),
		Workers:   p.cfg.Workers,
	}
	p.mu.Lock()
	started := p.started
	streams := p.streams
	p.mu.Unlock()
	for _, st := range streams {
		ss := StreamStats{Name: st.name, Weight: st.weight, Polls: st.polls.Load(), Polled: st.polled.Load(),
			PollErrors: st.pollErrors.Load(), BackingOff: st.backoff.Load()}
		if e := st.lastErr.Load(); e != nil {
			ss.LastError = *e
		}
		s.Streams = append(s.Streams, ss)
	}
	if !started {
		return s
	}
	s.QueueDepth = len(p.queue)
	now := time.Now()
	for i := range p.slots {
		sl := &p.slots[i]
		sl.mu.Lock()
		if sl.running {
			t := sl.d.Task
			s.InFlight = append(s.InFlight, InFlight{ID: t.ID, Type: t.Type, Stream: sl.st.name,
				Attempt: t.Attempt, Started: sl.started, Running: now.Sub(sl.started)})
		}
		sl.mu.Unlock()
	}
	sort.Slice(s.InFlight, func(i, j int) bool { return s.InFlight[i].Started.Before(s.InFlight[j].Started) })
	s.Types = make(map[string]TypeStats, len(p.types)+1)
	snap := func(ts *typeStats) TypeStats {
		out := TypeStats{Succeeded: ts.succeeded.Load(), Failed: ts.failed.Load(), Total: time.Duration(ts.totalNanos.Load())}
		for i := range ts.buckets {
			out.Buckets[i] = ts.buckets[i].Load()
		}
		return out
	}
	for typ, ts := range p.types {
		s.Types[typ] = snap(ts)
	}
	if u := snap(&p.unknown); u.Succeeded+u.Failed > 0 {
		s.Types[""] = u
	}
	return s
}
