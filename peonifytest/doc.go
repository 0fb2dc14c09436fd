// Package peonifytest is the conformance suite that every peonify.Stream
// passes. A stream author runs it from a test of the stream's package,
// against the real server the stream talks to (a database, a broker), never
// against a fake: the suite checks the broker's behaviour as much as the
// stream's code.
//
// TestStream runs each check as a parallel subtest with its own stream, so
// newStream must return a new, empty stream on an isolated queue (a unique
// table, stream or subject name) each time, and register its cleanup with
// t.Cleanup:
//
//	func TestConformance(t *testing.T) {
//		client := connect(t) // the real server; closed by t.Cleanup
//		peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
//			s, err := mystream.New(client, mystream.Config{
//				Queue: "conformance-" + peonify.NewID(), // isolated per subtest
//				Lease: 500 * time.Millisecond,
//			})
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close(context.Background()) })
//			return s
//		}, peonifytest.Features{Lease: 500 * time.Millisecond})
//	}
//
// Configure the stream with a short lease (300ms to 1s) and report it in
// Features.Lease: the expiry checks wait for it. Features also says how to
// enqueue into a stream that does not implement peonify.Enqueuer, and what
// the stream cannot do (scheduling, priorities, headers, duplicate
// detection, large payloads); checks that need a missing capability, or an
// optional interface the stream does not implement (peonify.Extender,
// peonify.Inspector, peonify.Waker, peonify.Starter), are skipped with a
// message saying why. The suite finds them with peonify.As, so a stream
// behind a wrapper with an Unwrap method is tested as the stream it wraps.
// A stream whose server cannot answer some Inspector calls lists them in
// Features.InspectorUnsupported: the suite then accepts
// errors.ErrUnsupported from those calls, checks that they do return it,
// and fails on it from any other.
//
// The suite checks, among other things: byte-exact round trips of binary,
// empty and large payloads; that Poll never returns more than asked, and
// that a Poll for fewer than one task claims nothing and is no error; that
// leased tasks are invisible and come back when the lease ends; that Ack,
// Nack and Extend are fenced against stale claims; the three Nack outcomes;
// scheduling, priorities and duplicate detection; flow control (below);
// and, last, a real peonify.Processor processing tasks from the stream and
// shutting down cleanly.
//
// Flow control (see peonify.Limit) has checks of its own. Every stream
// must carry Task.Key (KeyRoundTrip) and an Inspector must list by it
// (ListByKey); a stream that cannot yet sets Features.NoKey, and
// KeyRoundTrip then fails once the key does come through, so that the
// flag goes. The limit checks run against a stream that is a
// peonify.Limiter (found with peonify.As), each giving the stream limits
// on the check's own task type with SetLimits and then starting it, as
// the processor does:
//
//   - Limiter: SetLimits refuses an invalid limit with a
//     *peonify.ConfigError and accepts every kind of limit, except the
//     kinds that Features.NoRateLimit, NoOrdered and NoLocalLimit name,
//     which it must refuse with an error wrapping errors.ErrUnsupported
//     (so that no limit is silently ignored); LimitStats names the limits
//     in order. A stream that is not a Limiter fails this check unless
//     Features.NoLimiter says that is meant, and one that is fails it if
//     NoLimiter is set.
//   - LimitConcurrency and LimitLocal: a Poll with room for many claims
//     only as many as the limit; an Ack frees one permit and the next
//     Poll claims one; tasks of other types are claimed as usual.
//   - LimitPerKey: each key runs up to its limit, KeyConcurrency
//     overrides it, KeyConcurrency 0 holds a key, and a task without a
//     key is not limited.
//   - LimitNoHeadOfLineBlocking: a saturated key with a long backlog does
//     not stop another key's task, even in a Poll with room for two.
//   - LimitFairness: key B's few tasks, enqueued after key A's many, are
//     claimed within the first claims, not after A's backlog.
//   - LimitRate, LimitRatePerKey and LimitRateWakes: the burst is claimed
//     at once, and then never more than Burst + elapsed*Rate + 1 tasks
//     since the limit was set (a bound a loaded machine cannot break);
//     each key has a bucket of its own; a Waker receives when a held-back
//     task's token falls due.
//   - LimitOrdered: a key's tasks run one at a time in enqueue order,
//     whatever their priorities; a failed task is retried in place, the
//     key waiting through its delay; a dead task releases the key.
//   - LimitHeldBackIsNotAnAttempt: polls that find a task held back leave
//     it pending with no attempt, and its first claim is Attempt 1.
//   - LimitBlockedPollWakes: a Poll whose every ready task is held back
//     returns nothing at once, and a Waker receives when an Ack frees a
//     permit.
//   - LimitStats: InUse, Waiting and the busiest keys of each limit.
//   - LimitProcessor: a real peonify.Processor given a PerKey limit with
//     peonify.Limits runs every task, never more of a key at once than
//     the limit.
//
// Each takes well under two seconds. A claim beyond a limit made after a
// lease the check holds may have ended makes the check inconclusive (it
// is skipped, saying so), not failed: the permit of an expired lease
// comes back by design.
//
// Results, progress, cancellation and workflows have checks of their own,
// run against a stream that is a peonify.Tracker (and an Inspector) and,
// for the workflow checks, a peonify.WorkflowStore, found with
// peonify.As. A stream that forgets a task once it is acked (a broker)
// sets Features.NoTracker, and one without workflows Features.NoWorkflows;
// as with NoLimiter, the Tracker and WorkflowStore checks fail when the
// flag disagrees with what the stream is, and the others skip:
//
//   - Tracker, WorkflowStore: the stream is one unless the flag says it
//     is not, and is not one if the flag says so.
//   - ResultRoundTrip: Ack stores Delivery.Result byte for byte; Get shows
//     the task done with it, and Results maps it; an empty non-nil result
//     is a result; a task acked with a nil one has none (gone, or done
//     with a nil Result); Results leaves out pending and unknown IDs.
//   - ResultWaitWakes: Wait blocks while the task runs and returns it
//     done, with its result, within 500ms of the ack by another goroutine
//     (woken, not polled); it returns a dead task, a finished one at once,
//     ErrNotFound for an unknown ID, and the context's error when the
//     context ends first.
//   - ProgressStored: SetProgress shows in Get while the task runs and is
//     kept once it is done; with a Lease, a stale claim's SetProgress
//     fails with ErrLeaseLost and changes nothing.
//   - CancelPending: Cancel moves pending and scheduled tasks to
//     StateCancelled with a reason, never to be delivered, counts them,
//     and skips done, dead, cancelled and unknown IDs; Wait returns a
//     cancelled task; Purge(cancelled) removes them.
//   - CancelRunning: a running task is cancelled at once (no longer
//     counted running); its claim's Extend and SetProgress fail with
//     ErrCancelled; its Ack and Nack are stale and change nothing; it is
//     not delivered again when its lease ends.
//   - CancelRunningProcessor (needs a Lease): a real peonify.Processor's
//     handler sees context.Cause ErrCancelled within a third of the lease
//     (plus 500ms) of Cancel, and the task stays cancelled, not retried.
//   - WorkflowDiamond: A → (B, C) → D through a Processor with
//     peonify.JSONResult handlers: dependents wait in StateWaiting, read
//     their parents' results with peonify.ParentResults, start only after
//     their parents ended; GetWorkflow shows the workflow succeeded, its
//     counts and its tasks by ID.
//   - WorkflowInvalid: a cycle or an unknown parent is an
//     *InvalidTaskError and stores nothing; a workflow whose ID or one of
//     whose task IDs is stored is a *DuplicateError and stores nothing.
//   - WorkflowCascade: a dead parent cancels its dependents, and theirs,
//     with reasons naming the parent; a dependent with AllowFailedParents
//     runs once all its parents finished, and its own dependent after it;
//     the workflow ends failed.
//   - WorkflowStaleAckDoesNotRelease (needs a Lease): after the parent
//     was claimed again, the stale claim's ack leaves the child waiting;
//     the current one releases it, once, however often it is repeated.
//   - WorkflowFanOut: a task spawns 1,000 children with peonify.Spawn
//     through a Processor; its dependent runs after all of them and reads
//     their 1,000 results with ParentResults (Spawn adds the children to
//     the Parents of the spawning task's dependents).
//   - CancelWorkflow: cancels the running and waiting tasks of the
//     workflow and counts them, leaves done ones done; the running one's
//     Extend then fails with ErrCancelled; an unknown workflow is
//     ErrNotFound.
//   - WorkflowDeleteCascades: deleting a pending task, or a waiting one,
//     cancels the tasks that wait for it, transitively; nothing is left
//     waiting.
//   - UnsupportedInHandler (a stream that is not a Tracker, or not a
//     WorkflowStore): a real peonify.Processor's handler gets errors
//     wrapping errors.ErrUnsupported, saying why, from peonify.SetResult
//     and ReportProgress (not a Tracker) and peonify.Spawn (not a
//     WorkflowStore), and the task still succeeds, once.
//
// Each takes well under a few seconds on memstream, and uses
// Features.Timeout for what must happen and Features.Settle for what
// must not.
//
// This package imports only the standard library and peonify.
package peonifytest
