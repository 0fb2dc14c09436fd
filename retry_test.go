package peonify_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

func TestBackoff(t *testing.T) {
	exact := peonify.RetryPolicy{MinBackoff: time.Second, MaxBackoff: time.Minute, Jitter: -1}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 7: time.Minute, 100: time.Minute} {
		if got := exact.Backoff(attempt); got != want {
			t.Errorf("Backoff(%d) without jitter = %s, want %s", attempt, got, want)
		}
	}
	jittered := peonify.RetryPolicy{MinBackoff: time.Second, MaxBackoff: time.Minute, Jitter: 0.5}
	for range 100 {
		if got := jittered.Backoff(2); got < time.Second || got > 3*time.Second {
			t.Fatalf("Backoff(2) with ±50%% jitter = %s, want within 1s..3s", got)
		}
	}
	if d := (peonify.RetryPolicy{}).Backoff(1); d < 800*time.Millisecond || d > 1200*time.Millisecond {
		t.Errorf("default first backoff = %s, want 1s ±20%%", d)
	}
}

func TestIsSnooze(t *testing.T) {
	if d, ok := peonify.IsSnooze(fmt.Errorf("wrapped: %w", peonify.Snooze(time.Minute))); !ok || d != time.Minute {
		t.Errorf("IsSnooze(wrapped Snooze(1m)) = %s, %v", d, ok)
	}
	if _, ok := peonify.IsSnooze(peonify.RetryAfter(time.Minute, errors.New("x"))); ok {
		t.Error("RetryAfter reported as a snooze")
	}
}
