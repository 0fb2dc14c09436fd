package peonifyotel_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifyotel"
	"github.com/peonify/peonify/streams/memstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newTracing returns a tracer provider that exports every ended span to
// the returned in-memory exporter at once.
func newTracing(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// runProcessor runs a processor over store with the tracing middleware
// until n events happened, then shuts it down. runCtx is the parent of
// Run's context.
func runProcessor(t *testing.T, runCtx context.Context, tp trace.TracerProvider, store *memstream.Stream,
	tl peonify.TaskList, n int) []peonify.Event {
	t.Helper()
	events := make(chan peonify.Event, n)
	p, err := peonify.New(peonify.Config{
		Workers:    2,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Middleware: []peonify.Middleware{peonifyotel.Middleware(tp)},
		Retry:      peonify.RetryPolicy{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
		OnEvent:    func(e peonify.Event) { events <- e },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddTaskList(tl); err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(store); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(runCtx)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var got []peonify.Event
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case e := <-events:
			got = append(got, e)
		case <-timeout:
			t.Errorf("saw %d of %d events", len(got), n)
			n = 0
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	return got
}

func spansNamed(spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func attr(s tracetest.SpanStub, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// A producer's span, through Enqueue on a stream, becomes the parent of
// every attempt's span; a failed attempt records its error.
func TestProducerSpanIsParentOfEveryAttempt(t *testing.T) {
	tp, exp := newTracing(t)
	store := memstream.New(memstream.Config{})

	ctx, producer := tp.Tracer("test").Start(context.Background(), "handle signup")
	task := &peonify.Task{Type: "welcome", Payload: []byte(`{}`)}
	if err := peonifyotel.WrapEnqueuer(store).Enqueue(ctx, task); err != nil {
		t.Fatal(err)
	}
	producer.End()
	if task.Headers["traceparent"] == "" {
		t.Fatalf("Enqueue did not inject a traceparent: %v", task.Headers)
	}

	var attempts atomic.Int32
	runProcessor(t, context.Background(), tp, store, peonify.TaskList{
		"welcome": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			_, inner := tp.Tracer("test").Start(ctx, "send email")
			defer inner.End()
			if attempts.Add(1) == 1 {
				return errors.New("smtp timeout")
			}
			return nil
		}),
	}, 2)

	spans := exp.GetSpans()
	prod := spansNamed(spans, "handle signup")[0]
	runs := spansNamed(spans, "peonify.task welcome")
	if len(runs) != 2 {
		t.Fatalf("got %d task spans, want one per attempt (2): %v", len(runs), spans)
	}
	for i, s := range runs {
		if s.Parent.SpanID() != prod.SpanContext.SpanID() || s.Parent.TraceID() != prod.SpanContext.TraceID() {
			t.Errorf("attempt %d: parent %v, want the producer span %v", i+1, s.Parent, prod.SpanContext)
		}
		if !s.Parent.IsRemote() {
			t.Errorf("attempt %d: parent is not marked remote", i+1)
		}
		if s.SpanKind != trace.SpanKindConsumer {
			t.Errorf("attempt %d: kind %v, want consumer", i+1, s.SpanKind)
		}
		if got := attr(s, peonifyotel.TaskAttemptKey).AsInt64(); got != int64(i+1) {
			t.Errorf("attempt %d: %s = %d", i+1, peonifyotel.TaskAttemptKey, got)
		}
		if got := attr(s, peonifyotel.TaskTypeKey).AsString(); got != "welcome" {
			t.Errorf("attempt %d: %s = %q", i+1, peonifyotel.TaskTypeKey, got)
		}
		if got := attr(s, "messaging.message.id").AsString(); got != task.ID {
			t.Errorf("attempt %d: messaging.message.id = %q, want %q", i+1, got, task.ID)
		}
		if got := attr(s, "messaging.system").AsString(); got != "peonify" {
			t.Errorf("attempt %d: messaging.system = %q", i+1, got)
		}
	}
	failed, ok := runs[0], runs[1]
	if failed.Status.Code != codes.Error || failed.Status.Description != "smtp timeout" {
		t.Errorf("failed attempt status = %+v, want Error with the message", failed.Status)
	}
	if len(failed.Events) != 1 || failed.Events[0].Name != "exception" {
		t.Errorf("failed attempt events = %v, want the recorded error", failed.Events)
	}
	if ok.Status.Code != codes.Unset || len(ok.Events) != 0 {
		t.Errorf("successful attempt status = %+v, events %v; want unset and none", ok.Status, ok.Events)
	}

	// The handler's own spans are children of its attempt's span.
	inner := spansNamed(spans, "send email")
	if len(inner) != 2 {
		t.Fatalf("got %d handler spans, want 2", len(inner))
	}
	for i := range inner {
		if inner[i].Parent.SpanID() != runs[i].SpanContext.SpanID() {
			t.Errorf("handler span %d: parent %v, want its attempt span %v", i, inner[i].Parent, runs[i].SpanContext)
		}
	}
}

// A task without trace context starts a trace of its own, even when Run's
// context carries a span: tasks are not children of a process-long span.
func TestTaskWithoutContextStartsNewTrace(t *testing.T) {
	tp, exp := newTracing(t)
	store := memstream.New(memstream.Config{})
	if err := store.Enqueue(context.Background(), &peonify.Task{Type: "plain"}); err != nil {
		t.Fatal(err)
	}
	runCtx, runSpan := tp.Tracer("test").Start(context.Background(), "processor lifetime")
	runProcessor(t, runCtx, tp, store, peonify.TaskList{
		"plain": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil }),
	}, 1)
	runSpan.End()

	s := spansNamed(exp.GetSpans(), "peonify.task plain")
	if len(s) != 1 {
		t.Fatalf("got %d task spans, want 1", len(s))
	}
	if s[0].Parent.IsValid() {
		t.Errorf("task span has parent %v, want a root span", s[0].Parent)
	}
	if s[0].SpanContext.TraceID() == runSpan.SpanContext().TraceID() {
		t.Error("task span joined the trace of Run's context")
	}
}

// run calls the middleware around h for one task, outside a processor.
func run(tp trace.TracerProvider, ctx context.Context, task *peonify.Task, h peonify.HandlerFunc, opts ...peonifyotel.Option) error {
	return peonifyotel.Middleware(tp, opts...)(h).Execute(ctx, task)
}

// HTTP intakes may store headers in canonical form: they still link.
func TestCanonicalHeaderSpelling(t *testing.T) {
	tp, exp := newTracing(t)
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	task := &peonify.Task{ID: "x", Type: "hook", Attempt: 1,
		Headers: map[string]string{"Traceparent": "00-" + traceID + "-" + spanID + "-01"}}
	if err := run(tp, context.Background(), task, func(context.Context, *peonify.Task) error { return nil }); err != nil {
		t.Fatal(err)
	}
	s := exp.GetSpans()[0]
	if s.Parent.TraceID().String() != traceID || s.Parent.SpanID().String() != spanID {
		t.Errorf("parent = %v, want %s/%s", s.Parent, traceID, spanID)
	}
}

// A malformed traceparent is ignored: the task runs in a new trace.
func TestMalformedHeader(t *testing.T) {
	tp, exp := newTracing(t)
	task := &peonify.Task{Type: "hook", Headers: map[string]string{"traceparent": "00-not-a-trace"}}
	if err := run(tp, context.Background(), task, func(context.Context, *peonify.Task) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if s := exp.GetSpans()[0]; s.Parent.IsValid() || !s.SpanContext.IsValid() {
		t.Errorf("span %v with parent %v, want a valid root span", s.SpanContext, s.Parent)
	}
}

// A panicking handler still ends its span, with status Error, and the
// panic reaches the processor untouched.
func TestPanicEndsSpan(t *testing.T) {
	tp, exp := newTracing(t)
	var recovered any
	func() {
		defer func() { recovered = recover() }()
		_ = run(tp, context.Background(), &peonify.Task{Type: "boom"}, func(context.Context, *peonify.Task) error {
			panic("kaboom")
		})
	}()
	if recovered != "kaboom" {
		t.Errorf("recovered %v, want the handler's panic value", recovered)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Status.Code != codes.Error {
		t.Fatalf("spans = %v, want one ended span with status Error", spans)
	}
}

// A failed attempt whose context was cancelled says why.
func TestCancelCause(t *testing.T) {
	tp, exp := newTracing(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(peonify.ErrTaskTimeout)
	err := run(tp, ctx, &peonify.Task{Type: "slow"}, func(ctx context.Context, _ *peonify.Task) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	s := exp.GetSpans()[0]
	if got := attr(s, peonifyotel.CancelCauseKey).AsString(); got != peonify.ErrTaskTimeout.Error() {
		t.Errorf("%s = %q, want %q", peonifyotel.CancelCauseKey, got, peonify.ErrTaskTimeout)
	}
}

func TestInject(t *testing.T) {
	tp, _ := newTracing(t)

	// No span: nothing written, not even an empty map.
	task := &peonify.Task{Type: "a"}
	peonifyotel.Inject(context.Background(), task)
	if task.Headers != nil {
		t.Errorf("Inject without a span wrote %v", task.Headers)
	}
	peonifyotel.Inject(context.Background(), nil) // no panic

	// A span: traceparent added, other headers kept.
	ctx, span := tp.Tracer("test").Start(context.Background(), "produce")
	defer span.End()
	task = &peonify.Task{Type: "a", Headers: map[string]string{"tenant": "acme"}}
	peonifyotel.Inject(ctx, task)
	want := fmt.Sprintf("00-%s-%s-01", span.SpanContext().TraceID(), span.SpanContext().SpanID())
	if task.Headers["traceparent"] != want || task.Headers["tenant"] != "acme" {
		t.Errorf("headers = %v, want traceparent %s and tenant kept", task.Headers, want)
	}

	// Another propagator carries baggage too, end to end.
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	member, _ := baggage.NewMember("user", "ada")
	bag, _ := baggage.New(member)
	task = &peonify.Task{Type: "a"}
	peonifyotel.Inject(baggage.ContextWithBaggage(ctx, bag), task, peonifyotel.WithPropagator(prop))
	if task.Headers["baggage"] != "user=ada" {
		t.Errorf("headers = %v, want baggage user=ada", task.Headers)
	}
	var got string
	_ = run(tp, context.Background(), task, func(ctx context.Context, _ *peonify.Task) error {
		got = baggage.FromContext(ctx).Member("user").Value()
		return nil
	}, peonifyotel.WithPropagator(prop))
	if got != "ada" {
		t.Errorf("handler saw baggage user=%q, want ada", got)
	}
}

func TestWrapEnqueuerNil(t *testing.T) {
	err := peonifyotel.WrapEnqueuer(nil).Enqueue(context.Background(), &peonify.Task{Type: "a"})
	if err == nil {
		t.Error("Enqueue through a nil Enqueuer succeeded")
	}
}

// BenchmarkMiddleware measures one traced attempt: with the SDK exporting
// synchronously to memory, and with a no-op provider (the middleware's own
// cost: extracting the parent and building attributes).
func BenchmarkMiddleware(b *testing.B) {
	exp := tracetest.NewInMemoryExporter()
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = sdk.Shutdown(context.Background()) }()
	ctx, span := sdk.Tracer("bench").Start(context.Background(), "produce")
	task := &peonify.Task{ID: "id", Type: "bench", Attempt: 1}
	peonifyotel.Inject(ctx, task)
	span.End()
	for name, tp := range map[string]trace.TracerProvider{"sdk": sdk, "noop": noop.NewTracerProvider()} {
		b.Run(name, func(b *testing.B) {
			h := peonifyotel.Middleware(tp)(peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil }))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				_ = h.Execute(context.Background(), task)
				if i%1024 == 0 {
					exp.Reset()
				}
			}
		})
	}
}
