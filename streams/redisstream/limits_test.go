package redisstream

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// limited returns a test stream with limits.
func limited(t testing.TB, cfg Config, limits ...peonify.Limit) *Stream {
	t.Helper()
	s := newTestStream(t, testClient(t), cfg)
	if err := s.SetLimits(limits); err != nil {
		t.Fatal(err)
	}
	return s
}

// keyed returns n tasks of type typ with key key, with IDs prefix-0...
func keyed(typ, key, prefix string, n int) []*peonify.Task {
	out := make([]*peonify.Task, n)
	for i := range out {
		out[i] = &peonify.Task{ID: fmt.Sprintf("%s-%d", prefix, i), Type: typ, Key: key, Payload: []byte(`{}`)}
	}
	return out
}

func ids(ds []peonify.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Task.ID
	}
	return out
}

func ack(t testing.TB, s *Stream, ds ...peonify.Delivery) {
	t.Helper()
	if err := s.Ack(context.Background(), ds...); err != nil {
		t.Fatal(err)
	}
}

func TestSetLimitsChecks(t *testing.T) {
	s := newTestStream(t, testClient(t), Config{})
	if err := s.SetLimits([]peonify.Limit{{Type: "a"}}); err == nil {
		t.Error("SetLimits of a limit that limits nothing returned nil")
	}
	if err := s.SetLimits([]peonify.Limit{{Concurrency: 1}, {Concurrency: 2}}); err == nil {
		t.Error("SetLimits of two limits with one name returned nil")
	}
	if err := s.SetLimits(nil); err != nil || s.lim.Load() != nil {
		t.Errorf("SetLimits(nil) = %v, limits %v", err, s.lim.Load())
	}
	if _, ok := any(s).(peonify.Limiter); !ok {
		t.Error("*Stream is not a peonify.Limiter")
	}
}

func TestKeyRoundTrip(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, &peonify.Task{ID: "k1", Type: "a", Key: "tenant-7"},
		&peonify.Task{ID: "k2", Type: "a", Key: "tenant-8", RunAt: time.Now().Add(time.Hour)})
	// A raw producer sets the key field, or the header.
	if err := c.Do(ctx, "XADD", s.Keys().Stream, "*", "id", "k3", "type", "a", "key", "tenant-9").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "XADD", s.Keys().Stream, "*", "id", "k4", "type", "a", "headers", `{"peonify-key":"tenant-10"}`).Err(); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"k1": "tenant-7", "k2": "tenant-8"} {
		info, err := s.Get(ctx, id)
		if err != nil || info.Task.Key != want {
			t.Errorf("Get(%s) = key %q, %v; want %q", id, info.Task.Key, err, want)
		}
	}
	ds := streamtest.Poll(t, s, 10)
	got := map[string]string{}
	for _, d := range ds {
		got[d.Task.ID] = d.Task.Key
	}
	want := map[string]string{"k1": "tenant-7", "k3": "tenant-9", "k4": "tenant-10"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("polled keys %v, want %v", got, want)
	}
	// A retry keeps the key.
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeFailed}); err != nil {
		t.Fatal(err)
	}
	again := streamtest.PollUntil(t, s, 1, 5*time.Second)
	if again[0].Task.Key != ds[0].Task.Key {
		t.Errorf("retried task has key %q, want %q", again[0].Task.Key, ds[0].Task.Key)
	}
}

func TestListByKey(t *testing.T) {
	s := newTestStream(t, testClient(t), Config{})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, keyed("a", "k1", "a", 3)...)
	streamtest.Enqueue(t, s, keyed("a", "k2", "b", 2)...)
	infos, err := s.List(ctx, peonify.ListOptions{State: peonify.StatePending, Key: "k2"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range infos {
		got = append(got, i.Task.ID)
	}
	if !slices.Equal(got, []string{"b-0", "b-1"}) {
		t.Errorf("List(Key k2) = %v, want [b-0 b-1]", got)
	}
}

// TestPerKeyConcurrency: a key at its limit never stops another key's
// tasks, a held task is not an attempt, and an ack frees the permit.
func TestPerKeyConcurrency(t *testing.T) {
	s := limited(t, Config{}, peonify.Limit{PerKey: true, Concurrency: 2, KeyConcurrency: map[string]int{"vip": 3, "held": 0}})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, keyed("a", "A", "a", 5)...)
	streamtest.Enqueue(t, s, keyed("a", "vip", "v", 5)...)
	streamtest.Enqueue(t, s, keyed("a", "held", "h", 2)...)
	streamtest.Enqueue(t, s, keyed("a", "", "n", 3)...)
	ds := streamtest.Poll(t, s, 100)
	got := ids(ds)
	sort.Strings(got)
	want := []string{"a-0", "a-1", "n-0", "n-1", "n-2", "v-0", "v-1", "v-2"}
	if !slices.Equal(got, want) {
		t.Fatalf("first poll %v, want %v", got, want)
	}
	if more := streamtest.Poll(t, s, 100); len(more) != 0 {
		t.Fatalf("second poll %v, want nothing: every key is at its limit", ids(more))
	}
	// A held task is not an attempt.
	info, err := s.Get(ctx, "a-2")
	if err != nil || info.State != peonify.StatePending || info.Attempts != 0 {
		t.Errorf("held task: %+v, %v; want pending with no attempt", info, err)
	}
	var a0 peonify.Delivery
	for _, d := range ds {
		if d.Task.ID == "a-0" {
			a0 = d
		}
	}
	select {
	case <-s.Wake():
	default:
	}
	ack(t, s, a0)
	select {
	case <-s.Wake():
	default:
		t.Error("an ack that freed a permit did not fire Wake")
	}
	if got := ids(streamtest.Poll(t, s, 100)); !slices.Equal(got, []string{"a-2"}) {
		t.Errorf("after an ack of a-0: %v, want [a-2]", got)
	}
}

// TestGlobalConcurrencyTwoStreams: two streams, as two processes, claim
// concurrently and never run more than the limit at once.
func TestGlobalConcurrencyTwoStreams(t *testing.T) {
	c := testClient(t)
	lim := peonify.Limit{Type: "a", Concurrency: 3}
	s1 := limited(t, Config{}, lim)
	s2 := newTestStream(t, c, Config{Prefix: s1.cfg.Prefix})
	if err := s2.SetLimits([]peonify.Limit{lim}); err != nil {
		t.Fatal(err)
	}
	const n = 60
	streamtest.Enqueue(t, s1, keyed("a", "", "a", n)...)
	streamtest.Enqueue(t, s1, keyed("b", "", "b", 10)...)
	var running, peak, done, bs atomic.Int64
	var wg sync.WaitGroup
	for _, s := range []*Stream{s1, s2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			deadline := time.Now().Add(20 * time.Second)
			for done.Load() < n && time.Now().Before(deadline) {
				ds, err := s.Poll(ctx, 2)
				if err != nil {
					t.Error(err)
					return
				}
				for _, d := range ds {
					if d.Task.Type == "b" {
						bs.Add(1)
						ack(t, s, d)
						continue
					}
					r := running.Add(1)
					for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
					}
					time.Sleep(2 * time.Millisecond)
					running.Add(-1)
					ack(t, s, d)
					done.Add(1)
				}
				if len(ds) == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if done.Load() != n || bs.Load() != 10 {
		t.Fatalf("ran %d of %d limited tasks and %d of 10 others", done.Load(), n, bs.Load())
	}
	if peak.Load() > 3 {
		t.Errorf("peak concurrency %d, limit 3", peak.Load())
	}
}
