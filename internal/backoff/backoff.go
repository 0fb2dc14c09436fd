// Package backoff holds the waits shared by the streams' reconnect and
// retry loops, so that every loop backs off the same way: exponentially,
// capped, with jitter against reconnect storms, and never past its ctx.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Duration returns the wait before retry number n (from 0): lo doubled n
// times, at most hi, with the upper half jittered, so that clients that
// failed together do not retry together.
func Duration(n int, lo, hi time.Duration) time.Duration {
	d := hi
	if n < 30 {
		d = min(lo<<n, hi)
	}
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(half+1)
}

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
