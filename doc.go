// Package peonify is a background task processor.
//
// A Processor holds a bounded local queue of tasks that this process will
// attempt, and a pool of workers that run them. Streams feed tasks in from
// any source: an embedded durable store, a database, a message broker, an
// HTTP webhook. A TaskList maps each task type to the Handler that executes
// it. Delivery is at-least-once: a task may run more than once, so handlers
// are idempotent and the task ID is the idempotency key.
//
// A minimal program, on the embedded store:
//
//	store, err := sqlitestream.Open("tasks.db", sqlitestream.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	p, err := peonify.New(peonify.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	err = p.AddTaskList(peonify.TaskList{
//		"email-task": peonify.JSON(func(ctx context.Context, e Email) error {
//			return send(ctx, e)
//		}),
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddStream(store); err != nil {
//		log.Fatal(err)
//	}
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
//	defer stop()
//	if err := p.Run(ctx); err != nil { // drains gracefully when ctx ends
//		log.Fatal(err)
//	}
//
// # Streams
//
// The Stream interface is small: Poll claims up to limit tasks, Ack completes
// them, Nack fails, releases or dead-letters one, Close ends the stream.
// Optional capabilities are extra interfaces: Extender, PollLimiter, Waker,
// Starter, Namer, Enqueuer, Inspector, Limiter, Tracker and WorkflowStore,
// found with As, which looks through wrappers. Registering a stream does no I/O: Run starts it. The peonifytest
// package is the conformance suite every stream passes.
//
// # Handlers and retries
//
// A Handler returns nil when its task is done. An error fails the attempt;
// the Config's RetryPolicy retries it with exponential backoff and jitter
// until Task.MaxAttempts or RetryPolicy.MaxAttempts, then dead-letters it.
// Wrap errors with SkipRetry to dead-letter at once, RetryAfter to choose
// the delay, or return Snooze to run later without counting the attempt.
// Panics are recovered per task and become failures.
//
// # Shutdown
//
// When Run's context ends the processor stops polling, hands back tasks
// that never started (OutcomeReleased, not counted as attempts), lets running
// tasks finish within Config.ShutdownGrace, flushes acks, closes its streams
// and returns, all within Config.ShutdownTimeout even if the store stopped
// answering: what it could not hand back returns when its lease ends. The
// library never installs signal handlers.
//
// Every call to a stream runs within Config.StoreTimeout; a Poll that
// times out is a poll error (ErrStoreTimeout) that Stats shows.
//
// # Origin
//
// Peonify began as a design written for JavaScript, which these docs call
// the seed. Where a doc comment says "the seed's X", X is that design's name
// for the concept: new Peonify() is New and the Processor, the generic task
// format is Task, a TaskImplementation with execute() is a Handler, the
// task list is TaskList, a Stream's poll() and notifyComplete() are Poll and
// Ack, and beginProcessing() is Run. The README's Concepts table maps them
// too.
package peonify
