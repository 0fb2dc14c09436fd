package amqpstream

import (
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestKeyRoundTrip checks that Task.Key travels in the peonify-key
// header, and only there: through Enqueue, a retry and a dead letter, and
// into the Inspector, whose List filters on it.
func TestKeyRoundTrip(t *testing.T) {
	s := newTestStream(t, Config{})
	ctx := streamtest.Context(t)
	keyed := &peonify.Task{Type: "t", Key: "tenant-7", Headers: map[string]string{"traceparent": "00-abc-01"}}
	if err := s.Enqueue(ctx, keyed, task("t")); err != nil {
		t.Fatal(err)
	}
	ds := pollN(t, s, 2, 10*time.Second)
	if got := ds[0].Task; got.Key != "tenant-7" || len(got.Headers) != 1 || got.Headers["traceparent"] != "00-abc-01" {
		t.Errorf("delivered Key %q and Headers %q, want tenant-7 and only the traceparent header", got.Key, got.Headers)
	}
	if ds[1].Task.Key != "" {
		t.Errorf("a task without a key was delivered with Key %q", ds[1].Task.Key)
	}
	streamtest.KeyThroughRetryAndDeath(t, s, keyed.ID, ds, func() peonify.Delivery { return pollN(t, s, 1, 10*time.Second)[0] })
}

// TestKeyFromPlainClient publishes with nothing but amqp091-go, as
// README.md shows: the peonify-key header, in any case, becomes Task.Key
// and not a task header; one longer than peonify.MaxKeyLen is ignored,
// like other malformed headers, so that the task still runs.
func TestKeyFromPlainClient(t *testing.T) {
	s := newTestStream(t, Config{})
	ctx := streamtest.Context(t)
	if err := s.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	ch := rawChannel(t)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for id, h := range map[string]amqp.Table{
		"lower": {"peonify-key": "acme", "tenant-name": "Acme"},
		"title": {"Peonify-Key": "globex", "tenant-name": "Globex"},
		"bytes": {"peonify-key": []byte("initech"), "tenant-name": "Initech"},
		"long":  {"peonify-key": strings.Repeat("k", peonify.MaxKeyLen+1), "tenant-name": "Long"},
	} {
		dc, err := ch.PublishWithDeferredConfirm("", s.Queue(), true, false, amqp.Publishing{MessageId: id, Type: "t", Headers: h})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("publish not confirmed: %v %v", ok, err)
		}
	}
	want := map[string]string{"lower": "acme", "title": "globex", "bytes": "initech", "long": ""}
	ds := pollN(t, s, 4, 10*time.Second)
	for _, d := range ds {
		if tk := d.Task; tk.Key != want[tk.ID] || len(tk.Headers) != 1 || tk.Headers["tenant-name"] == "" {
			t.Errorf("task %s: Key %q, Headers %q; want Key %q and only the tenant-name header", tk.ID, tk.Key, tk.Headers, want[tk.ID])
		}
	}
	// A retry writes the key in the stream's spelling, replacing the producer's.
	for _, d := range ds {
		if d.Task.ID != "title" {
			continue
		}
		if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeReleased}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Ack(ctx, ds...); err != nil && !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatal(err)
	}
	d := pollN(t, s, 1, 10*time.Second)[0]
	if d.Task.ID != "title" || d.Task.Key != "globex" || len(d.Task.Headers) != 1 {
		t.Errorf("released task %s came back with Key %q, Headers %q; want title, globex and one header", d.Task.ID, d.Task.Key, d.Task.Headers)
	}
	_ = s.Ack(ctx, d)
}

// TestKeyInvalid checks that Enqueue refuses a key longer than
// peonify.MaxKeyLen, and a task header that would be read as the key.
func TestKeyInvalid(t *testing.T) {
	s := newTestStream(t, Config{})
	ctx := streamtest.Context(t)
	for _, tk := range []*peonify.Task{
		{Type: "t", Key: strings.Repeat("k", peonify.MaxKeyLen+1)},
		{Type: "t", Headers: map[string]string{"Peonify-Key": "acme"}},
	} {
		err := s.Enqueue(ctx, tk)
		var inv *peonify.InvalidTaskError
		if !errors.As(err, &inv) || !strings.Contains(err.Error(), "Key") {
			t.Errorf("Enqueue(Key %.20q…, Headers %v) = %v, want an InvalidTaskError about the Key", tk.Key, tk.Headers, err)
		}
	}
}

// TestLimitsUnsupported checks that a processor refuses limits on the
// stream, which cannot enforce them (see README.md, "Flow control"),
// rather than ignore them.
func TestLimitsUnsupported(t *testing.T) {
	s := newTestStream(t, Config{})
	if _, ok := any(s).(peonify.Limiter); ok {
		t.Fatal("Stream is a peonify.Limiter, but RabbitMQ cannot enforce limits in its claim")
	}
	p, err := peonify.New(peonify.Config{Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = p.AddStream(s, peonify.Limits(peonify.Limit{Type: "t", Concurrency: 3}))
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("AddStream with limits = %v, want an error wrapping errors.ErrUnsupported", err)
	}
	if err := p.AddStream(s); err != nil {
		t.Errorf("AddStream without limits = %v, want nil", err)
	}
}

// TestHeldTasksBlockOtherKeys records why a limiter outside the claim
// cannot work on RabbitMQ (README.md, "Flow control"): tasks of one key
// held by a processor fill its prefetch, so the broker sends that
// processor no other key's task, and the held tasks are invisible to the
// other processors, which get the rest.
func TestHeldTasksBlockOtherKeys(t *testing.T) {
	s := newTestStream(t, Config{Prefetch: 2})
	ctx := streamtest.Context(t)
	if err := s.Enqueue(ctx, &peonify.Task{Type: "t", Key: "a"}, &peonify.Task{Type: "t", Key: "a"}, &peonify.Task{Type: "t", Key: "b"}); err != nil {
		t.Fatal(err)
	}
	held := pollN(t, s, 2, 10*time.Second)
	if held[0].Task.Key != "a" || held[1].Task.Key != "a" {
		t.Fatalf("claimed keys %q and %q, want key a's two tasks", held[0].Task.Key, held[1].Task.Key)
	}
	nothingFor(t, s, 100*time.Millisecond)
	other := newTestStream(t, Config{Queue: s.Queue(), Prefetch: 2}) // another processor
	if d := pollN(t, other, 1, 10*time.Second); d[0].Task.Key != "b" {
		t.Fatalf("the other processor got key %q, want b", d[0].Task.Key)
	} else if err := other.Ack(ctx, d...); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, held...); err != nil {
		t.Fatal(err)
	}
}
