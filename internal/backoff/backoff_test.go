package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	for n, want := range map[int]time.Duration{0: 100 * time.Millisecond, 1: 200 * time.Millisecond, 3: 800 * time.Millisecond, 10: time.Second, 1000: time.Second} {
		for range 50 {
			if d := Duration(n, 100*time.Millisecond, time.Second); d < want/2 || d > want {
				t.Fatalf("Duration(%d) = %s, want within [%s, %s]", n, d, want/2, want)
			}
		}
	}
	if d := Duration(3, 0, 0); d != 0 {
		t.Errorf("Duration with zero bounds = %s", d)
	}
}

func TestJitter(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, 0, 1, 2, 3, time.Millisecond, time.Hour} {
		lo, hi := d/2, d
		if d <= 1 {
			lo, hi = max(d, 0), max(d, 0)
		}
		for range 100 {
			if j := Jitter(d); j < lo || j > hi {
				t.Fatalf("Jitter(%s) = %s, want within [%s, %s]", d, j, lo, hi)
			}
		}
	}
}

// TestBackoffDoublesTheUnjitteredWait follows many loops through their
// failures: the k-th wait must lie in [base/2, base] with base = Min
// doubled k times, capped at Max. A loop that doubled the jittered wait
// (as natsstream's scheduler once did) drifts below that range within a
// few failures.
func TestBackoffDoublesTheUnjitteredWait(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 5 * time.Second
	for range 200 {
		b := Backoff{Min: lo, Max: hi}
		if b.Failing() {
			t.Fatal("a new Backoff reports Failing")
		}
		base := lo
		for k := range 10 {
			d := b.Next()
			if d < base/2 || d > base {
				t.Fatalf("wait %d = %s, want within [%s, %s]", k+1, d, base/2, base)
			}
			base = min(base*2, hi)
		}
		if !b.Failing() {
			t.Fatal("Failing is false after Next")
		}
		b.Reset()
		if d := b.Next(); b.Failing() != true || d < lo/2 || d > lo {
			t.Fatalf("first wait after Reset = %s, want within [%s, %s]", d, lo/2, lo)
		}
	}
}

func TestBackoffZeroBounds(t *testing.T) {
	b := Backoff{}
	if d := b.Next(); d != 0 {
		t.Errorf("Next with zero bounds = %s", d)
	}
}

func TestSleepEndsWithCtx(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep reported the full wait with a cancelled ctx")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep did not report the wait")
	}
}
