// Package backoff holds the waits shared by the streams' reconnect and
// retry loops, so that every loop backs off the same way: exponentially,
// capped, with jitter against reconnect storms, and never past its ctx.
//
// Every wait is jittered the same way (Jitter: uniformly between half the
// wait and all of it), and the next wait doubles the un-jittered one, so
// that jitter never compounds from one failure to the next.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Jitter returns a random duration between d/2 and d, so that clients
// that failed together do not retry together. It returns d itself when d
// is at most one nanosecond.
func Jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return max(d, 0)
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Duration returns the wait before retry number n (from 0): lo doubled n
// times, at most hi, jittered.
func Duration(n int, lo, hi time.Duration) time.Duration {
	d := hi
	if n < 30 {
		d = min(lo<<n, hi)
	}
	return Jitter(d)
}

// Backoff is the state of a retry loop that counts its own failures. The
// zero value with Min and Max set is ready to use; it is not safe for
// concurrent use.
type Backoff struct {
	Min time.Duration // the first wait, before jitter
	Max time.Duration // the cap of a wait, before jitter

	base time.Duration // the last wait before jitter; 0 after Reset
}

// Next returns the wait after one more failure: Min after the first
// failure, doubling after each further one up to Max, jittered. The
// doubling is of the un-jittered wait.
func (b *Backoff) Next() time.Duration {
	if b.base <= 0 {
		b.base = b.Min
	} else {
		b.base = min(b.base*2, b.Max)
	}
	b.base = max(min(b.base, b.Max), 0)
	return Jitter(b.base)
}

// Failing reports whether Next was called since the last Reset: the loop
// is backing off.
func (b *Backoff) Failing() bool { return b.base > 0 }

// Reset starts over after a success: the next wait is Min again.
func (b *Backoff) Reset() { b.base = 0 }

// Sleep waits for d or until ctx ends, and reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
