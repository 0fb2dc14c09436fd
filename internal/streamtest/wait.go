package streamtest

import (
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// SomeErrors fails the test with how many items there are and the first
// few of them, if there are any.
func SomeErrors(t testing.TB, what string, items []string) {
	t.Helper()
	if len(items) == 0 {
		return
	}
	t.Errorf("%d %s; the first: %v", len(items), what, items[:min(len(items), 5)])
}

// WaitUntil polls cond, which reads state outside the test process, until
// it reports done; if within passes first, it fails the test with the
// state cond last described.
func WaitUntil(t testing.TB, what string, within time.Duration, cond func() (done bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		done, state := cond()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting %s for %s: %s", within, what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WantEmpty fails the test unless c counts no task in any of states, or
// in any state at all when states is empty.
func WantEmpty(t testing.TB, c Counter, states ...peonify.State) {
	t.Helper()
	if len(states) == 0 {
		states = peonify.States
	}
	counts, err := c.Counts(Context(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range states {
		if counts[st] != 0 {
			t.Errorf("the stream holds %v, want no %s task", counts, st)
		}
	}
}
