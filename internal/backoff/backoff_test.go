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
