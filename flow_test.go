package peonify_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

func TestLimitValidate(t *testing.T) {
	bad := []struct {
		l    peonify.Limit
		want string
	}{
		{peonify.Limit{Type: "t"}, "limits nothing"},
		{peonify.Limit{Concurrency: -1}, "Concurrency is -1"},
		{peonify.Limit{Rate: -1}, "Rate is -1"},
		{peonify.Limit{Concurrency: 1, Burst: 3}, "without a Rate"},
		{peonify.Limit{Rate: 1, Period: -time.Second}, "Period is"},
		{peonify.Limit{Ordered: true}, "Ordered is set without PerKey"},
		{peonify.Limit{Fair: true}, "Fair is set without PerKey"},
		{peonify.Limit{PerKey: true, Ordered: true, Concurrency: 2}, "one task per key"},
		{peonify.Limit{KeyConcurrency: map[string]int{"a": 1}}, "without PerKey"},
		{peonify.Limit{PerKey: true, KeyConcurrency: map[string]int{"": 1}}, "empty key"},
		{peonify.Limit{PerKey: true, KeyConcurrency: map[string]int{"a": -1}}, "use 0 to hold"},
		{peonify.Limit{Local: true, Rate: 5}, "Local applies"},
		{peonify.Limit{Local: true, PerKey: true, Concurrency: 5}, "Local applies"},
	}
	for _, c := range bad {
		err := c.l.Validate()
		var ce *peonify.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want a ConfigError saying %q", c.l, err, c.want)
		}
	}
}

func TestLimitNormalize(t *testing.T) {
	ls, err := peonify.NormalizeLimits([]peonify.Limit{
		{Type: "email", Rate: 20},
		{Type: "email", PerKey: true, Ordered: true},
		{Concurrency: 4, Local: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if l := ls[0]; l.Name != "email" || l.Period != time.Second || l.Burst != 1 {
		t.Errorf("rate limit normalized to %+v, want name email, period 1s, burst 1", l)
	}
	if l := ls[1]; l.Name != "email/key" || l.Concurrency != 1 {
		t.Errorf("ordered limit normalized to %+v, want name email/key, concurrency 1", l)
	}
	if l := ls[2]; l.Name != "*/local" {
		t.Errorf("local limit named %q, want */local", l.Name)
	}
	_, err = peonify.NormalizeLimits([]peonify.Limit{{Type: "a", Concurrency: 1}, {Type: "a", Rate: 1}})
	if err == nil || !strings.Contains(err.Error(), "distinct Name") {
		t.Errorf("two limits named a: got %v, want an error asking for distinct names", err)
	}
}

func TestLimitApplies(t *testing.T) {
	l := peonify.Limit{Type: "t", PerKey: true, Concurrency: 1, KeyConcurrency: map[string]int{"gold": 10, "held": 0}}
	if !l.Applies(&peonify.Task{Type: "t", Key: "k"}) || l.Applies(&peonify.Task{Type: "t"}) || l.Applies(&peonify.Task{Type: "u", Key: "k"}) {
		t.Error("a PerKey limit of type t applies to keyed tasks of type t only")
	}
	for key, want := range map[string]int{"gold": 10, "held": 0, "other": 1} {
		if n, ok := l.ConcurrencyFor(key); n != want || !ok {
			t.Errorf("ConcurrencyFor(%q) = %d, %v; want %d, true", key, n, ok, want)
		}
	}
	if _, ok := (peonify.Limit{Rate: 3}).ConcurrencyFor("k"); ok {
		t.Error("a rate limit reported a concurrency limit")
	}
}

// plainStream is a Stream with no capabilities.
type plainStream struct{}

func (plainStream) Poll(context.Context, int) ([]peonify.Delivery, error)             { return nil, nil }
func (plainStream) Ack(context.Context, ...peonify.Delivery) error                    { return nil }
func (plainStream) Nack(context.Context, peonify.Delivery, peonify.NackOptions) error { return nil }
func (plainStream) Close(context.Context) error                                       { return nil }

func TestLimitsOnStreamWithoutLimiter(t *testing.T) {
	p, err := peonify.New(peonify.Config{})
	if err != nil {
		t.Fatal(err)
	}
	err = p.AddStream(plainStream{}, peonify.Limits(peonify.Limit{Concurrency: 1}))
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("AddStream with limits on a stream that cannot enforce them: got %v, want ErrUnsupported", err)
	}
	if !strings.Contains(err.Error(), "not a Limiter") {
		t.Errorf("error %q does not say why", err)
	}
}

func TestTaskKeyTooLong(t *testing.T) {
	task := &peonify.Task{Type: "t", Key: strings.Repeat("k", peonify.MaxKeyLen+1)}
	var ie *peonify.InvalidTaskError
	if err := task.Validate(); !errors.As(err, &ie) || !strings.Contains(err.Error(), "Key is longer") {
		t.Fatalf("Validate: got %v, want an InvalidTaskError about the Key", err)
	}
}
