package main

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"go.uber.org/goleak"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// otlpReceiver is an in-process OTLP/HTTP receiver: it decodes the
// protobuf export requests posted to /v1/traces and sends on their spans.
// It decodes them as TracesData, whose wire form is that of
// ExportTraceServiceRequest (field 1, repeated ResourceSpans, and nothing
// else): the collector package that declares the request would link gRPC
// into the tests.
func otlpReceiver(t *testing.T) (*httptest.Server, <-chan *tracepb.Span) {
	t.Helper()
	spans := make(chan *tracepb.Span, 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("the exporter posted to %s with Content-Type %q, want /v1/traces, application/x-protobuf", r.URL.Path, r.Header.Get("Content-Type"))
		}
		body, _ := io.ReadAll(r.Body)
		var req tracepb.TracesData
		if err := proto.Unmarshal(body, &req); err != nil {
			t.Errorf("the export request does not decode: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					spans <- s
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf") // an empty ExportTraceServiceResponse
	}))
	t.Cleanup(srv.Close)
	return srv, spans
}

// The daemon exports a span per attempt to the OTLP/HTTP endpoint of the
// environment, each a child of the traceparent in the task's headers, and
// the http executor sends the attempt span's traceparent to its endpoint.
// Here the endpoint fails the first attempt (500) and the retry succeeds:
// two spans, the first one an error. The spans are flushed when the
// daemon stops.
func TestDaemonTracesAttempts(t *testing.T) {
	receiver, spans := otlpReceiver(t)
	seen := make(chan string, 4)
	var requests atomic.Int32
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			w.WriteHeader(http.StatusInternalServerError) // retried
		}
		seen <- r.Header.Get("Traceparent")
	}))
	defer endpoint.Close()

	db := filepath.Join(t.TempDir(), "p.db")
	yaml := "streams:\n  - {kind: sqlite, path: " + db + "}\n" +
		"tasks:\n  hook: {executor: http, url: '" + endpoint.URL + "'}\n" +
		"processor: {poll_interval: 50ms, retry: {min_backoff: 10ms, max_backoff: 20ms}}\n"
	cfg, err := parseConfig([]byte(yaml), env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.URL, "OTEL_SERVICE_NAME": "billing-worker"}))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.tracing.on || cfg.tracing.url != receiver.URL+"/v1/traces" || cfg.tracing.serviceName != "billing-worker" {
		t.Fatalf("tracing resolved to %+v", cfg.tracing)
	}

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	s, err := sqlitestream.Open(db, sqlitestream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Enqueue(context.Background(), &peonify.Task{Type: "hook", Payload: []byte("{}"),
		Headers: map[string]string{"traceparent": "00-" + traceID + "-" + parentID + "-01"}})
	s.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	d, err := newDaemon(context.Background(), cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	var sent []string // the traceparent of each attempt's request
	for len(sent) < 2 {
		select {
		case tp := <-seen:
			sent = append(sent, tp)
		case <-time.After(10 * time.Second):
			t.Fatalf("the endpoint got %d requests, want 2: the failed attempt and its retry", len(sent))
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Flushed by the daemon's shutdown, before run returned.
	bySpanID := make(map[string]*tracepb.Span)
	for len(spans) > 0 {
		s := <-spans
		bySpanID[hex.EncodeToString(s.SpanId)] = s
	}
	if len(bySpanID) != 2 {
		t.Fatalf("the receiver got %d spans by the time the daemon stopped, want one per attempt (2)", len(bySpanID))
	}
	for i, tp := range sent {
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || parts[1] != traceID {
			t.Errorf("attempt %d: the endpoint got traceparent %q, want one in the task's trace %s", i+1, tp, traceID)
			continue
		}
		span := bySpanID[parts[2]]
		if span == nil {
			t.Errorf("attempt %d: the endpoint got traceparent %q, and no exported span has its span ID", i+1, tp)
			continue
		}
		if got := hex.EncodeToString(span.TraceId); got != traceID {
			t.Errorf("attempt %d: the span's trace ID is %s, want the task's %s", i+1, got, traceID)
		}
		if got := hex.EncodeToString(span.ParentSpanId); got != parentID {
			t.Errorf("attempt %d: the span's parent is %s, want the task's %s", i+1, got, parentID)
		}
		if span.Name != "peonify.task hook" || span.Kind != tracepb.Span_SPAN_KIND_CONSUMER {
			t.Errorf("attempt %d: the span is %q of kind %v", i+1, span.Name, span.Kind)
		}
		wantErr := i == 0 // the 500
		if gotErr := span.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR; gotErr != wantErr {
			t.Errorf("attempt %d: the span's status is %v, want an error: %v", i+1, span.GetStatus(), wantErr)
		}
	}
	endpoint.Close()
	receiver.Close()
	goleak.VerifyNone(t) // the span processor and the exporter's connections stopped
}

// The OTEL_* variables and the tracing section resolve as documented,
// and what cannot work is reported.
func TestTracingConfig(t *testing.T) {
	base := "streams:\n  - {kind: sqlite, path: p.db}\ntasks:\n  t: {executor: exec, shell: 'true'}\n"
	for _, tc := range []struct {
		name, extra string
		env         map[string]string
		on          bool
		url, err    string
	}{
		{name: "off by default"},
		{name: "traces endpoint as is", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318"},
			on: true, url: "http://c:4318/custom"},
		{name: "exporter otlp defaults to localhost", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true, url: "http://localhost:4318/v1/traces"},
		{name: "sdk disabled wins", extra: "tracing: {endpoint: 'http://c:4318'}\n", env: map[string]string{"OTEL_SDK_DISABLED": "true"}},
		{name: "file over env", extra: "tracing: {endpoint: 'https://c:4318/base/'}\n", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318"},
			on: true, url: "https://c:4318/base/v1/traces"},
		{name: "enabled false", extra: "tracing: {enabled: false}\n", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}},
		{name: "grpc refused", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, err: "OTLP over HTTP only"},
		{name: "bad sampler", extra: "tracing: {enabled: true, sampler: sometimes}\n", err: "tracing.sampler"},
		{name: "bad env ratio", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER_ARG": "2"}, err: "OTEL_TRACES_SAMPLER_ARG is 2"},
		{name: "bad endpoint", extra: "tracing: {endpoint: 'c:4318'}\n", err: "tracing.endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig([]byte(base+tc.extra), env(tc.env))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.tracing.on != tc.on || cfg.tracing.url != tc.url {
				t.Errorf("tracing = %+v, want on %v, url %q", cfg.tracing, tc.on, tc.url)
			}
		})
	}
}
