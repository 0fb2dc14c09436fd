package peonify_test

import (
	"context"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

func TestForward(t *testing.T) {
	ctx := context.Background()
	dst := memstream.New(memstream.Config{})
	defer dst.Close(ctx)
	forward := peonify.Forward(dst)
	in := &peonify.Task{ID: "f-1", Type: "report", Key: "acme", Payload: []byte(`{"n":1}`),
		Headers: map[string]string{"h": "v"}, Priority: 3, MaxAttempts: 4, Attempt: 2, LastError: "boom"}
	for range 2 { // the second run finds the task stored: a success, not a second task
		if err := forward.Execute(ctx, in); err != nil {
			t.Fatalf("Forward: %v", err)
		}
	}
	ds, err := dst.Poll(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 {
		t.Fatalf("the destination holds %d tasks, want 1", len(ds))
	}
	got := ds[0].Task
	if got.ID != "f-1" || got.Type != "report" || got.Key != "acme" || string(got.Payload) != `{"n":1}` ||
		got.Headers["h"] != "v" || got.Priority != 3 || got.MaxAttempts != 4 {
		t.Errorf("forwarded task is %+v, want the source's fields", got)
	}
	if got.Attempt != 1 || got.LastError != "" {
		t.Errorf("forwarded task starts at attempt %d with last error %q, want a fresh attempt 1", got.Attempt, got.LastError)
	}
}
