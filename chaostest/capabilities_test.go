//go:build unix

package chaostest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifytest"
	"github.com/peonify/peonify/streams/memstream"
)

// capabilities names the optional interfaces that s implements.
func capabilities(s peonify.Stream) []string {
	var names []string
	if _, ok := s.(peonify.Extender); ok {
		names = append(names, "Extender")
	}
	if _, ok := s.(peonify.Waker); ok {
		names = append(names, "Waker")
	}
	if _, ok := s.(peonify.Enqueuer); ok {
		names = append(names, "Enqueuer")
	}
	if _, ok := s.(peonify.Inspector); ok {
		names = append(names, "Inspector")
	}
	if _, ok := s.(peonify.PollLimiter); ok {
		names = append(names, "PollLimiter")
	}
	return names
}

// streamName names s as the processor does: its Name method, or else
// its type.
func streamName(s peonify.Stream) string {
	if n, ok := s.(interface{ Name() string }); ok {
		return n.Name()
	}
	return fmt.Sprintf("%T", s)
}

// unwrapsTo reports whether Unwrap, called once or more from w, returns s.
func unwrapsTo(w, s peonify.Stream) bool {
	for {
		u, ok := w.(interface{ Unwrap() peonify.Stream })
		if !ok {
			return false
		}
		if w = u.Unwrap(); w == s {
			return true
		}
	}
}

// TestWrappersKeepCapabilities wraps each real stream in the wrappers that
// tests put between a processor and its stream (peonifytest.FaultStream,
// Ledger.Wrap, and one in the other) and checks that the processor sees
// through each exactly the optional interfaces of the stream: none is lost
// (a PollLimiter's cap, a Waker's wake-ups) and none is added (an Extender
// or an Inspector that could only answer errors.ErrUnsupported).
func TestWrappersKeepCapabilities(t *testing.T) {
	l, _ := openTestLedger(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	streams := map[string]peonify.Stream{"memory": memstream.New(memstream.Config{Lease: time.Minute})}
	for _, b := range backends {
		spec := b.prepare(t, t.TempDir(), "")
		o, err := openStream(context.Background(), spec, "caps", logger)
		if err != nil {
			t.Fatalf("%s: %v", b.name, err)
		}
		t.Cleanup(func() {
			_ = o.s.Close(context.Background())
			o.done()
		})
		streams[b.name] = o.s
	}
	wrappers := []struct {
		name string
		wrap func(peonify.Stream) peonify.Stream
	}{
		{"FaultStream", func(s peonify.Stream) peonify.Stream { return peonifytest.NewFaultStream(s) }},
		{"Ledger.Wrap", l.Wrap},
		{"Ledger.Wrap(FaultStream)", func(s peonify.Stream) peonify.Stream { return l.Wrap(peonifytest.NewFaultStream(s)) }},
		{"FaultStream(Ledger.Wrap)", func(s peonify.Stream) peonify.Stream { return peonifytest.NewFaultStream(l.Wrap(s)) }},
	}
	for name, s := range streams {
		want := capabilities(s)
		t.Logf("%s (%T): %v", name, s, want)
		for _, w := range wrappers {
			ws := w.wrap(s)
			if got := capabilities(ws); !slices.Equal(got, want) {
				t.Errorf("%s over the %s stream implements %v, want exactly the stream's %v", w.name, name, got, want)
			}
			if !unwrapsTo(ws, s) {
				t.Errorf("Unwrap of %s over the %s stream does not lead to the stream", w.name, name)
			}
			if got, want := streamName(ws), streamName(s); got != want {
				t.Errorf("%s over the %s stream is named %q, want the stream's name %q", w.name, name, got, want)
			}
		}
	}
}
