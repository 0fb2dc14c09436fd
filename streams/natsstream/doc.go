// Package natsstream is Peonify's NATS JetStream stream: a durable task
// queue on a JetStream work-queue stream, shared by any number of
// processors on any number of machines.
//
// Every processor of a queue fetches from one durable pull consumer with
// explicit acknowledgements. Poll asks for exactly the processor's free
// capacity (a pull request with no wait, which the server ends within
// 10ms), never a prefetch buffer whose leases run out unseen; the
// consumer's AckWait is the lease, renewed by the in-progress
// acknowledgement (Extend). Acks are sent together and
// confirmed with one round trip per batch, and removed tasks are gone from
// the work queue.
//
// JetStream acknowledges by stream sequence, not by delivery: an ack sent
// after a delivery's AckWait ran out would acknowledge the task's next
// delivery to another processor. The stream therefore fences on the lease
// itself: Ack, Nack and Extend of a delivery whose AckWait has (nearly) run
// out are not sent, and report peonify.ErrLeaseLost. README.md explains
// what this guarantees.
//
// JetStream counts every delivery and cannot hold a message until a given
// time, so retries, releases and scheduled tasks are published anew as
// copies that carry their attempt count and last error in headers: a
// release does not count as an attempt, and a task due later waits on the
// stream's scheduled subject, where a scheduler goroutine in each processor
// defers it on the server until it is due. Dead tasks are copied, with the
// reason, to a dead-letter stream, where the Inspector lists and retries
// them.
//
// # Getting started
//
// Set up the streams and consumers once (at deployment or start-up), then
// add the stream to a processor:
//
//	nc, err := nats.Connect(os.Getenv("NATS_URL"), nats.MaxReconnects(-1))
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer nc.Close() // the connection is yours: the stream never closes it
//	js, err := jetstream.New(nc)
//	if err != nil {
//		log.Fatal(err)
//	}
//
//	cfg := natsstream.Config{Stream: "EMAILS", Subject: "tasks.emails"}
//	if err := natsstream.Setup(ctx, js, cfg); err != nil {
//		log.Fatal(err)
//	}
//	stream, err := natsstream.New(js, cfg)
//	if err != nil {
//		log.Fatal(err)
//	}
//
//	p, err := peonify.New(peonify.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddTaskList(peonify.TaskList{"email-task": EmailTask{}}); err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddStream(stream); err != nil {
//		log.Fatal(err)
//	}
//
//	// Producers, anywhere:
//	err = stream.Enqueue(ctx, &peonify.Task{Type: "email-task", Payload: []byte(`{"to":"a@example.com"}`)})
//
//	log.Fatal(p.Run(ctx)) // until ctx ends, then drains
//
// # Producers in other languages
//
// Any NATS client can enqueue: publish the payload to Config.Subject with a
// Peonify-Type header naming the task type and, for deduplication, a
// Nats-Msg-Id header with the task ID. Other headers become the task's
// headers. README.md lists every header.
//
// # Flow control
//
// Task.Key travels in the peonify-key header (HeaderKey). Limits are not
// supported: JetStream decides which message a pull request gets, so a
// limit could only be applied after the server delivered the task, with
// its AckWait running and the delivery counted, and the held message would
// count against the consumer's MaxAckPending, blocking every other key.
// The stream is therefore not a peonify.Limiter, and AddStream with
// peonify.Limits fails with an error wrapping errors.ErrUnsupported.
// Config.MaxAckPending caps the claims of every processor together (the
// whole stream: give a task type a stream of its own to cap it alone), and
// the processor's Workers caps one process; for limits per key, rates,
// ordering and fairness, forward the task type into a store that enforces
// them in its claim (see Example_flowControl and README.md).
//
// # What JetStream cannot do
//
// Tasks are delivered in the order they were stored: Task.Priority is
// carried but not honoured. Task IDs are deduplicated within
// Config.DuplicateWindow only, and Task.UniqueKey is carried but not
// enforced. A task, with its headers, must fit in the server's max_payload
// (1 MB by default).
package natsstream
