package executor

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/peonify/peonify"
)

// The request carries the trace context of the attempt's span, in place
// of the producer's traceparent in the task's headers; without a span the
// task's own traceparent passes through.
func TestHTTPPropagatesTheAttemptSpan(t *testing.T) {
	srv, seen := server(t, func(w http.ResponseWriter, r *http.Request) {})
	h := newHTTP(t, HTTPConfig{URL: srv.URL})
	producer := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	task := func() *peonify.Task {
		return &peonify.Task{ID: "1", Type: "t", Attempt: 1, Headers: map[string]string{"traceparent": producer}}
	}

	if err := h.Execute(context.Background(), task()); err != nil {
		t.Fatal(err)
	}
	if got := (<-seen).header.Get("Traceparent"); got != producer {
		t.Errorf("without a span, traceparent = %q, want the task's %q", got, producer)
	}

	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	if err := h.Execute(ctx, task()); err != nil {
		t.Fatal(err)
	}
	want := "00-0af7651916cd43dd8448eb211c80319c-0102030405060708-01"
	if got := (<-seen).header.Values("Traceparent"); len(got) != 1 || got[0] != want {
		t.Errorf("with the attempt's span, traceparent = %q, want [%q]", got, want)
	}
}

func TestExecPassesTheAttemptSpan(t *testing.T) {
	dir := t.TempDir()
	e, err := NewExec(ExecConfig{Shell: `printf '%s' "$TRACEPARENT" > "$PEONIFY_TASK_ID.trace"`, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	for id, ctx := range map[string]context.Context{
		"traced":   trace.ContextWithSpanContext(context.Background(), sc),
		"untraced": context.Background(),
	} {
		if err := e.Execute(ctx, &peonify.Task{ID: id, Type: "t", Attempt: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for id, want := range map[string]string{"traced": "00-0af7651916cd43dd8448eb211c80319c-0102030405060708-01", "untraced": ""} {
		got, err := os.ReadFile(filepath.Join(dir, id+".trace"))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s: TRACEPARENT = %q, want %q", id, got, want)
		}
	}
}
