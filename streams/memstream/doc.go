// Package memstream is an in-memory peonify stream: a priority queue of
// tasks with leases, fenced acks, retries, scheduling, dead letters and
// inspection, held entirely in this process.
//
// It implements peonify.Stream, Extender, Waker, Enqueuer, Inspector,
// Limiter, Tracker and WorkflowStore, but nothing survives the process, so it is meant for tests,
// examples, benchmarks and fan-in between goroutines of one program. Use a
// durable stream when tasks must outlive a crash.
//
// A minimal program enqueues a task and lets a processor run it until ctx
// ends:
//
//	func run(ctx context.Context) error {
//		s := memstream.New(memstream.Config{})
//		p, err := peonify.New(peonify.Config{})
//		if err != nil {
//			return err
//		}
//		err = p.AddTaskList(peonify.TaskList{
//			"greet": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
//				fmt.Printf("hello, %s\n", t.Payload)
//				return nil
//			}),
//		})
//		if err != nil {
//			return err
//		}
//		if err := p.AddStream(s); err != nil {
//			return err
//		}
//		if err := s.Enqueue(ctx, &peonify.Task{Type: "greet", Payload: []byte("world")}); err != nil {
//			return err
//		}
//		return p.Run(ctx)
//	}
//
// Poll hands out the stored *peonify.Task itself, without copying it, so
// handlers must treat it as read-only, as the peonify contract requires.
//
// # Flow control
//
// Stream is a peonify.Limiter, and the reference for how a store enforces
// limits (see peonify.Limit): give them to the processor with
// peonify.Limits, or to the stream with SetLimits. Every kind is
// supported, and exactly, since each claim is made under the stream's one
// lock. With limits set, Poll considers the ready tasks in turn and claims
// one only if every limit that applies to it admits it; the others stay
// pending as they were: no attempt, no lease, no cost while they wait.
//
//   - Concurrency counts the running tasks a limit applies to (per key for
//     PerKey), including those claimed earlier in the same Poll.
//     KeyConcurrency overrides it for a key, 0 holding the key. A task
//     whose lease ended counts until the stream makes it pending again,
//     when it next looks. A Local limit counts what a global one does: the
//     stream is all in one process.
//   - Rate is a token bucket per limit (per key for PerKey) held by the
//     stream: it starts full with Burst tokens and refills continuously,
//     Rate per Period, on the stream's clock (Config.Now); each claim takes
//     a token.
//   - Ordered lets a task start only when no older live task (pending,
//     scheduled or running, in enqueue order) of its key is one the limit
//     applies to. A failed task keeps its place, its key waiting through
//     the retry delay; a task that goes dead, or is deleted, releases the
//     key. A dead task that Retry revives takes its place back: being
//     older, it runs before its key's newer tasks.
//   - Fairness: the tasks a PerKey limit applies to are ranked within their
//     key in the usual order (Priority, then when they became available,
//     then enqueue order), and a Poll takes every key's first task before
//     any key's second, and so on. A task that no PerKey limit applies to
//     ranks first. A held or saturated key never stops another key's tasks.
//
// Wake receives when an Ack or a Nack frees a permit, when Delete or Purge
// may release an ordered key, when SetLimits changes the limits, and, on
// the real clock, when the rate token that a held-back task waits for falls
// due. A Poll that finds every ready task held back returns nothing at
// once, so a processor waits for Wake without polling in a loop.
// LimitStats reports what each limit holds running and waiting, and
// Inspector.List lists a key's tasks (peonify.ListOptions.Key).
//
// Without limits, Poll takes its usual path at its usual cost. With them,
// a Poll sorts the ready tasks and passes over the running ones (and the
// scheduled ones, for an Ordered limit): O(n log n) in the n tasks held,
// fine for tests, examples and queues of thousands.
//
// Nothing here holds across processes, since nothing of the stream is
// outside this one: a crash loses the tasks along with their permits.
//
// # Results, progress, cancellation and workflows
//
// Stream is a peonify.Tracker and a peonify.WorkflowStore, and the
// reference for their semantics; each step below happens under the
// stream's one lock, so it is atomic by construction.
//
//   - Results: Ack stores Delivery.Result with the task. A task acked with
//     a non-nil result (an empty one too), or of a workflow, stays in
//     StateDone with it for Config.ResultRetention (24h by default); the
//     stream forgets it the first time it looks after that (each kept task
//     is looked at once, oldest first). Other acked tasks are forgotten at
//     once, as before.
//   - Progress: SetProgress is fenced like Ack (ErrLeaseLost for a stale
//     claim, ErrCancelled for a cancelled task); Get and List show the last
//     progress while the task runs and after.
//   - Wait is woken by a channel the finishing step closes (ack, dead
//     Nack, Cancel, Delete, Purge, retention, Close): no polling. Wait
//     started before a task acked without a result still returns it done.
//   - Cancel moves waiting, pending, scheduled and running tasks to
//     StateCancelled ("cancelled by request"), kept for inspection like
//     dead tasks (at most Config.MaxDead, oldest dropped first). A running
//     task's claim then fails Extend and SetProgress with an error wrapping
//     both peonify.ErrCancelled and peonify.ErrLeaseLost; its Ack is
//     ignored and its Nack reported stale. It frees its limit permits at
//     once.
//   - Workflows: EnqueueWorkflow stores all of a workflow's tasks or none.
//     Each task keeps the list of its dependents, and each waiting task
//     the number of parents it waits for, so that finishing a task costs
//     O(its dependents): an ack decrements them and makes those at zero
//     pending (or scheduled until RunAt), signalling Wake; a task that
//     goes dead, is cancelled, deleted or purged cancels its waiting
//     dependents ("parent <id> dead: <reason>") and theirs in turn, or
//     releases those with AllowFailedParents. A task tells its dependents
//     once, the first time it finishes, so a stale or duplicate ack, or the
//     success of a dead task that Retry revived, releases nothing. Spawn
//     adds each new child to the Parents of the spawning task's waiting
//     dependents, who then wait for it and read its result. Waiting tasks
//     are in no queue: they take no limit permit and do not hold an
//     ordered key.
package memstream
