package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// The exporter sends the span's status, attributes, events and headers,
// and tries again after a 503.
func TestOTLPExporter(t *testing.T) {
	var calls atomic.Int32
	got := make(chan *tracepb.TracesData, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get("Authorization") != "Bearer k" {
			t.Errorf("the export lacks the configured header: %v", r.Header)
		}
		body, _ := io.ReadAll(r.Body)
		var td tracepb.TracesData
		if err := proto.Unmarshal(body, &td); err != nil {
			t.Error(err)
		}
		got <- &td
	}))
	defer srv.Close()

	exp := newOTLPExporter(srv.URL+"/v1/traces", map[string]string{"Authorization": "Bearer k"}, 10*time.Second)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	_, span := tp.Tracer("test", trace.WithInstrumentationVersion("v1")).Start(context.Background(), "work",
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.Int("n", 3), attribute.StringSlice("tags", []string{"a", "b"})))
	span.RecordError(errors.New("boom"))
	span.SetStatus(codes.Error, "boom")
	span.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	td := <-got
	if calls.Load() != 2 {
		t.Errorf("%d requests, want 2: the 503 tried again", calls.Load())
	}
	ss := td.ResourceSpans[0].ScopeSpans[0]
	if ss.Scope.Name != "test" || ss.Scope.Version != "v1" {
		t.Errorf("scope %v", ss.Scope)
	}
	s := ss.Spans[0]
	if s.Name != "work" || s.Kind != tracepb.Span_SPAN_KIND_CLIENT || s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR ||
		s.Status.GetMessage() != "boom" || len(s.Events) != 1 || s.Events[0].Name != "exception" || len(s.ParentSpanId) != 0 {
		t.Errorf("span %v", s)
	}
	attrs := map[string]*commonpb.AnyValue{}
	for _, kv := range s.Attributes {
		attrs[kv.Key] = kv.Value
	}
	if attrs["n"].GetIntValue() != 3 || len(attrs["tags"].GetArrayValue().GetValues()) != 2 {
		t.Errorf("attributes %v", s.Attributes)
	}
}
