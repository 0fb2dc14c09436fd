package peonify

import (
	"math/rand/v2"
	"time"
)

// RetryPolicy decides how often and how soon a failed task is tried again.
// The zero value is the default policy.
type RetryPolicy struct {
	// MaxAttempts is how many attempts a task gets before it is dead,
	// unless Task.MaxAttempts overrides it. Defaults to 25.
	MaxAttempts int

	// MinBackoff is the delay before the second attempt. Defaults to 1s.
	MinBackoff time.Duration

	// MaxBackoff caps the delay between attempts. Defaults to 1h.
	MaxBackoff time.Duration

	// Jitter is the fraction (0 to 1) by which each delay is randomly
	// shortened or lengthened, so that tasks that failed together do not
	// retry together. Defaults to 0.2; a negative value disables jitter.
	Jitter float64
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = 25
	}
	if p.MinBackoff == 0 {
		p.MinBackoff = time.Second
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = time.Hour
	}
	if p.Jitter == 0 {
		p.Jitter = 0.2
	}
	return p // a negative Jitter stays negative: no jitter, and idempotent
}

func (p RetryPolicy) validate() error {
	switch {
	case p.MaxAttempts < 0:
		return &ConfigError{"Config.Retry.MaxAttempts", "must not be negative (0 means the default, 25)"}
	case p.MinBackoff < 0:
		return &ConfigError{"Config.Retry.MinBackoff", "must not be negative (0 means the default, 1s)"}
	case p.MaxBackoff < 0:
		return &ConfigError{"Config.Retry.MaxBackoff", "must not be negative (0 means the default, 1h)"}
	case p.Jitter > 1:
		return &ConfigError{"Config.Retry.Jitter", "must be at most 1"}
	}
	d := p.withDefaults()
	if d.MinBackoff > d.MaxBackoff {
		return &ConfigError{"Config.Retry.MinBackoff", "must not exceed MaxBackoff"}
	}
	return nil
}

// Backoff returns the delay before the attempt that follows failed attempt
// number attempt (1-based): MinBackoff doubled for each earlier attempt,
// capped at MaxBackoff, with jitter applied.
func (p RetryPolicy) Backoff(attempt int) time.Duration {
	p = p.withDefaults()
	d := p.MinBackoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	return jitter(d, p.Jitter)
}

// jitter returns d changed randomly by up to ±frac of itself.
func jitter(d time.Duration, frac float64) time.Duration {
	if frac <= 0 || d <= 0 {
		return d
	}
	return time.Duration(float64(d) * (1 + frac*(2*rand.Float64()-1)))
}
