// Package amqpstream is Peonify's RabbitMQ stream: a durable work queue on
// an AMQP 0-9-1 broker, shared by any number of processors on any number of
// machines, and fed by Peonify's Enqueue or by any AMQP client (see
// README.md for the message format).
//
// # Getting started
//
//	stream, err := amqpstream.New("amqp://guest:guest@localhost:5672/", amqpstream.Config{Queue: "emails"})
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
//	if err := p.AddStream(stream); err != nil { // the processor closes it
//		log.Fatal(err)
//	}
//
//	// Producers, anywhere:
//	err = stream.Enqueue(ctx, &peonify.Task{Type: "email-task", Payload: []byte(`{"to":"a@example.com"}`)})
//
//	log.Fatal(p.Run(ctx)) // until ctx ends, then drains
//
// # Why a URL and not an *amqp.Connection
//
// Peonify's streams usually take the caller's client. An AMQP connection,
// though, dies with the broker or the network, and neither it nor its
// channels come back: amqp091-go leaves reconnecting to the application.
// A stream that must outlive a broker restart has to open connections
// itself, so New takes the broker's address, and Config.AMQP the settings
// of the connections (TLS, heartbeat, SASL, a custom dialer). The stream
// owns them and closes them in Close.
//
// It reconnects by itself: when the connection or its consuming channel
// fails, or the broker cancels its consumer, the stream waits (from
// Config.ReconnectMin, doubling up to ReconnectMax, randomly shortened by
// up to half so that a fleet does not reconnect in step), dials again,
// declares its queues, sets its prefetch again and resumes consuming, then
// wakes the processor. A publishing channel that the broker closes (for a
// message it refuses) is simply opened again. The client's own,
// experimental, recovery is not used: a recovered channel numbers its
// deliveries from 1 again, so a stale ack could settle the wrong message.
//
// A connection that dies without a reset (a middlebox that dropped its
// state) is noticed by its heartbeats: when the broker's frames stop for
// about three heartbeat intervals (Config.AMQP.Heartbeat, 10s by default)
// the connection fails, Poll reports it, and the stream reconnects as
// above. A shorter heartbeat notices sooner.
//
// # Queues
//
// For Config.Queue "emails" the stream declares, all durable:
//
//	emails              the work queue: producers publish here, processors consume
//	emails.dead         dead-lettered tasks, kept for Config.KeepDead (7 days)
//	emails.delay.<ms>   delay queues, declared when first needed
//
// Messages are persistent and published with publisher confirms and the
// mandatory flag: Enqueue returns once the broker has stored every task.
// Set Config.Quorum for replicated quorum queues, or Config.MaxPriority for
// a priority queue.
//
// # Acknowledgements, prefetch and fencing
//
// The stream consumes with manual acknowledgements. The broker pushes
// messages up to the consumer's prefetch count; Poll hands out at most the
// number asked for. Unless Config.Prefetch fixes it, the prefetch count
// follows the processor: it starts at the first Poll's limit and grows
// only while the processor asks for tasks that the broker holds back
// because every prefetched message is unacknowledged. It settles at what the processor
// holds plus the tasks it finished and has not acked yet, so the broker
// never sends a process more than it has room for, and the rest of the
// queue stays available to other processors. A batch of acks goes out as
// one basic.ack (multiple) for the deliveries older than every other
// unacknowledged one, and one basic.ack each for the rest.
//
// Claims do not expire: the broker keeps an unacknowledged message for its
// consumer until the connection or channel closes (or until RabbitMQ's
// consumer_timeout, 30 minutes by default, closes a channel that sat on a
// delivery for longer: keep the processor's TaskTimeout below it). So the
// stream sets no Delivery.Deadline and does not implement
// peonify.Extender. Delivery tags belong to a channel: after a reconnect,
// the broker has requeued every message of the old channel, and Ack and
// Nack of a delivery from before report peonify.ErrLeaseLost.
//
// # Retries, delays and dead letters, without plugins
//
// AMQP cannot change a message, so a Nack republishes the task (after the
// broker confirms the copy, the delivery is acked). Retries and scheduled
// tasks (Task.RunAt) wait in delay queues: each holds messages for a fixed
// time (x-message-ttl, a power of two of milliseconds) and then
// dead-letters them back to the work queue. A delay takes the longest such
// queue that does not overshoot; when the task comes back before its
// x-peonify-run-at time, the stream moves it on to the next one: about
// log2 of the delay in milliseconds hops at most. A task is never early;
// it is late by a few milliseconds per hop (and by up to 1/16 of the
// delay, at most 100ms, where a slightly longer queue saves the last
// hops). The broker's delayed-message plugin is not needed.
//
// Attempts are counted in the x-peonify-attempts header: a failed Nack
// republishes with the count raised, a released one (shutdown, snooze)
// with the count unchanged. A poison message therefore never hot-loops: it
// is never requeued as it is, and it ends in the dead-letter queue when it
// runs out of attempts, with the reason in the x-peonify-dead-reason and
// x-peonify-last-error headers.
//
// A message can also come back without a Nack: when the connection of the
// processor that held it is lost (the process crashed, or the network
// failed), the broker delivers it again, marked redelivered. The stream
// counts that lost attempt by republishing the task with its count raised
// (or, if the task's own MaxAttempts is used up, dead-lettering it), so a
// task that crashes its processor cannot crash-loop the fleet. The
// broker cannot tell whether a redelivered message had started: the
// tasks a crashed process had received but not started count an attempt
// too.
//
// # What RabbitMQ cannot do
//
//   - Enforce limits: Task.Key travels in the peonify-key header, but the
//     broker pushes messages to whichever consumer has room under its
//     prefetch, so a limit could only hold a delivered message (filling the
//     prefetch, blocking every other key, with no lease to give back) or
//     requeue it (a busy loop, counted as a lost attempt). The Stream is
//     therefore not a peonify.Limiter, and AddStream with peonify.Limits
//     fails with an error wrapping errors.ErrUnsupported. The processor's
//     Workers caps one process; for limits across processors, per key,
//     rates, ordering and fairness, forward the task type into a store that
//     enforces them in its claim (see Example_flowControl and README.md).
//   - Deduplicate: RabbitMQ cannot find a message by ID, so Enqueue of a
//     task ID already stored (or of a live Task.UniqueKey) stores another
//     copy. Handlers must be idempotent; Task.ID is the key to use.
//   - Inspect one task: as a peonify.Inspector the Stream counts tasks by
//     state (pending: ready in the work queue or received by this stream
//     and not handed out; scheduled: in the delay queues; dead; running:
//     handed out by this stream, as other processes' deliveries are not
//     visible over AMQP), and lists, gets, retries and deletes dead tasks
//     (reading the dead-letter queue with basic.get, at most 10,000
//     messages, and putting back the others). It cannot list pending,
//     scheduled or running tasks, nor get or delete one by ID: those calls
//     return an error wrapping errors.ErrUnsupported, so that nothing
//     mistakes those limits for an empty queue. Purge empties the queue of
//     pending, scheduled or dead tasks.
package amqpstream
