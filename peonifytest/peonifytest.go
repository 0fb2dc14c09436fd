package peonifytest

import (
	"context"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// Features describes the stream under test: how to feed it, the lease it
// was configured with, and what it cannot do. The zero value describes a
// complete stream that implements peonify.Enqueuer and never expires claims.
type Features struct {
	// Lease is the lease the stream was configured with: how long a claim
	// lasts without Ack, Nack or Extend. Configure the stream with a short
	// one (300ms to 1s) so that the expiry tests are quick. Zero means the
	// stream's claims never expire; the tests of lease expiry, Extend and
	// stale acks are then skipped.
	Lease time.Duration

	// Enqueue stores tasks in s. It is used only when the stream does not
	// implement peonify.Enqueuer, for example to publish to the broker
	// subject or queue that the stream reads; it is then required. It
	// should store each task with the ID the suite gives it.
	Enqueue func(ctx context.Context, s peonify.Stream, tasks ...*peonify.Task) error

	// NoScheduling says the stream cannot hold a task until Task.RunAt.
	NoScheduling bool

	// NoPriority says the stream does not deliver higher Task.Priority
	// first.
	NoPriority bool

	// NoHeaders says the stream does not carry Task.Headers.
	NoHeaders bool

	// NoLastError says the stream does not keep NackOptions.Reason as the
	// Task.LastError of the next delivery.
	NoLastError bool

	// NoDuplicateCheck says the stream does not detect a second Enqueue of
	// a task ID (nor of a live UniqueKey).
	NoDuplicateCheck bool

	// NoUniqueKey says the stream detects duplicate IDs but not duplicate
	// live Task.UniqueKey values.
	NoUniqueKey bool

	// InspectorUnsupported lists the peonify.Inspector calls that the
	// stream answers with an error wrapping errors.ErrUnsupported, because
	// its server cannot answer them (a broker that cannot list a queue, or
	// find a message by ID), as in
	//
	//	[]peonifytest.InspectCall{"List(pending)", "Get(running)"}
	//
	// The Inspector checks accept that error from these calls, and from no
	// others, and skip what depends on their answers; the
	// InspectorUnsupported check makes each listed call and fails unless it
	// returns such an error, wrapped with the reason, so that the list
	// stays true.
	InspectorUnsupported []InspectCall

	// NoKey says the stream does not carry Task.Key. Every stream should:
	// limits per key and Inspector.List by key rely on it. The KeyRoundTrip
	// check then makes sure that the key is indeed lost, so that the flag
	// is removed once the stream carries it; ListByKey is skipped.
	NoKey bool

	// NoLimiter says the stream is not a peonify.Limiter, by design: it
	// cannot enforce limits in its claims, and peonify.Limits fails on it
	// with errors.ErrUnsupported. The flow-control checks are skipped. A
	// stream that is not a Limiter (found with peonify.As) fails the
	// Limiter check unless this is set, so that a stream does not lose
	// flow control by accident (as a wrapper without an Unwrap method
	// would), and a stream that is one fails it if this is set.
	NoLimiter bool

	// NoRateLimit, NoOrdered and NoLocalLimit say that the stream, a
	// peonify.Limiter, cannot enforce a kind of limit: one with a Rate,
	// an Ordered one, or a Local one. Its SetLimits must refuse such a
	// limit with an error wrapping errors.ErrUnsupported, so that no limit
	// is silently ignored: the Limiter check makes sure it does (and that
	// it accepts every kind not listed), and the checks of the kind are
	// skipped.
	NoRateLimit  bool
	NoOrdered    bool
	NoLocalLimit bool

	// NoTracker says the stream is not a peonify.Tracker, by design: it
	// forgets a task once it is acked (a broker), so it keeps no results,
	// progress or cancellations, and peonify.SetResult fails on it with
	// errors.ErrUnsupported. The checks of results, progress, waiting and
	// cancellation are skipped, and UnsupportedInHandler checks that a
	// handler's SetResult and ReportProgress fail so. Like NoLimiter, the
	// Tracker check fails if the flag disagrees with
	// peonify.As[peonify.Tracker].
	NoTracker bool

	// NoWorkflows says the stream is not a peonify.WorkflowStore, by
	// design, and peonify.Spawn fails on it with errors.ErrUnsupported
	// (UnsupportedInHandler checks it). The workflow checks are skipped.
	// The WorkflowStore check fails if the flag disagrees with
	// peonify.As[peonify.WorkflowStore].
	NoWorkflows bool

	// MaxPayload is the largest Task.Payload, in bytes, that the stream
	// carries. Zero means at least 256 KiB, the largest payload the suite
	// sends.
	MaxPayload int

	// Timeout bounds every wait for something that should happen: a
	// delivery, a redelivery after a lease or a delay, a wake-up.
	// Defaults to 10s.
	Timeout time.Duration

	// Settle is how long the suite keeps polling to be sure that something
	// does not happen, such as a second delivery of a leased task.
	// Defaults to 100ms; raise it for a broker that takes longer to make a
	// stored task visible.
	Settle time.Duration
}

func (f Features) withDefaults() Features {
	if f.Timeout <= 0 {
		f.Timeout = 10 * time.Second
	}
	if f.Settle <= 0 {
		f.Settle = 100 * time.Millisecond
	}
	return f
}

// largePayload is the size of the large payload round-trip, capped by
// Features.MaxPayload.
const largePayload = 256 << 10

// test is one conformance check.
type test struct {
	name string
	run  func(h *harness)
}

// tests lists the suite in the order it is reported.
var tests = []test{
	{"RoundTrip", testRoundTrip},
	{"EnqueueCopiesTask", testEnqueueCopiesTask},
	{"EnqueueFillsIDAndEnqueuedAt", testEnqueueFills},
	{"PollEmptyReturnsPromptly", testPollEmpty},
	{"PollReturnsWhenContextEnds", testPollContext},
	{"PollHonoursMax", testPollMax},
	{"PollBelowOneAsksForNothing", testPollBelowOne},
	{"PollSetsLeaseDeadline", testPollDeadline},
	{"LeasedTaskIsInvisible", testLeasedInvisible},
	{"ConcurrentPollers", testConcurrentPollers},
	{"AckRemoves", testAckRemoves},
	{"AckIsIdempotent", testAckIdempotent},
	{"LeaseExpiryRedelivers", testLeaseExpiry},
	{"ExtendKeepsLease", testExtendKeepsLease},
	{"StaleAckKeepsNewClaim", testStaleAck},
	{"StaleNackKeepsNewClaim", testStaleNack},
	{"StaleExtendReportsLeaseLost", testStaleExtend},
	{"NackFailedHonoursDelay", testNackFailed},
	{"NackReleasedDoesNotCountAttempt", testNackReleased},
	{"NackDeadIsNotRedelivered", testNackDead},
	{"NackChecksOptions", testNackChecksOptions},
	{"DeadIsInspectable", testDeadInspectable},
	{"Inspector", testInspector},
	{"InspectorUnsupported", testInspectorUnsupported},
	{"ListChecksOptions", testListChecksOptions},
	{"ScheduledNotEarly", testScheduled},
	{"Priority", testPriority},
	{"DuplicateID", testDuplicateID},
	{"DuplicateUniqueKey", testDuplicateUniqueKey},
	{"InvalidTask", testInvalidTask},
	{"Wake", testWake},
	{"Start", testStart},
	{"BadInputDoesNotPanic", testBadInput},
	{"KeyRoundTrip", testKeyRoundTrip},
	{"ListByKey", testListByKey},
	{"Limiter", testLimiter},
	{"LimitConcurrency", testLimitConcurrency},
	{"LimitLocal", testLimitLocal},
	{"LimitPerKey", testLimitPerKey},
	{"LimitNoHeadOfLineBlocking", testLimitNoHeadOfLineBlocking},
	{"LimitFairness", testLimitFairness},
	{"LimitRate", testLimitRate},
	{"LimitRatePerKey", testLimitRatePerKey},
	{"LimitRateWakes", testLimitRateWakes},
	{"LimitOrdered", testLimitOrdered},
	{"LimitHeldBackIsNotAnAttempt", testLimitHeldBackIsNotAnAttempt},
	{"LimitBlockedPollWakes", testLimitBlockedPollWakes},
	{"LimitStats", testLimitStats},
	{"LimitProcessor", testLimitProcessor},
	{"Tracker", testTracker},
	{"ResultRoundTrip", testResultRoundTrip},
	{"ResultWaitWakes", testResultWaitWakes},
	{"ProgressStored", testProgressStored},
	{"CancelPending", testCancelPending},
	{"CancelRunning", testCancelRunning},
	{"CancelRunningProcessor", testCancelRunningProcessor},
	{"WorkflowStore", testWorkflowStore},
	{"WorkflowDiamond", testWorkflowDiamond},
	{"WorkflowInvalid", testWorkflowInvalid},
	{"WorkflowCascade", testWorkflowCascade},
	{"WorkflowStaleAckDoesNotRelease", testWorkflowStaleAckDoesNotRelease},
	{"WorkflowFanOut", testWorkflowFanOut},
	{"CancelWorkflow", testCancelWorkflow},
	{"WorkflowDeleteCascades", testWorkflowDeleteCascades},
	{"UnsupportedInHandler", testUnsupportedInHandler},
	{"Close", testClose},
	{"Processor", testProcessor},
}

// TestStream runs the conformance suite against the stream that newStream
// returns. Each check is a parallel subtest of t with its own stream:
// newStream must return a new, empty, isolated stream (its own queue,
// table or subject) each time it is called, may be called from several
// goroutines at once, and registers the stream's cleanup with t.Cleanup.
// It fails t, with t.Fatal, if it cannot make the stream.
//
// Because the subtests are parallel, TestStream returns before they run:
// release anything they share with t.Cleanup, not with defer.
//
// f says how the stream was configured and what it cannot do; checks that
// need a missing capability are skipped with a message saying why.
func TestStream(t *testing.T, newStream func(t *testing.T) peonify.Stream, f Features) {
	t.Helper()
	if newStream == nil {
		t.Fatal("peonifytest: newStream is nil: pass a function that returns a new, empty stream")
	}
	if f.Lease < 0 || f.MaxPayload < 0 {
		t.Fatal("peonifytest: Features.Lease and Features.MaxPayload must not be negative")
	}
	if err := checkInspectCalls(f.InspectorUnsupported); err != nil {
		t.Fatal("peonifytest: ", err)
	}
	f = f.withDefaults()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(newHarness(t, newStream, f))
		})
	}
}
