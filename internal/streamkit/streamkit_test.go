package streamkit

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestGroupStopEndsAndWaitsForGoroutines(t *testing.T) {
	var g Group
	ended := make(chan struct{}, 2)
	for range 2 {
		g.Go(func(ctx context.Context) {
			<-ctx.Done()
			ended <- struct{}{}
		})
	}
	if err := g.Stop(context.Background()); err != nil {
		t.Fatalf("Stop = %v, want nil", err)
	}
	if len(ended) != 2 {
		t.Fatalf("Stop returned with %d of 2 goroutines ended", len(ended))
	}
	g.Go(func(context.Context) { t.Error("Go after Stop ran its function") })
	if err := g.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop = %v, want nil", err)
	}
}

func TestGroupWaitGivesUpWithCtx(t *testing.T) {
	var g Group
	release := make(chan struct{})
	g.Go(func(context.Context) { <-release })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := g.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop with a goroutine that does not end = %v, want context.DeadlineExceeded", err)
	}
	close(release)
	if err := g.Wait(context.Background()); err != nil {
		t.Fatalf("Wait after the goroutine ended = %v, want nil", err)
	}
}

func TestGroupStopUnstarted(t *testing.T) {
	var g Group
	if err := g.Stop(context.Background()); err != nil {
		t.Fatalf("Stop of an empty group = %v, want nil", err)
	}
}

func TestCheckPoll(t *testing.T) {
	live := context.Background()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		name   string
		ctx    context.Context
		closed bool
		limit  int
		done   bool
		err    error
	}{
		{"open", live, false, 1, false, nil},
		{"closed", live, true, 1, true, peonify.ErrClosed},
		{"closed before limit and ctx", ended, true, 0, true, peonify.ErrClosed},
		{"no limit", live, false, 0, true, nil},
		{"negative limit", live, false, -1, true, nil},
		{"limit before ctx", ended, false, 0, true, nil},
		{"ctx ended", ended, false, 5, true, context.Canceled},
	} {
		done, err := CheckPoll(c.ctx, c.closed, c.limit)
		if done != c.done || !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("%s: CheckPoll = %v, %v; want %v, %v", c.name, done, err, c.done, c.err)
		}
	}
}

func TestDecodeHeaders(t *testing.T) {
	for in, want := range map[string]map[string]string{
		``:                         nil,
		`{}`:                       nil,
		`null`:                     nil,
		`{`:                        nil,
		`["a"]`:                    nil,
		`{"a":"b","c":"d"}`:        {"a": "b", "c": "d"},
		`{"n":1,"o":{"x":[1, 2]}}`: {"n": "1", "o": `{"x":[1, 2]}`},
		`{"a":null}`:               {"a": ""},
	} {
		if got := DecodeHeaders([]byte(in)); !maps.Equal(got, want) || (got == nil) != (want == nil) {
			t.Errorf("DecodeHeaders(%q) = %#v, want %#v", in, got, want)
		}
	}
}

// FuzzDecodeHeaders feeds the headers decoder what any producer could
// store (a Postgres jsonb column, a Redis stream field): it must never
// panic, and a JSON object of strings must come back as it was.
func FuzzDecodeHeaders(f *testing.F) {
	for _, seed := range []string{`{"a":"b"}`, `{"n":1,"o":{"x":[1,2]}}`, `[]`, `null`, `"s"`, `{`, ``, `{"a":null}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h := DecodeHeaders(b)
		var want map[string]string
		if json.Unmarshal(b, &want) == nil && len(want) > 0 {
			for k, v := range want {
				if h[k] != v {
					t.Fatalf("header %q = %q, want %q", k, h[k], v)
				}
			}
		}
	})
}

func TestCheckDelivery(t *testing.T) {
	if err := CheckDelivery(false, peonify.Delivery{Task: &peonify.Task{ID: "a"}}, "pkg", "Nack"); err != nil {
		t.Errorf("CheckDelivery of a delivery with a Task = %v, want nil", err)
	}
	if err := CheckDelivery(true, peonify.Delivery{}, "pkg", "Nack"); !errors.Is(err, peonify.ErrClosed) {
		t.Errorf("CheckDelivery after Close = %v, want peonify.ErrClosed", err)
	}
	err := CheckDelivery(false, peonify.Delivery{}, "pkg", "Extend")
	if err == nil || err.Error() != "pkg: Extend of a delivery without a Task" {
		t.Errorf("CheckDelivery without a Task = %v, want %q", err, "pkg: Extend of a delivery without a Task")
	}
}
