package streamtest

import (
	"testing"

	"github.com/peonify/peonify"
)

// Inspecting is a stream with an Inspector.
type Inspecting interface {
	peonify.Stream
	peonify.Inspector
}

// KeyThroughRetryAndDeath checks that Task.Key survives a retry and a
// dead letter, and reaches the Inspector, whose List filters on it: for a
// broker that carries the key in a message header. ds are the deliveries
// of the task keyedID, whose Key is "tenant-7", and of a task without a
// key, in that order; next polls the retry of the first.
func KeyThroughRetryAndDeath(t *testing.T, s Inspecting, keyedID string, ds []peonify.Delivery, next func() peonify.Delivery) {
	t.Helper()
	ctx := Context(t)
	if err := s.Ack(ctx, ds[1]); err != nil {
		t.Fatal(err)
	}
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeFailed, Reason: "again"}); err != nil {
		t.Fatal(err)
	}
	d := next()
	if d.Task.Key != "tenant-7" || d.Task.Attempt != 2 {
		t.Errorf("the retry has Key %q, attempt %d; want tenant-7, 2", d.Task.Key, d.Task.Attempt)
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "no"}); err != nil {
		t.Fatal(err)
	}
	info, err := s.Get(ctx, keyedID)
	if err != nil || info.Task.Key != "tenant-7" {
		t.Errorf("Get = Key %q, %v; want tenant-7", info.Task.Key, err)
	}
	for key, want := range map[string]int{"tenant-7": 1, "tenant-8": 0, "": 1} {
		got, err := s.List(ctx, peonify.ListOptions{State: peonify.StateDead, Key: key})
		if err != nil || len(got) != want {
			t.Errorf("List(dead, Key %q) = %d tasks, %v; want %d", key, len(got), err, want)
		}
	}
}
