package peonifyotel

import (
	"context"
	"errors"
	"strings"

	"github.com/peonify/peonify"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the spans this package makes.
const ScopeName = "github.com/peonify/peonify/peonifyotel"

// Attribute keys set on task spans, besides the OpenTelemetry messaging
// conventions (messaging.system "peonify", messaging.operation.type
// "process", messaging.message.id the task ID).
const (
	TaskTypeKey    = attribute.Key("peonify.task.type")
	TaskAttemptKey = attribute.Key("peonify.task.attempt")

	// CancelCauseKey is set on a failed attempt whose context was
	// cancelled, to why: the task timed out, its lease was lost, or the
	// processor shut down (peonify.ErrTaskTimeout, ErrLeaseLost,
	// ErrShutdown).
	CancelCauseKey = attribute.Key("peonify.task.cancel_cause")
)

// Option configures Middleware, Inject and WrapEnqueuer.
type Option func(*options)

type options struct {
	prop propagation.TextMapPropagator
}

// WithPropagator sets how trace context is written to and read from task
// headers. Defaults to propagation.TraceContext{}, the W3C traceparent and
// tracestate headers, so that propagation works even when the program
// never set a global propagator. Pass otel.GetTextMapPropagator() to use
// the global one (for example to carry baggage too). Producers and
// processors must agree. A nil propagator means the default.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(o *options) { o.prop = p }
}

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.prop == nil {
		o.prop = propagation.TraceContext{}
	}
	return o
}

// Middleware returns a peonify.Middleware that runs each task attempt in
// a span of kind consumer named "peonify.task <type>". When the task's
// headers carry trace context (see Inject), the span is a child of the
// producer's span, so a trace follows the work from the request that
// enqueued it through every attempt; otherwise the span starts a new trace.
// The handler's ctx holds the span, so spans it starts are its children.
//
// The span records the task type, ID and attempt. When the handler
// returns an error the span records it and has status Error (and
// CancelCauseKey if the task's context had been cancelled); a successful
// attempt leaves the status unset, as OpenTelemetry recommends for
// instrumentation libraries. A handler that panics ends its span with
// status Error before the processor recovers the panic.
//
// A nil tp means otel.GetTracerProvider().
func Middleware(tp trace.TracerProvider, opts ...Option) peonify.Middleware {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	o := newOptions(opts)
	tracer := tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL))
	return func(next peonify.Handler) peonify.Handler {
		return peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			// The processor's context may carry a span (from the caller of
			// Run): a task is a child of its producer's span only, and a
			// task without trace context starts a new trace.
			ctx = trace.ContextWithSpanContext(ctx, trace.SpanContext{})
			ctx = o.prop.Extract(ctx, carrier(t.Headers))
			ctx, span := tracer.Start(ctx, "peonify.task "+t.Type,
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(
					semconv.MessagingSystemKey.String("peonify"),
					semconv.MessagingOperationTypeProcess,
					semconv.MessagingMessageID(t.ID),
					TaskTypeKey.String(t.Type),
					TaskAttemptKey.Int(t.Attempt),
				))
			returned := false
			defer func() {
				if !returned {
					span.SetStatus(codes.Error, "handler panicked")
				}
				span.End()
			}()
			err := next.Execute(ctx, t)
			returned = true
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
				if cause := context.Cause(ctx); cause != nil {
					span.SetAttributes(CancelCauseKey.String(cause.Error()))
				}
			}
			return err
		})
	}
}

// Inject writes the trace context of ctx into t.Headers (creating the map
// if t.Headers is nil), so that the processor's Middleware makes the
// task's spans children of the current span. Call it before Enqueue; it
// changes nothing when ctx holds no valid span. Inject writes into the
// task's own Headers map: do not share one map between tasks enqueued
// from different goroutines.
func Inject(ctx context.Context, t *peonify.Task, opts ...Option) {
	if t == nil {
		return
	}
	inject(ctx, t, newOptions(opts).prop)
}

func inject(ctx context.Context, t *peonify.Task, prop propagation.TextMapPropagator) {
	c := propagation.MapCarrier{}
	prop.Inject(ctx, c)
	if len(c) == 0 {
		return
	}
	if t.Headers == nil {
		t.Headers = make(map[string]string, len(c))
	}
	for k, v := range c {
		t.Headers[k] = v
	}
}

// Enqueuer is a peonify.Enqueuer that injects the trace context of each
// Enqueue call into the tasks it enqueues. Create one with WrapEnqueuer.
type Enqueuer struct {
	next peonify.Enqueuer
	prop propagation.TextMapPropagator
}

var _ peonify.Enqueuer = (*Enqueuer)(nil)

// WrapEnqueuer returns an Enqueuer that calls Inject with the ctx of each
// Enqueue on every task before passing them to e. Keep using the stream
// itself with AddStream; use the wrapper on the producer side.
func WrapEnqueuer(e peonify.Enqueuer, opts ...Option) *Enqueuer {
	return &Enqueuer{next: e, prop: newOptions(opts).prop}
}

// Enqueue injects the trace context of ctx into each task's Headers and
// enqueues the tasks with the wrapped Enqueuer. Like Inject, it writes into
// the callers' tasks.
func (e *Enqueuer) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	if e == nil || e.next == nil {
		return errors.New("peonifyotel: WrapEnqueuer was given a nil Enqueuer: pass a stream that implements peonify.Enqueuer")
	}
	for _, t := range tasks {
		if t != nil {
			inject(ctx, t, e.prop)
		}
	}
	return e.next.Enqueue(ctx, tasks...)
}

// carrier reads task headers for a propagator. Header names are matched
// exactly first, then regardless of case, since some intakes store HTTP
// headers in their canonical form ("Traceparent").
type carrier map[string]string

func (c carrier) Get(key string) string {
	if v, ok := c[key]; ok {
		return v
	}
	for k, v := range c {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

func (c carrier) Set(key, value string) { c[key] = value }

func (c carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
