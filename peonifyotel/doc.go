// Package peonifyotel traces peonify tasks with OpenTelemetry, from the
// producer that enqueues a task through every attempt to run it.
//
// On the producer side, Inject (or an Enqueuer made by WrapEnqueuer)
// writes the W3C trace context of the current span into Task.Headers
// ("traceparent", "tracestate"), which every stream stores with the task.
// On the processor side, Middleware starts a span per attempt as a child
// of that producer span, so one trace shows the request that enqueued the
// work, each attempt, and the spans the handler makes:
//
//	func run(ctx context.Context, tp trace.TracerProvider, store *memstream.Stream) error {
//		p, err := peonify.New(peonify.Config{
//			Middleware: []peonify.Middleware{peonifyotel.Middleware(tp)},
//		})
//		if err != nil {
//			return err
//		}
//		if err := p.AddTaskList(peonify.TaskList{"email": sendEmail}); err != nil {
//			return err
//		}
//		if err := p.AddStream(store); err != nil {
//			return err
//		}
//		return p.Run(ctx)
//	}
//
//	// In a request handler, within the request's span:
//	producer := peonifyotel.WrapEnqueuer(store)
//	err := producer.Enqueue(r.Context(), &peonify.Task{Type: "email", Payload: body})
//
// Producers in other languages link their traces the same way by setting
// a "traceparent" header on the task. By default the package uses the W3C
// Trace Context format whatever the global propagator is; WithPropagator
// chooses another (for example one that also carries baggage).
//
// Put the tracing middleware first in Config.Middleware so that it times
// the other middleware too.
package peonifyotel
