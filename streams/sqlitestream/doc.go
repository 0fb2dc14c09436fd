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
// # Finished tasks
//
// An acked task is deleted, unless Config.KeepDone keeps it for a while as
// peonify.StateDone. A dead task keeps its last error, attempts and reason
// until an operator retries, deletes or purges it (see the Inspector
// methods), or until Config.KeepDead has passed.
package sqlitestream
