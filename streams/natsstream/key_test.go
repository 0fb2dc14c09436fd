package natsstream

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestKeyRoundTrip checks that Task.Key travels in the peonify-key
// header, and only there: through Enqueue, a retry and a dead letter, and
// into the Inspector, whose List filters on it.
func TestKeyRoundTrip(t *testing.T) {
	js := testJS(t)
	s, _ := newTestStream(t, js, Config{})
	keyed := &peonify.Task{Type: "t", Key: "tenant-7", Headers: map[string]string{"traceparent": "00-abc-01"}}
	streamtest.Enqueue(t, s, keyed, &peonify.Task{Type: "t"})
	ds := streamtest.PollUntil(t, s, 10, 5*time.Second)
	if len(ds) != 2 {
		t.Fatalf("Poll returned %d tasks, want 2", len(ds))
	}
	if got := ds[0].Task; got.Key != "tenant-7" || len(got.Headers) != 1 || got.Headers["traceparent"] != "00-abc-01" {
		t.Errorf("delivered Key %q and Headers %q, want tenant-7 and only the traceparent header", got.Key, got.Headers)
	}
	if ds[1].Task.Key != "" {
		t.Errorf("a task without a key was delivered with Key %q", ds[1].Task.Key)
	}
	streamtest.KeyThroughRetryAndDeath(t, s, keyed.ID, ds, func() peonify.Delivery { return streamtest.PollUntil(t, s, 10, 5*time.Second)[0] })
}

// TestKeyFromPlainProducer publishes with nothing but a NATS client, as
// README.md shows: the peonify-key header, in any case, becomes
// Task.Key and not a task header; one longer than peonify.MaxKeyLen
// makes the message dead-lettered with a reason that names the header.
func TestKeyFromPlainProducer(t *testing.T) {
	js := testJS(t)
	s, cfg := newTestStream(t, js, Config{})
	ctx := streamtest.Context(t)
	publish := func(id, keyHeader, key string) {
		t.Helper()
		m := nats.NewMsg(cfg.Subject)
		m.Header.Set("Peonify-Type", "t")
		m.Header.Set("Nats-Msg-Id", id)
		m.Header.Set(keyHeader, key)
		m.Header.Set("Tenant-Name", "Acme")
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	publish("lower", "peonify-key", "acme")
	publish("title", "Peonify-Key", "globex")
	publish("long", "peonify-key", strings.Repeat("k", peonify.MaxKeyLen+1))
	want := map[string]string{"lower": "acme", "title": "globex"}
	deadline := time.Now().Add(5 * time.Second)
	for len(want) > 0 && time.Now().Before(deadline) {
		ds, err := s.Poll(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			tk := d.Task
			if k, ok := want[tk.ID]; !ok || tk.Key != k || len(tk.Headers) != 1 || tk.Headers["Tenant-Name"] != "Acme" {
				t.Errorf("task %s: Key %q, Headers %q; want Key %q and only the Tenant-Name header", tk.ID, tk.Key, tk.Headers, k)
			}
			delete(want, tk.ID)
		}
		if err := s.Ack(ctx, ds...); err != nil {
			t.Fatal(err)
		}
	}
	if len(want) > 0 {
		t.Fatalf("tasks %v were not delivered", want)
	}
	streamtest.WaitFor(t, 5*time.Second, "the task with a long key to be dead-lettered", func() bool {
		info, err := s.Get(ctx, "long")
		return err == nil && info.State == peonify.StateDead && strings.Contains(info.LastError, HeaderKey)
	})
}

// TestKeyInvalid checks that Enqueue refuses a key NATS cannot carry, or
// one longer than peonify.MaxKeyLen, with a clear error, storing nothing.
func TestKeyInvalid(t *testing.T) {
	s, _ := newTestStream(t, testJS(t), Config{})
	ctx := streamtest.Context(t)
	for _, key := range []string{strings.Repeat("k", peonify.MaxKeyLen+1), "two\nlines", " padded"} {
		err := s.Enqueue(ctx, &peonify.Task{Type: "t", Key: key})
		var inv *peonify.InvalidTaskError
		if !errors.As(err, &inv) || !strings.Contains(err.Error(), "Key") {
			t.Errorf("Enqueue with Key %.20q… = %v, want an InvalidTaskError about the Key", key, err)
		}
	}
	if ds, err := s.Poll(ctx, 10); err != nil || len(ds) != 0 {
		t.Errorf("Poll = %d tasks, %v; want nothing stored", len(ds), err)
	}
}

// TestLimitsUnsupported checks that a processor refuses limits on the
// stream, which cannot enforce them (see README.md, "Flow control"),
// rather than ignore them.
func TestLimitsUnsupported(t *testing.T) {
	s, _ := newTestStream(t, testJS(t), Config{})
	if _, ok := any(s).(peonify.Limiter); ok {
		t.Fatal("Stream is a peonify.Limiter, but JetStream cannot enforce limits in its claim")
	}
	p, err := peonify.New(peonify.Config{Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = p.AddStream(s, peonify.Limits(peonify.Limit{Type: "t", PerKey: true, Concurrency: 1}))
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("AddStream with limits = %v, want an error wrapping errors.ErrUnsupported", err)
	}
	if err := p.AddStream(s); err != nil {
		t.Errorf("AddStream without limits = %v, want nil", err)
	}
}

// TestHeldTasksBlockOtherKeys records why a limiter outside the claim
// cannot work on JetStream (README.md, "Flow control"): tasks of one key
// held by a processor count against the consumer's MaxAckPending, and
// once they fill it the server delivers no other key's task to any
// processor.
func TestHeldTasksBlockOtherKeys(t *testing.T) {
	js := testJS(t)
	s, cfg := newTestStream(t, js, Config{MaxAckPending: 2})
	other, err := New(testJS(t), cfg) // another processor
	if err != nil {
		t.Fatal(err)
	}
	streamtest.CloseAtEnd(t, other)
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, &peonify.Task{Type: "t", Key: "a"}, &peonify.Task{Type: "t", Key: "a"}, &peonify.Task{Type: "t", Key: "b"})
	held := streamtest.PollUntil(t, s, 2, 5*time.Second)
	if len(held) != 2 || held[0].Task.Key != "a" || held[1].Task.Key != "a" {
		t.Fatalf("claimed %d tasks, want key a's two", len(held))
	}
	for _, p := range []*Stream{s, other} {
		if ds, err := p.Poll(ctx, 10); err != nil || len(ds) != 0 {
			t.Fatalf("Poll with key a's tasks held = %d tasks, %v; want none: they fill MaxAckPending", len(ds), err)
		}
	}
	if err := s.Ack(ctx, held...); err != nil {
		t.Fatal(err)
	}
	if d := streamtest.PollUntil(t, other, 10, 5*time.Second); len(d) != 1 || d[0].Task.Key != "b" {
		t.Fatalf("after the acks, Poll returned %d tasks, want key b's", len(d))
	}
}
