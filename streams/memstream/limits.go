package memstream

import (
	"cmp"
	"context"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/peonify/peonify"
)

var _ peonify.Limiter = (*Stream)(nil)

// whole is the least number of tokens that counts as one whole token: a
// bucket refilled in floating point may hold 0.9999999999 tokens at the
// very nanosecond its token is due.
const whole = 1 - 1e-9

// limiter is one limit that a Stream enforces, with its token buckets.
type limiter struct {
	peonify.Limit // normalized (see peonify.Limit.Normalize)

	// buckets holds the token bucket of each key (of "" for a limit that
	// is not PerKey) that is not full: a missing bucket is a full one.
	buckets map[string]*bucket
}

// bucket is the token bucket of a rate limit, as it was at a moment.
type bucket struct {
	tokens float64
	at     time.Time
}

// key returns what l counts t under: its Key for a PerKey limit, and ""
// (the one count of the whole limit) otherwise.
func (l *limiter) key(t *peonify.Task) string {
	if l.PerKey {
		return t.Key
	}
	return ""
}

// holdsPermits reports whether the tasks l applies to hold a permit of it
// while they run: l limits their concurrency (Ordered implies Concurrency
// 1).
func (l *limiter) holdsPermits() bool {
	return l.Concurrency > 0 || len(l.KeyConcurrency) > 0
}

// tokens returns how many tokens key's bucket holds at now. A bucket
// starts full, with Burst tokens, and refills continuously, Rate tokens
// per Period, up to Burst.
func (l *limiter) tokens(key string, now time.Time) float64 {
	b := l.buckets[key]
	if b == nil {
		return float64(l.Burst)
	}
	elapsed := max(now.Sub(b.at), 0) // a clock that went back adds nothing
	return min(float64(l.Burst), b.tokens+float64(elapsed)*l.perNanosecond())
}

func (l *limiter) perNanosecond() float64 { return float64(l.Rate) / float64(l.Period) }

// take takes one token from key's bucket, which must hold one.
func (l *limiter) take(key string, now time.Time) {
	l.buckets[key] = &bucket{tokens: l.tokens(key, now) - 1, at: now}
}

// due returns when key's bucket, which holds less than a token at now,
// next holds a whole one.
func (l *limiter) due(key string, now time.Time) time.Time {
	missing := 1 - l.tokens(key, now)
	return now.Add(time.Duration(math.Ceil(missing / l.perNanosecond())))
}

// prune forgets the buckets that are full again at now.
func (l *limiter) prune(now time.Time) {
	for k := range l.buckets {
		if l.tokens(k, now) >= float64(l.Burst) {
			delete(l.buckets, k)
		}
	}
}

// SetLimits replaces the limits that Poll enforces (see peonify.Limit and
// the package documentation). It checks them with peonify.NormalizeLimits
// and returns its *peonify.ConfigError. Every kind of limit is supported;
// since the stream lives in one process, a Local limit counts exactly
// what a global one does. Every rate limit starts with full buckets.
//
// SetLimits may be called at any time, also while tasks run: the next Poll
// enforces the new limits (running tasks count against them), and Wake
// receives, since tasks the old limits held back may start now. Passing
// no limits turns enforcement off.
func (s *Stream) SetLimits(limits []peonify.Limit) error {
	ls, err := peonify.NormalizeLimits(limits)
	if err != nil {
		return err
	}
	var lims []*limiter
	for _, l := range ls {
		l.KeyConcurrency = maps.Clone(l.KeyConcurrency) // the caller's map may change
		lims = append(lims, &limiter{Limit: l, buckets: make(map[string]*bucket)})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return peonify.ErrClosed
	}
	s.limits = lims
	s.signal()
	return nil
}

// claimState is what a limited claim knows about the stream while it
// decides which ready tasks to take: for each limit, how many running
// tasks it counts per key (including those taken by this claim), and, for
// an Ordered limit, the enqueue sequence of the oldest live (pending,
// scheduled or running) task of each key.
type claimState struct {
	running []map[string]int
	heads   []map[string]uint64 // nil for a limit that is not Ordered
}

// newClaimState counts the running tasks and finds the head of each key
// of an Ordered limit. s.mu must be held.
func (s *Stream) newClaimState() *claimState {
	c := &claimState{
		running: make([]map[string]int, len(s.limits)),
		heads:   make([]map[string]uint64, len(s.limits)),
	}
	ordered := false
	for i, l := range s.limits {
		c.running[i] = make(map[string]int)
		if l.Ordered {
			c.heads[i] = make(map[string]uint64)
			ordered = true
		}
	}
	s.leased.each(func(e *entry) {
		for i, l := range s.limits {
			if l.Applies(e.t) {
				c.running[i][l.key(e.t)]++
			}
		}
	})
	if ordered {
		live := func(e *entry) {
			for i, l := range s.limits {
				if !l.Ordered || !l.Applies(e.t) {
					continue
				}
				k := l.key(e.t)
				if h, ok := c.heads[i][k]; !ok || e.seq < h {
					c.heads[i][k] = e.seq
				}
			}
		}
		s.ready.each(live)
		s.scheduled.each(live)
		s.leased.each(live)
	}
	return c
}

// admit decides whether e, a ready task, may be claimed at now: whether
// every limit that applies to it admits it. If so it takes e's permits
// and tokens and returns true. If not, and e waits for rate tokens only,
// due is when the last of them is due; it is zero when e waits for a
// permit or for its turn, which an Ack, a Nack or a lease's end frees.
// s.mu must be held.
func (s *Stream) admit(c *claimState, e *entry, now time.Time) (ok bool, due time.Time) {
	t := e.t
	for i, l := range s.limits {
		if !l.Applies(t) {
			continue
		}
		k := l.key(t)
		if n, limited := l.ConcurrencyFor(k); limited && c.running[i][k] >= n {
			return false, time.Time{}
		}
		if l.Ordered && c.heads[i][k] != e.seq {
			return false, time.Time{}
		}
		if l.Rate > 0 && l.tokens(k, now) < whole {
			if d := l.due(k, now); d.After(due) {
				due = d
			}
		}
	}
	if !due.IsZero() {
		return false, due
	}
	for i, l := range s.limits {
		if l.Applies(t) {
			k := l.key(t)
			c.running[i][k]++
			if l.Rate > 0 {
				l.take(k, now)
			}
		}
	}
	return true, time.Time{}
}

// claimOrder returns the ready tasks in the order a limited claim
// considers them. Each task that a PerKey limit applies to is ranked
// within its key by the stream's usual order (Priority, then when it
// became available, then enqueue order): the first of each key ranks 1,
// the second 2, and so on. The claim considers every task of rank 1
// before any of rank 2, and so on, in the usual order within a rank: it
// goes round the keys, so that no key's backlog delays another key. A task
// that no PerKey limit applies to ranks 1: it is not shared out between
// keys. s.mu must be held.
func (s *Stream) claimOrder() []*entry {
	all := make([]*entry, 0, s.ready.len())
	s.ready.each(func(e *entry) { all = append(all, e) })
	slices.SortFunc(all, func(a, b *entry) int {
		switch {
		case a.k.less(&b.k):
			return -1
		case b.k.less(&a.k):
			return 1
		}
		return 0
	})
	if !slices.ContainsFunc(s.limits, func(l *limiter) bool { return l.PerKey }) {
		return all // every task ranks 1
	}
	seen := make(map[string]int) // tasks of each key ranked so far
	var ranks [][]*entry         // ranks[r] holds the tasks of rank r+1
	for _, e := range all {
		r := 0
		if s.fair(e.t) {
			r = seen[e.t.Key]
			seen[e.t.Key]++
		}
		if r == len(ranks) {
			ranks = append(ranks, nil)
		}
		ranks[r] = append(ranks[r], e)
	}
	return slices.Concat(ranks...)
}

// fair reports whether a PerKey limit applies to t, so that its key takes
// turns with the others. s.mu must be held.
func (s *Stream) fair(t *peonify.Task) bool {
	for _, l := range s.limits {
		if l.PerKey && l.Applies(t) {
			return true
		}
	}
	return false
}

// pollLimited is Poll when limits are set: it claims up to limit ready
// tasks that every limit applying to them admits, in claimOrder, and
// leaves the others pending as they were (not an attempt, no lease). When
// a task waits for a rate token only, it arms the timer to signal Wake
// when the token is due. s.mu must be held.
func (s *Stream) pollLimited(now time.Time, limit int) []peonify.Delivery {
	c := s.newClaimState()
	deadline := now.Add(s.lease)
	var ds []peonify.Delivery
	var wakeAt time.Time
	for _, e := range s.claimOrder() {
		if len(ds) == limit {
			break
		}
		ok, due := s.admit(c, e, now)
		if ok {
			s.ready.remove(e)
			ds = append(ds, s.claim(e, now, deadline))
		} else if !due.IsZero() && (wakeAt.IsZero() || due.Before(wakeAt)) {
			wakeAt = due
		}
	}
	for _, l := range s.limits {
		l.prune(now)
	}
	s.armNext(now)
	if !wakeAt.IsZero() {
		s.arm(wakeAt, now)
	}
	return ds
}

// freesPermit reports whether e, a task that stops running, held a permit
// of a limit (or the turn of its key), so that another task may start.
// s.mu must be held.
func (s *Stream) freesPermit(e *entry) bool {
	for _, l := range s.limits {
		if l.holdsPermits() && l.Applies(e.t) {
			return true
		}
	}
	return false
}

// holdsTurn reports whether an Ordered limit applies to e, so that
// removing e (a delete or purge) may let the next task of its key start.
// s.mu must be held.
func (s *Stream) holdsTurn(e *entry) bool {
	for _, l := range s.limits {
		if l.Ordered && l.Applies(e.t) {
			return true
		}
	}
	return false
}

// LimitStats reports, for each limit in the order SetLimits was given
// them: InUse, the running tasks it applies to; Waiting, the ready tasks
// (pending and due) it applies to; and, for a PerKey limit, the
// peonify.MaxLimitStatKeys keys with the most tasks in use or waiting,
// most first, then by key. It first makes due and expired tasks ready, as
// Poll does.
func (s *Stream) LimitStats(ctx context.Context) ([]peonify.LimitStat, error) {
	if _, err := s.lockAdvancedCtx(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	stats := make([]peonify.LimitStat, len(s.limits))
	for i, l := range s.limits {
		st := &stats[i]
		st.Name = l.Name
		keys := make(map[string]*peonify.KeyStat)
		keyStat := func(k string) *peonify.KeyStat {
			ks := keys[k]
			if ks == nil {
				ks = &peonify.KeyStat{Key: k}
				keys[k] = ks
			}
			return ks
		}
		s.leased.each(func(e *entry) {
			if l.Applies(e.t) {
				st.InUse++
				if l.PerKey {
					keyStat(e.t.Key).InUse++
				}
			}
		})
		s.ready.each(func(e *entry) {
			if l.Applies(e.t) {
				st.Waiting++
				if l.PerKey {
					keyStat(e.t.Key).Waiting++
				}
			}
		})
		st.Keys = busiest(keys)
	}
	return stats, nil
}

// busiest returns the peonify.MaxLimitStatKeys keys with the most tasks
// in use or waiting, most first, then by key; nil for none.
func busiest(keys map[string]*peonify.KeyStat) []peonify.KeyStat {
	if len(keys) == 0 {
		return nil
	}
	all := make([]peonify.KeyStat, 0, len(keys))
	for _, ks := range keys {
		all = append(all, *ks)
	}
	slices.SortFunc(all, func(a, b peonify.KeyStat) int {
		if c := cmp.Compare(b.InUse+b.Waiting, a.InUse+a.Waiting); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	return slices.Clip(all[:min(len(all), peonify.MaxLimitStatKeys)])
}
