package natsstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// schedulerAckWait is the AckWait of the scheduler's consumer: how soon a
// scheduled task comes back if the process that fetched it dies before
// deferring or moving it.
const schedulerAckWait = 30 * time.Second

// Setup creates, or updates to match cfg, the JetStream objects a Stream
// uses. Run it once at deployment or at start-up, from any number of
// processes; it is idempotent. It needs a server with JetStream enabled,
// version 2.9 or later.
//
// It makes:
//
//   - the work-queue stream cfg.Stream, on cfg.Subject (ready tasks) and
//     "_peonify.<Stream>.scheduled" (tasks waiting for a time), which
//     republishes the headers of each new task to "_peonify.<Stream>.wake"
//     for Wake; acknowledged tasks are removed from it;
//   - the durable pull consumer cfg.Consumer on cfg.Subject, with explicit
//     acknowledgements, AckWait as the lease and cfg.MaxDeliver (plus one)
//     as JetStream's own delivery limit;
//   - the scheduler's durable consumer on the scheduled subject;
//   - the dead-letter stream cfg.DeadStream on "_peonify.<Stream>.dead",
//     keeping tasks for cfg.KeepDead.
//
// Setup replaces settings changed by hand on these objects.
func Setup(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if js == nil {
		return errors.New("natsstream: Setup needs a jetstream.JetStream (jetstream.New(nc)), got nil")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	subj := newSubjects(cfg)
	storage := jetstream.FileStorage
	if cfg.MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	maxBytes := cfg.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	// The two streams, then the two consumers, are made at the same time:
	// in a JetStream cluster each is a replicated group whose creation
	// waits for an election, and one after the other took about two
	// seconds with 3 replicas.
	mainStream := func() error {
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:        cfg.Stream,
			Description: "Peonify tasks (natsstream)",
			Subjects:    []string{subj.work, subj.scheduled},
			Retention:   jetstream.WorkQueuePolicy,
			Discard:     jetstream.DiscardNew, // a full stream refuses new tasks, never drops stored ones
			MaxBytes:    maxBytes,
			MaxMsgs:     -1,
			MaxAge:      0,
			Storage:     storage,
			Replicas:    cfg.Replicas,
			Duplicates:  cfg.DuplicateWindow,
			RePublish:   &jetstream.RePublish{Source: subj.work, Destination: subj.wake, HeadersOnly: true},
		})
		if err != nil {
			return fmt.Errorf("natsstream: creating or updating stream %s (subjects %s, %s): %w", cfg.Stream, subj.work, subj.scheduled, err)
		}
		return nil
	}
	keep := cfg.KeepDead
	if keep < 0 {
		keep = 0 // no age limit
	}
	deadStream := func() error {
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:        cfg.DeadStream,
			Description: "Peonify dead-lettered tasks of stream " + cfg.Stream + " (natsstream)",
			Subjects:    []string{subj.dead},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      keep,
			MaxMsgs:     -1,
			MaxBytes:    -1,
			Storage:     storage,
			Replicas:    cfg.Replicas,
		})
		if err != nil {
			return fmt.Errorf("natsstream: creating or updating dead-letter stream %s: %w", cfg.DeadStream, err)
		}
		return nil
	}
	if err := together(mainStream, deadStream); err != nil {
		return err
	}
	maxDeliver := -1
	if cfg.MaxDeliver > 0 {
		// One more than Config.MaxDeliver, so Poll sees the delivery that
		// exceeds it and dead-letters the task.
		maxDeliver = cfg.MaxDeliver + 1
	}
	workConsumer := func() error {
		_, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
			Durable:       cfg.Consumer,
			Description:   "Peonify processors (natsstream)",
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			MaxDeliver:    maxDeliver,
			MaxAckPending: cfg.MaxAckPending,
			FilterSubject: subj.work,
			Replicas:      cfg.Replicas,
			MemoryStorage: cfg.MemoryStorage,
		})
		if err != nil {
			return fmt.Errorf("natsstream: creating or updating consumer %s on stream %s: %w", cfg.Consumer, cfg.Stream, err)
		}
		return nil
	}
	schedConsumer := func() error {
		_, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
			Durable:       cfg.schedulerConsumer(),
			Description:   "Peonify scheduler (natsstream)",
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       schedulerAckWait,
			MaxDeliver:    -1,
			MaxAckPending: -1, // every waiting task holds a timer on the server
			FilterSubject: subj.scheduled,
			Replicas:      cfg.Replicas,
			MemoryStorage: cfg.MemoryStorage,
		})
		if err != nil {
			return fmt.Errorf("natsstream: creating or updating consumer %s on stream %s: %w", cfg.schedulerConsumer(), cfg.Stream, err)
		}
		return nil
	}
	return together(workConsumer, schedConsumer)
}

// together runs fns at the same time and returns their errors, joined.
func together(fns ...func() error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Go(func() { errs[i] = fn() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Teardown deletes the streams, with their consumers and every task, that
// Setup made from cfg. It is meant for tests and for retiring a queue.
func Teardown(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if js == nil {
		return errors.New("natsstream: Teardown needs a jetstream.JetStream, got nil")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range []string{cfg.Stream, cfg.DeadStream} {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("natsstream: deleting stream %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
