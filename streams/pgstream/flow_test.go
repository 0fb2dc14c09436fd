package pgstream

import (
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// limitedStream returns a test stream with limits set.
func limitedStream(t testing.TB, cfg Config, limits ...peonify.Limit) *Stream {
	t.Helper()
	s := newTestStream(t, testPool(t), cfg)
	if err := s.SetLimits(limits); err != nil {
		t.Fatal(err)
	}
	return s
}

// keyed returns n tasks of type typ with key.
func keyed(typ, key string, n int) []*peonify.Task {
	out := make([]*peonify.Task, n)
	for i := range out {
		out[i] = &peonify.Task{Type: typ, Key: key, Payload: []byte(fmt.Sprint(i))}
	}
	return out
}

func keysOf(ds []peonify.Delivery) []string {
	var ks []string
	for _, d := range ds {
		ks = append(ks, d.Task.Key)
	}
	sort.Strings(ks)
	return ks
}

func TestLimitPerKeyConcurrency(t *testing.T) {
	s := limitedStream(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 1})
	ctx := streamtest.Context(t)
	var tasks []*peonify.Task
	for _, k := range []string{"a", "b", "c"} {
		tasks = append(tasks, keyed("t", k, 3)...)
	}
	tasks = append(tasks, &peonify.Task{Type: "t"}, &peonify.Task{Type: "t"}) // no key: not limited
	streamtest.Enqueue(t, s, tasks...)
	ds := streamtest.Poll(t, s, 10)
	if got := keysOf(ds); !slices.Equal(got, []string{"", "", "a", "b", "c"}) {
		t.Fatalf("first poll took keys %q, want one task of each key and both unkeyed", got)
	}
	if again := streamtest.Poll(t, s, 10); len(again) != 0 {
		t.Fatalf("a poll with every key busy claimed %q", keysOf(again))
	}
	var a peonify.Delivery
	for _, d := range ds {
		if d.Task.Key == "a" {
			a = d
		}
	}
	if err := s.Ack(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitWake(t, s, time.Second)
	if got := keysOf(streamtest.Poll(t, s, 10)); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("after acking a's task, the poll took %q, want a's next", got)
	}
}
