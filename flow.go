package peonify

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// KeyHeader is the header a producer that cannot set Task.Key directly (a
// raw publish to a broker) sets instead: a stream that reads a task from a
// message with this header and no key of its own takes the key from it.
const KeyHeader = "peonify-key"

// MaxKeyLen is the longest Task.Key, in bytes.
const MaxKeyLen = 255

// Limit bounds how the tasks it applies to start, across every processor
// that claims from the same store: how many run at once (Concurrency),
// how many start per period (Rate), and whether each key runs its tasks
// one at a time in enqueue order (Ordered). A limit is enforced by the
// store, inside the claim (see Limiter), so a task held back by a limit is
// never claimed: it is not an attempt, holds no lease, and costs nothing
// while it waits. A task starts only when every limit that applies to it
// admits it.
//
// A limit applies to the tasks of Type (every type when Type is empty).
// With PerKey it applies to each Task.Key separately, and only to tasks
// that have a key: a tenant's tasks are limited without holding back
// another tenant's, and tasks with no key are not limited by it.
//
// Every processor sharing a store must give it the same limits: each
// claim enforces the limits of the processor that makes it.
type Limit struct {
	// Name identifies the limit in stats, metrics and the dashboard.
	// Defaults to Type ("*" when Type is empty), followed by "/key" for a
	// PerKey limit and "/local" for a Local one. Names are unique among a
	// stream's limits.
	Name string

	// Type is the task type the limit applies to; empty means every type.
	Type string

	// PerKey applies the limit to each Task.Key on its own, and only to
	// tasks with a non-empty key.
	PerKey bool

	// Concurrency is the most tasks the limit applies to (per key, with
	// PerKey) that run at once. 0 means no concurrency limit.
	Concurrency int

	// KeyConcurrency sets Concurrency for named keys of a PerKey limit: a
	// paying tenant gets 10 where the others get 1. A key listed with 0
	// runs nothing until the limit changes (a tenant put on hold).
	KeyConcurrency map[string]int

	// Rate is the most tasks that start per Period (per key, with PerKey).
	// It is a token bucket: tokens accrue evenly, Rate per Period, up to
	// Burst, and each start takes one, so no Period holds more than
	// Rate+Burst starts, and a long run averages Rate per Period. 0 means
	// no rate limit.
	Rate int

	// Period is the period of Rate. Defaults to one second.
	Period time.Duration

	// Burst is the most starts the bucket allows at once after a quiet
	// spell. Defaults to 1: starts evenly spaced.
	Burst int

	// Ordered runs each key's tasks one at a time, in the order the store
	// received them (PerKey only; it implies Concurrency 1). A task that
	// fails keeps its place: the key waits for its retry. A task that goes
	// dead, or is deleted, releases the key to the next. An operator
	// unblocks a key held by a long-failing task by deleting it or moving
	// it to dead (see Inspector and `peonify tasks`).
	Ordered bool

	// Fair shares capacity between the keys of a PerKey limit round-robin:
	// a claim takes the longest-waiting ready task of each key before the
	// second of any key, so one key's 100,000 queued tasks do not delay
	// another key's 10. Every PerKey limit is fair in this way; Fair lets
	// a PerKey limit do only that, with no Concurrency or Rate.
	Fair bool

	// Local makes a Concurrency limit count only this stream's own claims
	// (those of one processor) instead of every processor's. A Local limit
	// has a Concurrency and nothing else, and is not PerKey.
	Local bool
}

// Validate reports what is wrong with l, if anything.
func (l Limit) Validate() error {
	bad := func(format string, a ...any) error {
		return &ConfigError{Field: "Limit " + l.displayName(), Reason: fmt.Sprintf(format, a...)}
	}
	switch {
	case len(l.Type) > MaxTypeLen:
		return bad("Type is longer than %d bytes", MaxTypeLen)
	case l.Concurrency < 0:
		return bad("Concurrency is %d: use a positive number, or 0 for no concurrency limit", l.Concurrency)
	case l.Rate < 0:
		return bad("Rate is %d: use a positive number of starts per Period, or 0 for no rate limit", l.Rate)
	case l.Period < 0:
		return bad("Period is %s: use a positive duration, or 0 for one second", l.Period)
	case l.Burst < 0:
		return bad("Burst is %d: use a positive number, or 0 for 1", l.Burst)
	case (l.Period > 0 || l.Burst > 0) && l.Rate == 0:
		return bad("Period or Burst is set without a Rate: set Rate, the most starts per Period")
	case l.Concurrency == 0 && l.Rate == 0 && !l.Ordered && !l.Fair && len(l.KeyConcurrency) == 0:
		return bad("limits nothing: set Concurrency, Rate, Ordered or Fair")
	case l.Fair && !l.PerKey:
		return bad("Fair is set without PerKey: fairness is between keys, so set PerKey")
	case len(l.KeyConcurrency) > 0 && !l.PerKey:
		return bad("KeyConcurrency is set without PerKey: set PerKey to limit each key")
	case l.Ordered && !l.PerKey:
		return bad("Ordered is set without PerKey: ordering is per key, so set PerKey")
	case l.Ordered && (l.Concurrency > 1 || len(l.KeyConcurrency) > 0):
		return bad("Ordered runs one task per key at a time: drop Concurrency and KeyConcurrency")
	case l.Local && (l.Rate > 0 || l.Ordered || l.Fair || l.PerKey):
		return bad("Local applies to a Concurrency per Type only: rates, orders and keys are kept across processors")
	}
	for k, n := range l.KeyConcurrency {
		switch {
		case k == "":
			return bad("KeyConcurrency has an empty key: tasks without a key are not limited per key")
		case len(k) > MaxKeyLen:
			return bad("KeyConcurrency key %.32q… is longer than %d bytes", k, MaxKeyLen)
		case n < 0:
			return bad("KeyConcurrency[%q] is %d: use 0 to hold the key, or a positive limit", k, n)
		}
	}
	return nil
}

// Normalize checks l and returns it with its defaults filled in: Name,
// Period and Burst, and Concurrency 1 for an Ordered limit.
func (l Limit) Normalize() (Limit, error) {
	if err := l.Validate(); err != nil {
		return l, err
	}
	l.Name = l.displayName()
	if l.Rate > 0 {
		if l.Period == 0 {
			l.Period = time.Second
		}
		if l.Burst == 0 {
			l.Burst = 1
		}
	}
	if l.Ordered {
		l.Concurrency = 1
	}
	return l, nil
}

func (l Limit) displayName() string {
	if l.Name != "" {
		return l.Name
	}
	n := l.Type
	if n == "" {
		n = "*"
	}
	if l.PerKey {
		n += "/key"
	}
	if l.Local {
		n += "/local"
	}
	return n
}

// Applies reports whether l applies to t: t is of l's Type (or l has
// none), and t has a key if l is PerKey.
func (l Limit) Applies(t *Task) bool {
	return (l.Type == "" || l.Type == t.Type) && (!l.PerKey || t.Key != "")
}

// ConcurrencyFor returns the concurrency limit for key: KeyConcurrency's
// entry if there is one, else Concurrency. 0 with ok false means no
// concurrency limit.
func (l Limit) ConcurrencyFor(key string) (n int, ok bool) {
	if n, ok := l.KeyConcurrency[key]; ok && l.PerKey {
		return n, true
	}
	return l.Concurrency, l.Concurrency > 0
}

// NormalizeLimits normalizes each limit (see Limit.Normalize) and checks
// that their names are unique. Limiter implementations call it from
// SetLimits.
func NormalizeLimits(limits []Limit) ([]Limit, error) {
	out := make([]Limit, 0, len(limits))
	for _, l := range limits {
		n, err := l.Normalize()
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(out, func(o Limit) bool { return o.Name == n.Name }) {
			return nil, &ConfigError{Field: "Limit " + n.Name, Reason: "two limits have this name: give each a distinct Name"}
		}
		out = append(out, n)
	}
	return out, nil
}

// Limiter is implemented by streams that enforce Limits in their claims.
// The processor passes the limits given to AddStream with Limits; a stream
// without this capability cannot enforce them, and AddStream reports it.
type Limiter interface {
	// SetLimits replaces the limits the stream's claims enforce. It
	// checks them with NormalizeLimits and does no I/O; the processor
	// calls it before the stream is started.
	SetLimits(limits []Limit) error

	// LimitStats reports, for each limit in the order SetLimits was
	// given them, how many tasks it holds running and how many wait.
	LimitStats(ctx context.Context) ([]LimitStat, error)
}

// LimitStat is what a Limiter reports about one limit.
type LimitStat struct {
	// Name is the limit's Name.
	Name string

	// InUse is how many running tasks count against the limit (every key's,
	// for a PerKey limit; this stream's own, for a Local one).
	InUse int

	// Waiting is how many ready tasks the limit applies to have not
	// started yet.
	Waiting int

	// Keys lists the busiest keys of a PerKey limit, at most
	// MaxLimitStatKeys, most tasks in use or waiting first.
	Keys []KeyStat
}

// KeyStat is one key's use of a PerKey limit.
type KeyStat struct {
	Key     string
	InUse   int
	Waiting int
}

// MaxLimitStatKeys is the most keys a LimitStat lists.
const MaxLimitStatKeys = 10

// Limits gives a stream limits to enforce in its claims (see Limit). The
// stream must be a Limiter (found through wrappers with As); AddStream
// returns an error wrapping errors.ErrUnsupported if it is not, so that a
// limit is never silently ignored.
func Limits(limits ...Limit) StreamOption {
	return func(o *streamOptions) { o.limits = append(o.limits, limits...) }
}
