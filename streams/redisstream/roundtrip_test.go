package redisstream

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/streamtest"
	"github.com/redis/go-redis/v9"
)

// tripCounter is a go-redis hook that counts round trips: each command
// sent alone, and each pipeline.
type tripCounter struct{ n atomic.Int64 }

func (h *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// TestPollAndAckRoundTrips counts the round trips of poll and ack cycles
// on a backlog: one for each Poll and one for each Ack, also when the poll
// takes back this consumer's own entries and looks for expired leases
// (every poll here, with a RescueInterval of 1ms). Over a link with 50ms of
// latency each round trip costs 100ms, so that a poll that took four (own
// entries, the limit index, expired leases, new entries) made the stream
// several times slower than the others. The tasks come in order, once
// each, and the expired lease of another consumer is taken over in the
// same round trip as the new entries.
func TestPollAndAckRoundTrips(t *testing.T) {
	ctx := streamtest.Context(t)
	c := testClient(t)
	prefix := uniquePrefix(t, c)
	const lease = 300 * time.Millisecond
	other := newTestStream(t, testClient(t), Config{Prefix: prefix, Consumer: "other", Lease: lease})
	for _, rescue := range []time.Duration{time.Millisecond, time.Hour} {
		h := &tripCounter{}
		counted := testClient(t)
		counted.AddHook(h)
		s := newTestStream(t, counted, Config{Prefix: prefix, Consumer: "counted", Lease: lease, RescueInterval: rescue})
		var ids []string
		for range 40 {
			tk := task("t")
			streamtest.Enqueue(t, other, tk)
			ids = append(ids, tk.ID)
		}
		// The first poll tidies the group and reads this consumer's own
		// entries (none): it is not counted.
		ds := streamtest.Poll(t, s, 1)
		got := []string{ds[0].Task.ID}
		if err := s.Ack(ctx, ds...); err != nil {
			t.Fatal(err)
		}
		// Another consumer claims the next two and dies holding them.
		abandoned := streamtest.Poll(t, other, 2)
		if len(abandoned) != 2 {
			t.Fatalf("the other consumer polled %d tasks; want 2", len(abandoned))
		}
		time.Sleep(lease + 50*time.Millisecond) // their leases end
		for len(got) < len(ids) {
			before := h.n.Load()
			ds, err := s.Poll(ctx, 5)
			if err != nil {
				t.Fatal(err)
			}
			polled := h.n.Load()
			if len(ds) == 0 {
				break
			}
			if err := s.Ack(ctx, ds...); err != nil {
				t.Fatal(err)
			}
			acked := h.n.Load()
			if n := polled - before; n != 1 {
				t.Errorf("RescueInterval %s: a Poll of %d tasks took %d round trips; want 1", rescue, len(ds), n)
			}
			if n := acked - polled; n != 1 {
				t.Errorf("RescueInterval %s: an Ack of %d tasks took %d round trips; want 1", rescue, len(ds), n)
			}
			for _, d := range ds {
				got = append(got, d.Task.ID)
			}
		}
		// With a look for expired leases, the abandoned tasks come in the
		// first counted poll, before the new ones: every task in order.
		want := ids
		if rescue == time.Hour {
			// Without, they stay with the other consumer.
			want = append(ids[:1:1], ids[3:]...)
			if err := other.Ack(ctx, abandoned...); err != nil {
				t.Fatal(err)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("RescueInterval %s: got %d tasks; want %d", rescue, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("RescueInterval %s: task %d is %s; want %s (order %v)", rescue, i, got[i], want[i], got)
			}
		}
		if ds := streamtest.Poll(t, s, 10); len(ds) != 0 {
			t.Errorf("RescueInterval %s: %d tasks left after every task was acked", rescue, len(ds))
		}
	}
}
