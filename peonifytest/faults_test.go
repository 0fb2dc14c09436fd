package peonifytest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifytest"
	"github.com/peonify/peonify/streams/memstream"
)

// lease is the lease of the streams the suite runs against here.
const lease = 300 * time.Millisecond

// faultEnv names the fault that TestFaultyStream injects; unset, it runs the
// suite against a correct stream.
const faultEnv = "PEONIFYTEST_FAULT"

// faulty wraps a memstream with one deliberate bug, so that the suite can
// be shown to catch it.
type faulty struct {
	*memstream.Stream
	fault string

	silent chan struct{} // Wake under the fault "no-wake"

	mu     sync.Mutex
	latest map[string]peonify.Delivery // newest claim of each task
	closed bool
}

func (f *faulty) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	switch {
	case f.fault == "poll-over-max":
		limit++
	case f.fault == "poll-below-one-errors" && limit < 1:
		return nil, fmt.Errorf("faulty: Poll limit is %d: ask for at least 1 task", limit)
	case f.fault == "poll-below-one-claims" && limit < 1:
		_, err := f.Stream.Poll(ctx, 1) // claims a task and drops it
		return nil, err
	}
	ds, err := f.Stream.Poll(ctx, limit)
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, d := range ds {
		f.latest[d.Task.ID] = d
		if f.fault == "mangle-payload" {
			t := d.Task.Clone()
			t.Payload = []byte(strings.ToValidUTF8(string(t.Payload), "?"))
			ds[i].Task = t
		}
	}
	return ds, err
}

// current swaps a stale delivery for the task's newest claim: what a stream
// without fencing does.
func (f *faulty) current(d peonify.Delivery) peonify.Delivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d.Task != nil {
		if l, ok := f.latest[d.Task.ID]; ok {
			return l
		}
	}
	return d
}

func (f *faulty) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	switch f.fault {
	case "ack-drops-result":
		for i := range ds {
			ds[i].Result = nil
		}
	case "unfenced-ack":
		for i := range ds {
			ds[i] = f.current(ds[i])
		}
	case "stale-fails-batch":
		for _, d := range ds {
			if d.Task != nil && f.current(d).Token != d.Token {
				return fmt.Errorf("task %s: %w", d.Task.ID, peonify.ErrLeaseLost)
			}
		}
	}
	return f.Stream.Ack(ctx, ds...)
}

func (f *faulty) Nack(ctx context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	switch f.fault {
	case "unfenced-nack":
		d = f.current(d)
	case "release-counts":
		if opts.Outcome == peonify.OutcomeReleased {
			opts.Outcome = peonify.OutcomeFailed
		}
	case "ignore-delay":
		opts.Delay = 0
	case "dead-redelivered":
		if opts.Outcome == peonify.OutcomeDead {
			opts.Outcome = peonify.OutcomeReleased
		}
	}
	return f.Stream.Nack(ctx, d, opts)
}

func (f *faulty) Extend(ctx context.Context, d peonify.Delivery, l time.Duration) (peonify.Delivery, error) {
	if f.fault == "unfenced-extend" {
		d = f.current(d)
	}
	nd, err := f.Stream.Extend(ctx, d, l)
	if f.fault == "extend-hides-cancel" && errors.Is(err, peonify.ErrCancelled) {
		err = fmt.Errorf("faulty: task %s: %w", d.Task.ID, peonify.ErrLeaseLost)
	}
	return nd, err
}

func (f *faulty) SetProgress(ctx context.Context, d peonify.Delivery, p peonify.Progress) error {
	if f.fault == "unfenced-progress" {
		d = f.current(d)
	}
	return f.Stream.SetProgress(ctx, d, p)
}

// Wait polls Get once a second under the fault "wait-polls".
func (f *faulty) Wait(ctx context.Context, id string) (peonify.TaskInfo, error) {
	if f.fault != "wait-polls" {
		return f.Stream.Wait(ctx, id)
	}
	for {
		info, err := f.Stream.Get(ctx, id)
		if err != nil || info.State.Finished() {
			return info, err
		}
		select {
		case <-ctx.Done():
			return peonify.TaskInfo{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (f *faulty) Cancel(ctx context.Context, ids ...string) (int, error) {
	if f.fault == "cancel-ignored" {
		return len(ids), nil
	}
	return f.Stream.Cancel(ctx, ids...)
}

func (f *faulty) EnqueueWorkflow(ctx context.Context, w *peonify.Workflow) error {
	err := f.Stream.EnqueueWorkflow(ctx, w)
	if f.fault == "hide-duplicates" && errors.Is(err, peonify.ErrDuplicate) {
		return nil
	}
	return err
}

func (f *faulty) CancelWorkflow(ctx context.Context, id string) (int, error) {
	if f.fault == "cancel-workflow-running-only" {
		info, err := f.Stream.GetWorkflow(ctx, id)
		if err != nil {
			return 0, err
		}
		var ids []string
		for _, ti := range info.Tasks {
			if ti.State == peonify.StateRunning {
				ids = append(ids, ti.Task.ID)
			}
		}
		return f.Stream.Cancel(ctx, ids...)
	}
	return f.Stream.CancelWorkflow(ctx, id)
}

func (f *faulty) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	for _, t := range tasks {
		switch f.fault {
		case "ignore-run-at":
			t.RunAt = time.Time{}
		case "drop-key":
			t.Key = ""
		}
	}
	err := f.Stream.Enqueue(ctx, tasks...)
	if f.fault == "hide-duplicates" && errors.Is(err, peonify.ErrDuplicate) {
		return nil
	}
	return err
}

func (f *faulty) SetLimits(limits []peonify.Limit) error {
	if f.fault == "ignore-limits" {
		return f.Stream.SetLimits(nil)
	}
	return f.Stream.SetLimits(limits)
}

// Wake returns a channel that never receives under the fault "no-wake".
func (f *faulty) Wake() <-chan struct{} {
	if f.fault == "no-wake" {
		return f.silent
	}
	return f.Stream.Wake()
}

// List answers List(pending) with an error wrapping errors.ErrUnsupported
// under the faults whose names start with "unsupported-", and with a bare
// errors.ErrUnsupported under "bare-unsupported".
func (f *faulty) List(ctx context.Context, opts peonify.ListOptions) ([]peonify.TaskInfo, error) {
	if f.fault == "list-ignores-key" {
		opts.Key = ""
	}
	if opts.State == peonify.StatePending {
		switch {
		case f.fault == "bare-unsupported":
			return nil, errors.ErrUnsupported
		case strings.HasPrefix(f.fault, "unsupported-"):
			return nil, fmt.Errorf("faulty: cannot list pending tasks: %w", errors.ErrUnsupported)
		}
	}
	return f.Stream.List(ctx, opts)
}

func (f *faulty) Close(ctx context.Context) error {
	f.mu.Lock()
	again := f.closed
	f.closed = true
	f.mu.Unlock()
	if again && f.fault == "close-twice-errors" {
		return errors.New("already closed")
	}
	return f.Stream.Close(ctx)
}

// TestFaultyStream runs the suite against memstream, with the fault named by
// PEONIFYTEST_FAULT injected when it is set (see TestSuiteCatchesFaults).
func TestFaultyStream(t *testing.T) {
	fault := os.Getenv(faultEnv)
	var unsupported []peonifytest.InspectCall
	if fault == "unsupported-declared" || fault == "bare-unsupported" || fault == "declared-but-answers" {
		unsupported = []peonifytest.InspectCall{"List(pending)"}
	}
	peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
		s := &faulty{
			Stream: memstream.New(memstream.Config{Lease: lease}),
			fault:  fault,
			silent: make(chan struct{}),
			latest: make(map[string]peonify.Delivery),
		}
		t.Cleanup(func() { _ = s.Stream.Close(context.Background()) })
		return s
	}, peonifytest.Features{
		Lease:                lease,
		InspectorUnsupported: unsupported,
		// Features that misdescribe the stream, which carries keys and
		// enforces every kind of limit.
		NoKey:       fault == "declared-no-key",
		NoLimiter:   fault == "declared-no-limiter",
		NoRateLimit: fault == "declared-no-rate-limit",
		NoTracker:   fault == "declared-no-tracker",
		NoWorkflows: fault == "declared-no-workflows",
	})
}

// TestSuiteCatchesFaults shows that each check fails on the bug it is meant
// to find: it runs the check in a child process against a stream with that
// bug and expects it to fail.
func TestSuiteCatchesFaults(t *testing.T) {
	if os.Getenv(faultEnv) != "" {
		t.Skip("running as a child of TestSuiteCatchesFaults")
	}
	if testing.Short() {
		t.Skip("starts a child test process per fault")
	}
	faults := []struct{ fault, check string }{
		{"poll-over-max", "PollHonoursMax"},
		{"poll-below-one-errors", "PollBelowOneAsksForNothing"},
		{"poll-below-one-claims", "PollBelowOneAsksForNothing"},
		{"mangle-payload", "RoundTrip"},
		{"unfenced-ack", "StaleAckKeepsNewClaim"},
		{"stale-fails-batch", "StaleAckKeepsNewClaim"},
		{"unfenced-nack", "StaleNackKeepsNewClaim"},
		{"unfenced-extend", "StaleExtendReportsLeaseLost"},
		{"release-counts", "NackReleasedDoesNotCountAttempt"},
		{"ignore-delay", "NackFailedHonoursDelay"},
		{"dead-redelivered", "NackDeadIsNotRedelivered"},
		{"ignore-run-at", "ScheduledNotEarly"},
		{"hide-duplicates", "DuplicateID"},
		{"close-twice-errors", "Close"},
		{"unsupported-undeclared", "Inspector"},
		{"bare-unsupported", "InspectorUnsupported"},
		{"declared-but-answers", "InspectorUnsupported"},
		{"declared-but-answers", "Inspector"},
		{"drop-key", "KeyRoundTrip"},
		{"list-ignores-key", "ListByKey"},
		{"ignore-limits", "LimitConcurrency"},
		{"ignore-limits", "LimitPerKey"},
		{"ignore-limits", "LimitNoHeadOfLineBlocking"},
		{"ignore-limits", "LimitFairness"},
		{"ignore-limits", "LimitRate"},
		{"ignore-limits", "LimitOrdered"},
		{"ignore-limits", "LimitStats"},
		{"ignore-limits", "LimitProcessor"},
		{"no-wake", "LimitBlockedPollWakes"},
		{"no-wake", "LimitRateWakes"},
		{"declared-no-key", "KeyRoundTrip"},
		{"declared-no-limiter", "Limiter"},
		{"declared-no-rate-limit", "Limiter"},
		{"declared-no-tracker", "Tracker"},
		{"declared-no-workflows", "WorkflowStore"},
		{"ack-drops-result", "ResultRoundTrip"},
		{"ack-drops-result", "WorkflowDiamond"},
		{"ack-drops-result", "WorkflowFanOut"},
		{"wait-polls", "ResultWaitWakes"},
		{"unfenced-progress", "ProgressStored"},
		{"cancel-ignored", "CancelPending"},
		{"cancel-ignored", "CancelRunning"},
		{"extend-hides-cancel", "CancelRunning"},
		{"extend-hides-cancel", "CancelRunningProcessor"},
		{"hide-duplicates", "WorkflowInvalid"},
		{"unfenced-ack", "WorkflowStaleAckDoesNotRelease"},
		{"cancel-workflow-running-only", "CancelWorkflow"},
	}
	for _, tc := range faults {
		t.Run(tc.fault+"/"+tc.check, func(t *testing.T) {
			t.Parallel()
			run := "^TestFaultyStream$/^" + regexp.QuoteMeta(tc.check) + "$"
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+run, "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), faultEnv+"="+tc.fault)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("with fault %s, check %s passed or did not run (err %v):\n%s", tc.fault, tc.check, err, out)
			}
			if !strings.Contains(string(out), "--- FAIL: TestFaultyStream/"+tc.check+" ") {
				t.Fatalf("with fault %s, check %s did not fail:\n%s", tc.fault, tc.check, out)
			}
			t.Logf("with fault %s, %s failed as it should:\n%s", tc.fault, tc.check, failures(out))
		})
	}
}

// TestSuiteAcceptsDeclaredUnsupported runs the Inspector checks in a child
// process against a stream that cannot list pending tasks and says so in
// Features.InspectorUnsupported: they pass.
func TestSuiteAcceptsDeclaredUnsupported(t *testing.T) {
	if os.Getenv(faultEnv) != "" {
		t.Skip("running as a child of TestSuiteCatchesFaults")
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestFaultyStream$/^(Inspector|InspectorUnsupported|DeadIsInspectable)$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), faultEnv+"=unsupported-declared")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFaultyStream/InspectorUnsupported ") ||
		!strings.Contains(string(out), "--- PASS: TestFaultyStream/Inspector ") {
		t.Fatalf("the Inspector checks of a stream that declares List(pending) unsupported did not pass (err %v):\n%s", err, out)
	}
}

// failures returns the failure messages of a child test run.
func failures(out []byte) string {
	var b strings.Builder
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, ".go:") {
			b.WriteString(line)
		}
	}
	return b.String()
}
