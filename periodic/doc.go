// Package periodic enqueues tasks on a schedule: cron expressions
// ("0 3 * * *", with optional seconds), descriptors ("@daily") and
// intervals ("@every 10m").
//
// A Scheduler enqueues into any stream that implements peonify.Enqueuer.
// Each time slot of a job becomes one task whose ID (TaskID) and UniqueKey
// (UniqueKey) are derived from the job's name and the slot, so that any
// number of processors can run the same schedule against one shared
// durable stream and the stream still holds exactly one task per slot:
// the other schedulers' attempts come back as peonify.ErrDuplicate, which
// they take as success. No leader election or lock is needed.
//
// Delivery stays at-least-once. A stream that forgets completed tasks
// (memstream does) cannot recognise a slot enqueued again long after its
// task finished, as the catch-up of a restarted processor may do, so
// handlers of periodic tasks must be idempotent like any other; the slot
// (Slot) makes a good idempotency key.
//
// A minimal program runs a scheduler next to the processor that executes
// its tasks:
//
//	stream := memstream.New(memstream.Config{}) // or a durable stream shared by every processor
//
//	sched, err := periodic.New(stream, periodic.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	err = sched.Add(periodic.Job{
//		Name: "nightly-report",
//		Spec: "0 3 * * *", // 03:00 UTC every day
//		Task: peonify.Task{Type: "report"},
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//
//	p, err := peonify.New(peonify.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	err = p.AddTaskList(peonify.TaskList{"report": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
//		slot, _ := periodic.Slot(t)
//		return writeReport(ctx, slot) // idempotent for a given slot
//	})})
//	if err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddStream(stream); err != nil {
//		log.Fatal(err)
//	}
//
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	var wg sync.WaitGroup
//	wg.Go(func() { sched.Run(ctx) })
//	err = p.Run(ctx) // returns after a graceful drain once ctx ends
//	wg.Wait()
package periodic
