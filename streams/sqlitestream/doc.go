// Package sqlitestream is Peonify's embedded durable task store, and its
// default stream: tasks live in one SQLite file, with no server to run. It
// uses the pure-Go SQLite driver, so it needs no cgo.
//
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
//	defer stop()
//	s, err := sqlitestream.Open("tasks.db", sqlitestream.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	// Producers, in this process or in another one opening the same file:
//	err = s.Enqueue(ctx, &peonify.Task{Type: "email", Payload: []byte(`{"to":"ada@example.com"}`)})
//	if err != nil {
//		log.Fatal(err)
//	}
//
//	p, err := peonify.New(peonify.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddTaskList(peonify.TaskList{"email": emailHandler}); err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddStream(s); err != nil { // the processor closes s when Run returns
//		log.Fatal(err)
//	}
//	if err := p.Run(ctx); err != nil {
//		log.Fatal(err)
//	}
//
// # Durability
//
// The database runs in WAL mode. When Enqueue returns nil, its tasks are
// committed: a crash of the process, even kill -9, loses none of them. With
// the default Config.Synchronous, SynchronousFull, each commit is synced to
// disk, so they also survive an operating system crash or a power loss;
// SynchronousNormal skips that sync and keeps only the guarantee against a
// process crash. Acks, nacks and claims are committed the same way.
//
// # Group commit
//
// All writes of a Stream go through one goroutine that owns one connection.
// The enqueues, claims, acks, nacks and lease extensions that arrive while a
// transaction commits are carried together by the next one (up to
// Config.MaxBatch operations), so that concurrent callers share one sync
// to disk. An operation that arrives while nothing is being written runs
// at once. Inspector reads run on other connections beside the writer.
//
// # Claims, leases and fencing
//
// Poll claims the ready tasks with the highest Priority first, then those
// ready the longest, and leases them for Config.Lease. Each claim counts an
// attempt and gets a new random Delivery.Token. Ack, Nack and Extend act only
// when the token is still the task's current one, so a worker that lost its
// lease (it ran too long and the task was claimed again) cannot ack or fail
// the newer claim. A task whose lease ends without an ack, because its
// process died or stalled, becomes ready again: that is how the work of a
// crashed process comes back.
//
// # Several processes
//
// Processes may share a file on a local file system. Writes take SQLite's
// write lock with BEGIN IMMEDIATE and wait up to Config.BusyTimeout for
// another process to release it; a claim is one transaction, so a task is
// never claimed by two processes at once. Wake tells a processor at once
// about tasks made ready through its own Stream and about scheduled tasks
// falling due, and within Config.WatchInterval about commits by other
// processes.
//
// # Flow control
//
// Stream is a peonify.Limiter: the limits given to the processor with
// peonify.Limits are enforced inside the claim, one write transaction
// that the file's write lock serializes with the claims of every other
// process, so each claim sees exactly what runs and what the buckets hold.
// Every peonify.Limit is supported:
//
//   - Concurrency (of a type or of all types): the tasks in state running
//     whose lease has not ended, plus those the claim admits, stay below
//     the limit. PerKey counts each Task.Key on its own, KeyConcurrency
//     sets a key's own limit (0 holds the key), and Local counts only the
//     running tasks this Stream claimed: each open Stream stamps its claims
//     with a random instance number.
//   - Rate: a token bucket per limit (per key with PerKey) in the table
//     peonify_limit_buckets, read, refilled by the time since its last use
//     and updated in the claim's transaction; each claimed task takes a
//     token. The clock is the machine's, shared by the processes. A
//     bucket with no row is full, so rows that have filled up are deleted.
//   - Ordered: a task is claimed only if no live task (pending, scheduled
//     or running) of its key that the limit applies to came before it in
//     the file (a lower rowid). A failed task keeps its place through its
//     retry delay; a dead or deleted task releases the key. Retrying a dead
//     task puts it back at the head of its key.
//   - Fairness, for every PerKey limit: a claim takes the first ready task
//     of each key before the second of any key. It looks at the oldest
//     ready tasks first, in the usual order; when they give it too
//     little, it goes round the keys in the index of pending tasks by
//     key and type, each claim starting after the key where the
//     previous one stopped. A claim's cost follows the tasks it takes
//     and the keys it passes over, not the tasks waiting. The first
//     limited claim on a file creates that index, so that a file used
//     without limits does not maintain it.
//
// A task held back stays pending, untouched: no attempt, no lease, no
// token. A full or held key never stops the claim from reaching the tasks
// of other keys, and a claim where everything ready is held back returns
// nothing at once. An Ack or a Nack through this Stream of a task that a
// concurrency or ordered limit applies to wakes the processor; other
// processes' acks wake it through the file watch (Config.WatchInterval);
// a claim held back by a bucket arms a timer for its next token. Without
// limits Poll claims with the plain statement, as fast as ever.
//
// A crashed processor's running tasks hold their permits until their
// leases end (Config.Lease), then become pending and count no more; a
// limit is never exceeded meanwhile. There is no network between the
// processes and the file, so nothing can make a limit over-admit, as long
// as every process gives the file's streams the same limits. The file's
// README shows the raw INSERT that sets a task's key.
//
// # Finished tasks
//
// An acked task is deleted, unless Config.KeepDone keeps it for a while as
// peonify.StateDone, or it has a result or belongs to a workflow (see
// below). A dead task keeps its last error, attempts and reason until an
// operator retries, deletes or purges it (see the Inspector methods), or
// until Config.KeepDead has passed; so does a cancelled one
// (peonify.StateCancelled). One cleanup in the writer deletes what is past
// its retention, at most 1,000 rows a transaction, through the index of
// each state.
//
// # Results, progress, cancellation and workflows
//
// Stream is a peonify.Tracker and a peonify.WorkflowStore.
//
//   - Results: Ack stores Delivery.Result with the task in the statement
//     that marks it done. A task acked with a result (an empty one too), or
//     of a workflow, stays in peonify.StateDone with its result and its last
//     progress for Config.ResultRetention (24h by default, or KeepDone if
//     longer). Results reads many in one query. A task acked without a
//     result outside workflows costs its one statement, as before.
//   - Progress: SetProgress is fenced like Ack and kept in the task's row;
//     Get and List show the last one, while the task runs and after.
//   - Wait is woken at once when the task finishes through this Stream,
//     within Config.WatchInterval when another process finishes it (the
//     file watch), and in any case by a check every second.
//   - Cancel moves waiting, pending, scheduled and running tasks to
//     peonify.StateCancelled at once. A running task's claim is then
//     stale: its Ack and Nack change nothing, it holds no limit permit, and
//     its Extend and SetProgress return an error wrapping
//     peonify.ErrCancelled, on which the processor cancels its context.
//   - Workflows: EnqueueWorkflow stores all of a workflow's tasks or none,
//     in one transaction. A task with parents waits in
//     peonify.StateWaiting; the file keeps its dependencies by parent, and
//     the number of parents it waits for. The transaction that finishes a
//     task (its Ack, its dead Nack, Cancel, Delete, Purge) counts it off
//     its dependents and makes those that wait for nothing more pending,
//     waking the processor as an Enqueue does, or cancels them (and theirs)
//     when it failed and they do not allow failed parents. Only the
//     current claim's Ack counts, and it consumes the task's dependencies,
//     so a stale or repeated ack releases nothing. Spawn is fenced like
//     Ack, skips children already stored, and makes the spawning task's
//     dependents wait for the new children, whose IDs it appends to their
//     Task.Parents. Waiting tasks hold no limit permit and no ordered key.
//
// The file's README describes the tables and what each step costs.
package sqlitestream
