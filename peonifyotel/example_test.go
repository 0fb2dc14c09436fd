package peonifyotel_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifyotel"
	"github.com/peonify/peonify/streams/memstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// The span of the request that enqueued a task is the parent of the
// task's span, across the stream.
func Example() {
	exporter := tracetest.NewInMemoryExporter() // in a program: an OTLP exporter
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	defer tp.Shutdown(context.Background())

	// Producer: enqueue within a span.
	store := memstream.New(memstream.Config{})
	ctx, span := tp.Tracer("shop").Start(context.Background(), "POST /orders")
	_ = peonifyotel.WrapEnqueuer(store).Enqueue(ctx, &peonify.Task{Type: "invoice"})
	span.End()

	// Processor: the middleware traces each attempt.
	done := make(chan struct{})
	p, _ := peonify.New(peonify.Config{
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Middleware: []peonify.Middleware{peonifyotel.Middleware(tp)},
		OnEvent:    func(peonify.Event) { close(done) },
	})
	_ = p.AddTaskList(peonify.TaskList{
		"invoice": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error { return nil }),
	})
	_ = p.AddStream(store)
	runCtx, cancel := context.WithCancel(context.Background())
	go func() { <-done; cancel() }()
	_ = p.Run(runCtx)

	spans := exporter.GetSpans()
	request, task := spans[0], spans[1]
	fmt.Println(request.Name)
	fmt.Println(task.Name, task.SpanKind)
	fmt.Println("same trace:", task.SpanContext.TraceID() == request.SpanContext.TraceID())
	fmt.Println("child of the request:", task.Parent.SpanID() == request.SpanContext.SpanID())
	// Output:
	// POST /orders
	// peonify.task invoice consumer
	// same trace: true
	// child of the request: true
}

// Inject writes the current span's trace context into a task's headers,
// for code that calls Enqueue itself.
func ExampleInject() {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("shop").Start(context.Background(), "POST /orders")
	defer span.End()

	t := &peonify.Task{Type: "invoice"}
	peonifyotel.Inject(ctx, t)
	fmt.Println(t.Headers["traceparent"] == fmt.Sprintf("00-%s-%s-01", span.SpanContext().TraceID(), span.SpanContext().SpanID()))
	// Output:
	// true
}
