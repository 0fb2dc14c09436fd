package periodic

import "time"

// Clock is the scheduler's source of time. Tests set Config.Clock to a
// clock they advance by hand, so that schedules run without sleeping.
type Clock interface {
	// Now returns the current time.
	Now() time.Time

	// NewTimer returns a timer that sends the time on its channel once d
	// has passed (at once if d <= 0).
	NewTimer(d time.Duration) Timer
}

// Timer is a single-shot timer made by a Clock, like *time.Timer.
type Timer interface {
	// C returns the channel on which the timer sends when it fires.
	C() <-chan time.Time

	// Stop prevents the timer from firing. It reports whether it stopped
	// the timer before it fired.
	Stop() bool
}

// systemClock is the real clock.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }
