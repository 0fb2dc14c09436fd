package intake

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A task stored before counts as stored, and dup says so.
func TestEnqueueDuplicateCountsAsStored(t *testing.T) {
	store := intaketest.NewMem(t)
	a := &peonify.Task{ID: "a", Type: "t"}
	if dup, err := Enqueue(context.Background(), store, time.Second, a); dup != nil || err != nil {
		t.Fatalf("first Enqueue: %v, %v; want nil, nil", dup, err)
	}
	dup, err := Enqueue(context.Background(), store, time.Second, a, &peonify.Task{ID: "b", Type: "t"})
	var de *peonify.DuplicateError
	if err != nil || !errors.As(dup, &de) || len(de.IDs) != 1 || de.IDs[0] != "a" {
		t.Fatalf("second Enqueue: %v, %v; want a DuplicateError of [a], nil", dup, err)
	}
	if _, err := Enqueue(context.Background(), store, time.Second, &peonify.Task{ID: "c"}); err == nil {
		t.Fatal("an invalid task was stored")
	}
}

// The timeout bounds the store's call.
func TestEnqueueTimeout(t *testing.T) {
	stalled := enqueuerFunc(func(ctx context.Context, _ ...*peonify.Task) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if _, err := Enqueue(context.Background(), stalled, 10*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the deadline's", err)
	}
}

type enqueuerFunc func(context.Context, ...*peonify.Task) error

func (f enqueuerFunc) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	return f(ctx, tasks...)
}
