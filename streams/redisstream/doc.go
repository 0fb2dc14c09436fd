// Package redisstream is Peonify's Redis stream: a durable task queue in a
// Redis stream, shared by any number of processors on any number of
// machines through one consumer group.
//
// Tasks are stream entries (see the package README for the fields, so
// that any Redis client, redis-cli included, can enqueue with a plain
// XADD). A processor claims them with XREADGROUP: each delivery is leased
// to the stream's consumer name until it is acked, nacked or extended, and
// fenced by its entry ID and delivery count, so that a worker whose lease
// ended cannot complete, fail or extend the task's newer claim. Acks are
// batched into one server-side script that checks the claims, XACKs the
// entries and removes them: by XTRIM MINID up to the oldest entry still
// running or undelivered, by XDEL past it (the stream is never trimmed by
// length, which would drop unacked entries). Entries whose lease ended,
// because their processor died or stalled, are claimed again by the next
// Poll that looks for them (Config.RescueInterval). Retries with a delay and tasks
// scheduled for later wait in a sorted set and move back into the stream
// atomically, by script, when due; dead tasks go to a dead-letter stream
// with their last error.
//
// It needs Redis 6.2 or later (it is tested on 7.0). Every key of a queue
// shares the hash tag {queue}, and every script touches the keys of one
// queue only, so a queue lives in one slot of a Redis Cluster: give New a
// redis.ClusterClient, and spread the load over the masters with several
// queues. The tests run on a single server and on a cluster of 3 masters
// with a replica each. Redis replicates asynchronously: a failover may
// lose the writes the master acknowledged last, unless
// Config.WaitReplicas makes Enqueue, Ack and the other writes that report
// a task's state wait for replicas (the README, "Clusters and failover",
// says what each setting guarantees, with measurements).
//
// # Getting started
//
//	client := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
//	defer client.Close() // the client is yours: the stream never closes it
//
//	stream, err := redisstream.New(client, redisstream.Config{Queue: "emails"})
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
// Give the client ContextTimeoutEnabled: true, so that the deadline of
// the processor's calls (peonify.Config.StoreTimeout) bounds each Redis
// command. Without it go-redis ignores context deadlines, and a command
// on a connection that died without a reset waits for the client's
// ReadTimeout (3s by default) instead; the stream still recovers, a few
// seconds later.
//
// # Delivery and attempts
//
// Task.Attempt is the number of attempts counted before the entry was
// added (its attempts field) plus the entry's delivery count in the group.
// A failed or released task is added again as a new entry with the
// attempts counted so far; a release does not count its delivery. Each
// stream has a consumer name (Config.Consumer): on its first Poll, and
// after a Poll failed, it takes back the entries its name still holds
// before it reads new ones, so a read whose reply was lost, or the work of
// a previous run under the same name, is not stranded until its lease ends.
//
// New entries are delivered in stream order; Task.Priority is carried but
// not used for ordering. Idle processors are woken by a blocking read (see
// Stream.Start), so an enqueued task starts within milliseconds.
//
// # Flow control
//
// Stream is a peonify.Limiter: the limits given to AddStream with
// peonify.Limits (concurrency global, per key with KeyConcurrency, or per
// processor with Local; token-bucket rates; per-key ordering; fairness
// between keys) are enforced by Redis inside the claim, by one Lua script
// that checks every limit that applies to a task and claims it only if
// all admit it. A held task is never delivered: it is not an attempt,
// holds no lease and costs nothing while it waits. The key is Task.Key,
// stored in the entry's key field, which producers in other languages set
// with their XADD.
//
// With limits a claim cannot simply use XREADGROUP, which hands entries
// out strictly in order: tasks that must wait are kept in ready queues, a
// sorted set per task type and key. Each claim first takes tasks from the
// queues in turn (round-robin between keys), claiming them with XCLAIM
// FORCE, then reads new entries with XREADGROUP: one that nothing of its
// key waits ahead of and that every limit admits is claimed as read; the
// others go out of the group's pending list into their ready queues. A
// queue whose first task is held is parked until a permit it waits for
// frees, or its next rate token is due, so saturated keys cost nothing
// and never hold up other keys. Running tasks are counted per limit and
// key, with their lease ends: the permits of a processor that dies come
// back when its leases end. Rate buckets live in Redis and are refilled
// by its clock. A failed task keeps its place in its ordered key; a dead
// or deleted one releases the key. An ack or nack that frees a permit
// fires Wake at once, in this process and, through the watcher, in every
// other; a claim held back only by a rate bucket arms a timer for its
// next token. Without limits the claim is the XREADGROUP of before.
//
// A processor cut off from Redis cannot claim, so it cannot over-admit;
// a task that outlives its lease (its processor could not extend it) frees
// its permit and may run again elsewhere, beside its replacement. A Redis
// failover to a replica that missed the last writes may lose claims, whose
// permits then look free. Every processor of a queue must be given the
// same limits. The README ("Flow control") has the details and the
// producer snippets.
//
// # Results and workflows
//
// Stream is a peonify.Tracker and a peonify.WorkflowStore. Every key they
// use carries the queue's hash tag, and every change is one Lua script, so
// all of it works on a Redis Cluster.
//
//   - A done task that has a result (peonify.SetResult) or belongs to a
//     workflow is kept, by the ack's own script, in a hash of its own
//     (Keys.Task) for Config.ResultRetention (24 hours by default), as
//     peonify.StateDone with its result; Results reads any number of them
//     in one script run. Other done tasks are deleted when acked, as
//     before: a plain ack costs no extra round trip, and two or three more
//     commands inside the script only when a Wait is subscribed or a
//     progress was stored. Expired tasks are removed a hundred at a time
//     by the script that moves due tasks, which polls already run; they
//     are never reported once expired.
//   - SetProgress is fenced like Ack and keeps the last progress in a hash
//     (Keys.Progress) until the task is removed.
//   - Cancel moves waiting, pending, scheduled and running tasks to
//     peonify.StateCancelled (Keys.Cancelled, kept for Config.KeepDead).
//     A running task's claim ends at once (it is acked out of the group,
//     its permits under limits are freed); its Extend and SetProgress
//     then return an error wrapping peonify.ErrCancelled, and its Ack and
//     Nack are stale.
//   - Wait subscribes once per Stream to the queue's channel
//     (Keys.Finished), on which the scripts that finish tasks publish
//     their IDs, and looks again every two seconds in case a message was
//     lost.
//   - EnqueueWorkflow stores a whole workflow in one script run: it checks
//     every task for duplicates first and writes only if none is found, so
//     a workflow is stored whole or not at all. Tasks with parents wait in
//     their hashes (peonify.StateWaiting) with a count of unfinished
//     parents; each task has a set of its dependents. The script that
//     acks a task's current claim decrements its dependents' counts and
//     adds those at zero to the stream (or the schedule), so a stale ack
//     releases nothing, a released task is claimed through the same path,
//     limits included, as an enqueued one, and the ack wakes the pollers.
//     A task that goes dead, is cancelled or is deleted cancels its
//     waiting dependents (iteratively, each once), unless they allow
//     failed parents. A waiting task holds no place in an ordered key.
//     Spawn is fenced like Ack, in one script run. At most
//     MaxWorkflowTasks tasks per call; 10,000 take one script run of
//     roughly 150 ms on a loaded 2-core test machine, during which Redis
//     serves nothing else.
//
// # Durability
//
// Redis keeps the queue in memory. Whether a task survives a restart of
// Redis is the operator's choice: with appendonly yes (and appendfsync
// everysec or always) it does; without persistence a restart empties the
// queue. The stream recovers from a restart by itself either way: it
// reconnects with jittered backoff and creates the consumer group again if
// it is gone.
//
// # Operations
//
//   - Stream implements peonify.Inspector (counts, listing, retry of dead
//     tasks, delete, purge). Listing reads the whole stream: it is an
//     operator's tool.
//   - Acked entries are deleted at once (done tasks with a result or a
//     workflow are kept, see above). A second Enqueue of an ID within
//     Config.DedupWindow of the first is reported as a duplicate, even if
//     the task has finished; dead tasks are kept for Config.KeepDead.
//   - A Stream that polls sends one pipelined round trip per Poll, one
//     script run per Ack batch, Nack and Extend, and, while idle, one
//     blocking read of up to half a second at a time.
package redisstream
