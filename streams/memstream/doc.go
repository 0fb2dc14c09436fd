// Package memstream is an in-memory peonify stream: a priority queue of
// tasks with leases, fenced acks, retries, scheduling, dead letters and
// inspection, held entirely in this process.
//
// It implements peonify.Stream, Extender, Waker, Enqueuer and Inspector,
// but nothing survives the process, so it is meant for tests, examples,
// benchmarks and fan-in between goroutines of one program. Use a durable stream when tasks must outlive a crash.
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
package memstream
