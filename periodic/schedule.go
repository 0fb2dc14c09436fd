package periodic

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// schedule yields the time slots of a job. Slots are whole seconds.
type schedule interface {
	// next returns the first slot strictly after t, or the zero time if
	// there is none within five years.
	next(t time.Time) time.Time
	// prev returns the last slot at or before t, or the zero time if there
	// is none within lookback.
	prev(t time.Time) time.Time
}

// lookback bounds the search for the previous slot of a cron schedule.
const lookback = 8 * 366 * 24 * time.Hour

// specExamples ends every spec error, so that the fix is one copy away.
const specExamples = `use a cron expression with 5 fields (minute hour day-of-month month day-of-week, e.g. "*/5 * * * *" every 5 minutes) ` +
	`or 6 with seconds first (e.g. "0 30 9 * * MON-FRI"), a descriptor ("@hourly", "@daily", "@weekly", "@monthly", "@yearly"), ` +
	`or an interval ("@every 10m"); prefix "CRON_TZ=Europe/Paris " to use a time zone`

var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// parseSpec parses a cron expression or descriptor. A spec without a
// CRON_TZ= or TZ= prefix is read in loc. now is used to check that the
// schedule fires at all.
func parseSpec(spec string, loc *time.Location, now time.Time) (schedule, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, fmt.Errorf("spec is empty")
	}
	hasTZ := strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=")
	if hasTZ && !strings.Contains(spec, " ") {
		// The cron parser slices the spec at its first space.
		return nil, fmt.Errorf("time zone prefix %q is not followed by a space and a schedule", spec)
	}
	s, err := parse(spec)
	if err != nil {
		return nil, err
	}
	switch s := s.(type) {
	case cron.ConstantDelaySchedule:
		// The parser silently rounds bad intervals up to one second; refuse
		// them instead. The spec is "[TZ=zone ]@every d".
		text := spec[strings.Index(spec, "@every")+len("@every"):]
		d, err := time.ParseDuration(strings.TrimSpace(text))
		if err != nil {
			return nil, err
		}
		if d < time.Second || d%time.Second != 0 {
			return nil, fmt.Errorf("interval %s is not a whole number of seconds of at least 1s", d)
		}
		return every{d: d}, nil
	case *cron.SpecSchedule:
		if !hasTZ {
			s.Location = loc
		}
		c := cronSchedule{s}
		if c.next(now).IsZero() {
			return nil, fmt.Errorf("schedule never fires (no matching time within five years)")
		}
		return c, nil
	}
	return nil, fmt.Errorf("unsupported schedule type %T", s)
}

// parse calls the cron parser, turning a panic on odd input into an error.
func parse(spec string) (s cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("cannot parse: %v", r)
		}
	}()
	return parser.Parse(spec)
}

// every is an "@every d" schedule. Its slots are the multiples of d since
// the Unix epoch, so that every processor computes the same slots whenever
// it started: "@every 1h" fires on the hour.
type every struct{ d time.Duration }

func (e every) prev(t time.Time) time.Time {
	sec := int64(e.d / time.Second)
	u := t.Unix()
	r := u % sec
	if r < 0 {
		r += sec
	}
	return time.Unix(u-r, 0).In(t.Location())
}

func (e every) next(t time.Time) time.Time { return e.prev(t).Add(e.d) }

// cronSchedule is a cron expression or descriptor.
type cronSchedule struct{ s *cron.SpecSchedule }

func (c cronSchedule) next(t time.Time) time.Time { return c.s.Next(t) }

// prev finds the last slot at or before t. It widens a window back from t
// until the window holds a slot, then bisects for the point after which
// the next slot is beyond t: a logarithmic number of calls to next however
// dense or sparse the schedule.
func (c cronSchedule) prev(t time.Time) time.Time {
	var lo time.Time
	for w := time.Second; ; w *= 2 {
		if w > lookback {
			return time.Time{}
		}
		if n := c.next(t.Add(-w)); !n.IsZero() && !n.After(t) {
			lo = t.Add(-w)
			break
		}
	}
	// Invariant: next(lo) <= t < next(hi).
	hi := t
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2)
		if n := c.next(mid); !n.IsZero() && !n.After(t) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return c.next(lo)
}
