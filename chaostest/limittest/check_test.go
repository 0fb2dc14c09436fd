package limittest

import (
	"cmp"
	"slices"
	"testing"
	"time"
)

// span is a stretch of time in which a task held a permit, or ran.
type span struct {
	start, end time.Time
	id         string
}

// maxOverlap returns the most spans that cover one instant, and the first
// instant that many did. A span that ends at the instant another starts
// does not overlap it.
func maxOverlap(spans []span) (most int, at time.Time) {
	return overlapFrom(spans, time.Time{}, -1)
}

// reached returns the first instant at or after from when at least n
// spans overlapped, and false if they never did.
func reached(spans []span, n int, from time.Time) (time.Time, bool) {
	_, at := overlapFrom(spans, from, n)
	return at, !at.IsZero()
}

// overlapFrom sweeps spans in time order. With stopAt above zero it
// returns as soon as stopAt spans overlap at or after from; otherwise it
// returns the most that ever overlapped and when first.
func overlapFrom(spans []span, from time.Time, stopAt int) (most int, at time.Time) {
	type event struct {
		t     time.Time
		delta int
	}
	events := make([]event, 0, 2*len(spans))
	for _, s := range spans {
		events = append(events, event{s.start, +1}, event{s.end, -1})
	}
	// Ends before starts at the same instant.
	slices.SortFunc(events, func(a, b event) int {
		if c := a.t.Compare(b.t); c != 0 {
			return c
		}
		return cmp.Compare(a.delta, b.delta)
	})
	n := 0
	for _, e := range events {
		n += e.delta
		if stopAt > 0 {
			if n >= stopAt && !e.t.Before(from) {
				return n, e.t
			}
			continue
		}
		if n > most {
			most, at = n, e.t
		}
	}
	if stopAt > 0 {
		return 0, time.Time{}
	}
	return most, at
}

// busiestWindow returns the most of times that fall in one window
// [t, t+width), and where that window starts.
func busiestWindow(times []time.Time, width time.Duration) (most int, from time.Time) {
	sorted := slices.Clone(times)
	slices.SortFunc(sorted, time.Time.Compare)
	j := 0
	for i, t := range sorted {
		for j < len(sorted) && sorted[j].Before(t.Add(width)) {
			j++
		}
		if j-i > most {
			most, from = j-i, t
		}
	}
	return most, from
}

func TestMaxOverlap(t *testing.T) {
	at := func(ms int) time.Time { return time.UnixMilli(int64(1_000_000 + ms)) }
	sp := func(a, b int) span { return span{start: at(a), end: at(b)} }
	for _, c := range []struct {
		name  string
		spans []span
		want  int
		when  int
	}{
		{"none", nil, 0, 0},
		{"one", []span{sp(0, 10)}, 1, 0},
		{"touching spans do not overlap", []span{sp(0, 10), sp(10, 20), sp(20, 30)}, 1, 0},
		{"three at once", []span{sp(0, 10), sp(5, 15), sp(8, 20), sp(15, 30)}, 3, 8},
		{"nested", []span{sp(0, 100), sp(10, 20), sp(30, 40), sp(35, 36)}, 3, 35},
	} {
		got, when := maxOverlap(c.spans)
		if got != c.want || (got > 0 && !when.Equal(at(c.when))) {
			t.Errorf("%s: maxOverlap = %d at %v, want %d at %v", c.name, got, when, c.want, at(c.when))
		}
	}
	spans := []span{sp(0, 10), sp(5, 15), sp(8, 20), sp(30, 40), sp(31, 41), sp(32, 42)}
	if when, ok := reached(spans, 3, at(21)); !ok || !when.Equal(at(32)) {
		t.Errorf("reached 3 after 21ms = %v, %v; want at 32ms", when, ok)
	}
	if _, ok := reached(spans, 4, at(0)); ok {
		t.Error("reached 4, which never overlapped")
	}
}

func TestBusiestWindow(t *testing.T) {
	at := func(ms int) time.Time { return time.UnixMilli(int64(1_000_000 + ms)) }
	var times []time.Time
	for _, ms := range []int{500, 0, 100, 999, 1000, 1001, 1500, 1999} {
		times = append(times, at(ms))
	}
	// [0, 1000) holds 4, [100, 1100) 5, [500, 1500) 4: the window ends
	// before 1100 and 1500, [1000, 2000) holds 4.
	if n, from := busiestWindow(times, time.Second); n != 5 || !from.Equal(at(100)) {
		t.Errorf("busiestWindow = %d from %v, want 5 from %v", n, from, at(100))
	}
	if n, _ := busiestWindow(nil, time.Second); n != 0 {
		t.Errorf("busiestWindow(nil) = %d", n)
	}
}
