package peonifytest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// pollPause is the wait between two polls of a stream that returned nothing
// while the suite waits for a delivery.
const pollPause = 5 * time.Millisecond

// slack is how much earlier than due a delayed or scheduled task may show up,
// to allow for a stream that rounds times to the millisecond or keeps them
// on its server's clock.
const slack = 50 * time.Millisecond

// harness is one subtest's stream with the helpers that drive it. Its
// helpers fail the test with t.Fatal, so they are called from the test's
// goroutine only.
type harness struct {
	t   *testing.T
	s   peonify.Stream
	f   Features
	ext peonify.Extender  // nil if the stream does not extend leases
	ins peonify.Inspector // nil if the stream cannot be inspected

	// unsupported holds Features.InspectorUnsupported.
	unsupported map[InspectCall]bool
	enq         peonify.Enqueuer // nil if the suite enqueues with Features.Enqueue

	// late is set when the test ran so slowly that a lease it relied on may
	// have ended (see noteLate).
	late bool

	// claims counts the deliveries of each task that Poll returned.
	claims map[string]int
}

func newHarness(t *testing.T, newStream func(t *testing.T) peonify.Stream, f Features) *harness {
	t.Helper()
	s := newStream(t)
	if s == nil {
		t.Fatal("peonifytest: newStream returned a nil stream")
	}
	h := &harness{t: t, s: s, f: f, unsupported: map[InspectCall]bool{}, claims: map[string]int{}}
	for _, c := range f.InspectorUnsupported {
		h.unsupported[c] = true
	}
	h.ext, _ = peonify.As[peonify.Extender](s)
	h.ins, _ = peonify.As[peonify.Inspector](s)
	h.enq, _ = peonify.As[peonify.Enqueuer](s)
	return h
}

// ctx returns a context that ends when the subtest ends.
func (h *harness) ctx() context.Context { return h.t.Context() }

// needLease skips the test when the stream's claims never expire.
func (h *harness) needLease() {
	h.t.Helper()
	if h.f.Lease == 0 {
		h.t.Skip("Features.Lease is 0: the stream's claims never expire")
	}
}

// needExtender skips the test when the stream cannot extend leases.
func (h *harness) needExtender() {
	h.t.Helper()
	h.needLease()
	if h.ext == nil {
		h.t.Skipf("%T does not implement peonify.Extender", h.s)
	}
}

// needInspector skips the test when the stream cannot be inspected.
func (h *harness) needInspector() {
	h.t.Helper()
	if h.ins == nil {
		h.t.Skipf("%T does not implement peonify.Inspector", h.s)
	}
}

// needEnqueuer skips the test when the stream has no Enqueue of its own.
func (h *harness) needEnqueuer() {
	h.t.Helper()
	if h.enq == nil {
		h.t.Skipf("%T does not implement peonify.Enqueuer: Enqueue's own checks do not apply to Features.Enqueue", h.s)
	}
}

// newTask returns a task with a fresh ID and a payload naming it.
func (h *harness) newTask() *peonify.Task {
	id := peonify.NewID()
	return &peonify.Task{
		ID:      id,
		Type:    "peonifytest." + h.t.Name(),
		Payload: []byte(`{"id":"` + id + `"}`),
	}
}

// newTasks returns n tasks made by newTask.
func (h *harness) newTasks(n int) []*peonify.Task {
	ts := make([]*peonify.Task, n)
	for i := range ts {
		ts[i] = h.newTask()
	}
	return ts
}

// tryEnqueue stores tasks with the stream's Enqueue, or Features.Enqueue.
func (h *harness) tryEnqueue(tasks ...*peonify.Task) error {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx(), h.f.Timeout)
	defer cancel()
	if h.enq != nil {
		return h.enq.Enqueue(ctx, tasks...)
	}
	if h.f.Enqueue == nil {
		h.t.Fatalf("%T does not implement peonify.Enqueuer: set Features.Enqueue to a function that stores tasks in it", h.s)
	}
	return h.f.Enqueue(ctx, h.s, tasks...)
}

// enqueue stores tasks and fails the test if that fails.
func (h *harness) enqueue(tasks ...*peonify.Task) {
	h.t.Helper()
	if err := h.tryEnqueue(tasks...); err != nil {
		h.t.Fatalf("Enqueue of %d task(s): %v", len(tasks), err)
	}
}

// poll calls Poll once and checks what every Poll must do: no error, no
// more than limit deliveries, and each delivery with a task.
func (h *harness) poll(limit int) []peonify.Delivery {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx(), h.f.Timeout)
	defer cancel()
	ds, err := h.s.Poll(ctx, limit)
	if err != nil {
		h.t.Fatalf("Poll(limit=%d): %v", limit, err)
	}
	if len(ds) > limit {
		h.t.Fatalf("Poll(limit=%d) returned %d deliveries: a stream must never claim more than limit", limit, len(ds))
	}
	for i, d := range ds {
		if d.Task == nil {
			h.t.Fatalf("Poll(limit=%d): delivery %d has a nil Task", limit, i)
		}
		h.claims[d.Task.ID]++
	}
	return ds
}

// collect polls with limit until it has n deliveries, failing the test if
// they do not come within Features.Timeout or if more than n come.
func (h *harness) collect(n, limit int) []peonify.Delivery {
	h.t.Helper()
	return h.collectBy(n, limit, time.Now().Add(h.f.Timeout))
}

// collectBy is collect with an explicit deadline.
func (h *harness) collectBy(n, limit int, deadline time.Time) []peonify.Delivery {
	h.t.Helper()
	got, ok := h.pollUntil(n, limit, deadline)
	if !ok {
		h.t.Fatalf("got %d of %d expected deliveries before the deadline (%s); delivered: %s",
			len(got), n, h.f.Timeout, describe(got))
	}
	if len(got) > n {
		h.t.Fatalf("got %d deliveries, expected %d: %s", len(got), n, describe(got))
	}
	return got
}

// pollUntil polls with limit until it has n deliveries or more, pausing
// while none come. It returns what came, and false if deadline passed
// first.
func (h *harness) pollUntil(n, limit int, deadline time.Time) ([]peonify.Delivery, bool) {
	h.t.Helper()
	var got []peonify.Delivery
	for len(got) < n {
		ds := h.poll(limit)
		got = append(got, ds...)
		if len(ds) > 0 {
			continue
		}
		if time.Now().After(deadline) {
			return got, false
		}
		h.pause(pollPause)
	}
	return got, true
}

// next waits for one delivery.
func (h *harness) next() peonify.Delivery {
	h.t.Helper()
	return h.collect(1, 1)[0]
}

// nextBy waits for one delivery until deadline.
func (h *harness) nextBy(deadline time.Time) peonify.Delivery {
	h.t.Helper()
	return h.collectBy(1, 1, deadline)[0]
}

// nothingFor polls for d and fails the test if anything is delivered.
func (h *harness) nothingFor(d time.Duration, why string) {
	h.t.Helper()
	h.nothingUntil(time.Now().Add(d), why)
}

// nothingUntil polls until `until` and fails the test if anything is
// delivered: why says why nothing may be.
func (h *harness) nothingUntil(until time.Time, why string) {
	h.t.Helper()
	if ds := h.quietUntil(until, why); len(ds) > 0 {
		h.failf("%s, but Poll returned %s", why, describe(ds))
	}
}

// leasedUntil polls until `until`, a time before the lease of a task the
// test holds ends, and fails the test if anything is delivered. A delivery
// from a poll that ended only after `until` means that the test ran too
// slowly to keep its lease, and makes the test inconclusive.
func (h *harness) leasedUntil(until time.Time, why string) {
	h.t.Helper()
	if ds := h.quietUntil(until, why); len(ds) > 0 {
		h.late = true
		h.failf("%s, but Poll returned %s", why, describe(ds))
	}
}

// nextAfter polls until `until`, failing the test if anything is delivered
// by then, and then waits for one delivery. why says why nothing may come
// before `until`.
func (h *harness) nextAfter(until time.Time, why string) peonify.Delivery {
	h.t.Helper()
	ds := h.quietUntil(until, why)
	switch {
	case len(ds) == 1:
		return ds[0]
	case len(ds) > 1:
		h.t.Fatalf("after %s, one task was expected, but Poll returned %s", why, describe(ds))
	}
	return h.nextBy(until.Add(h.f.Timeout))
}

// quietUntil polls until `until` (at least once) and fails the test if a
// poll that ended before `until` returned anything: such a task was
// certainly delivered too early. It returns what a poll that ended later
// returned, for the caller to judge: on a loaded machine a poll can start
// in time and return after the task is due.
func (h *harness) quietUntil(until time.Time, why string) []peonify.Delivery {
	h.t.Helper()
	for {
		ds := h.poll(10)
		end := time.Now()
		if len(ds) > 0 {
			if end.Before(until) {
				h.failf("%s, but Poll returned %s at %s", why, describe(ds), end.Format(time.StampMilli))
			}
			return ds
		}
		left := until.Sub(end)
		if left <= 0 {
			return nil
		}
		h.pause(min(pollPause, left))
		if !time.Now().Before(until) {
			return nil
		}
	}
}

// noteLate records that the test ran so slowly that a lease it relied on
// may have ended, when an operation on a claim ending at deadline returned
// too close to, or after, that deadline. A check that fails after that is
// inconclusive, not a bug.
func (h *harness) noteLate(deadline time.Time) {
	if h.f.Lease > 0 && !deadline.IsZero() && !time.Now().Before(deadline.Add(-slack)) {
		h.late = true
	}
}

// failf fails the test, or skips it as inconclusive if it ran too slowly
// to trust the leases it relied on.
func (h *harness) failf(format string, args ...any) {
	h.t.Helper()
	if h.late {
		h.t.Skipf("inconclusive: the test ran too slowly for the %s lease (is the machine overloaded?), so this may not be a bug: "+format,
			append([]any{h.f.Lease}, args...)...)
	}
	h.t.Fatalf(format, args...)
}

// pause waits for d or until the test ends.
func (h *harness) pause(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-h.ctx().Done():
	}
}

// ack acknowledges deliveries and fails the test on an error.
func (h *harness) ack(ds ...peonify.Delivery) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx(), h.f.Timeout)
	defer cancel()
	err := h.s.Ack(ctx, ds...)
	h.noteLate(earliestDeadline(ds))
	if err != nil {
		h.failf("Ack of %s: %v", describe(ds), err)
	}
}

// nack calls Nack and fails the test on an error.
func (h *harness) nack(d peonify.Delivery, opts peonify.NackOptions) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx(), h.f.Timeout)
	defer cancel()
	err := h.s.Nack(ctx, d, opts)
	h.noteLate(d.Deadline)
	if err != nil {
		h.failf("Nack(%s) of %s: %v", opts.Outcome, describe1(d), err)
	}
}

// extend calls Extend and fails the test on an error.
func (h *harness) extend(d peonify.Delivery) peonify.Delivery {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx(), h.f.Timeout)
	defer cancel()
	nd, err := h.ext.Extend(ctx, d, h.f.Lease)
	h.noteLate(d.Deadline)
	if err != nil {
		h.failf("Extend of %s (lease ends %s): %v", describe1(d), d.Deadline.Format(time.StampMilli), err)
	}
	if nd.Task == nil || nd.Task.ID != d.Task.ID {
		h.t.Fatalf("Extend of %s returned a delivery of another task: %s", describe1(d), describe1(nd))
	}
	return nd
}

// afterLease returns when a task whose claim ends at deadline may at the
// latest be seen again if it was not acked: the deadline plus Settle. For a
// stream without leases it is Settle from now.
func (h *harness) afterLease(deadline time.Time) time.Time {
	now := time.Now().Add(h.f.Settle)
	if h.f.Lease == 0 || deadline.Before(now) {
		return now
	}
	return deadline.Add(h.f.Settle)
}

// reclaim polls while the lease of d holds, failing the test if anything
// is delivered, then waits for the task to be claimed again and checks the
// new claim.
func (h *harness) reclaim(d peonify.Delivery) peonify.Delivery {
	h.t.Helper()
	d2 := h.nextAfter(d.Deadline.Add(-slack), "the task is leased until "+d.Deadline.Format(time.StampMilli))
	if d2.Task.ID != d.Task.ID {
		h.t.Fatalf("after the lease of %s ended, Poll returned another task: %s", describe1(d), describe1(d2))
	}
	if d2.Task.Attempt != d.Task.Attempt+1 {
		h.t.Errorf("redelivery after an expired lease has Attempt %d, want %d: every claim counts as an attempt",
			d2.Task.Attempt, d.Task.Attempt+1)
	}
	if d2.Token == d.Token {
		h.t.Errorf("two claims of task %s have the same Token %d: the stream cannot tell the stale one from the current one",
			d.Task.ID, d.Token)
	}
	return d2
}

// checkStaleResult checks the result of an Ack, Nack or Extend of a claim
// that is no longer current: nil or an error wrapping ErrLeaseLost.
func (h *harness) checkStaleResult(op string, err error) {
	h.t.Helper()
	if err != nil && !errors.Is(err, peonify.ErrLeaseLost) {
		h.t.Errorf("stale %s returned %v: want nil or an error wrapping peonify.ErrLeaseLost", op, err)
	}
}

// checkTask compares a delivered task with the one that was enqueued.
func (h *harness) checkTask(got, want *peonify.Task) {
	h.t.Helper()
	if got.ID != want.ID {
		h.t.Errorf("delivered ID %q, want %q", got.ID, want.ID)
	}
	if got.Type != want.Type {
		h.t.Errorf("task %s: delivered Type %q, want %q", want.ID, got.Type, want.Type)
	}
	if string(got.Payload) != string(want.Payload) {
		h.t.Errorf("task %s: payload of %d bytes differs from the %d bytes enqueued%s",
			want.ID, len(got.Payload), len(want.Payload), firstDiff(got.Payload, want.Payload))
	}
	if !h.f.NoHeaders && !equalHeaders(got.Headers, want.Headers) {
		h.t.Errorf("task %s: delivered Headers %q, want %q (set Features.NoHeaders if the stream cannot carry them)",
			want.ID, got.Headers, want.Headers)
	}
	if got.MaxAttempts != want.MaxAttempts {
		h.t.Errorf("task %s: delivered MaxAttempts %d, want %d", want.ID, got.MaxAttempts, want.MaxAttempts)
	}
	if !h.f.NoPriority && got.Priority != want.Priority {
		h.t.Errorf("task %s: delivered Priority %d, want %d", want.ID, got.Priority, want.Priority)
	}
	if got.EnqueuedAt.IsZero() {
		h.t.Errorf("task %s: delivered with a zero EnqueuedAt: Enqueue sets it (see Task.Prepare)", want.ID)
	}
}

// equalHeaders reports whether two header maps are equal, nil and empty
// being the same.
func equalHeaders(a, b map[string]string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return maps.Equal(a, b)
}

// firstDiff describes where two byte slices first differ.
func firstDiff(got, want []byte) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf(" (first difference at byte %d: got %#02x, want %#02x)", i, got[i], want[i])
		}
	}
	return ""
}

// describe1 names one delivery in failure messages.
func describe1(d peonify.Delivery) string {
	if d.Task == nil {
		return "a delivery without a task"
	}
	return fmt.Sprintf("task %s (attempt %d, token %d)", d.Task.ID, d.Task.Attempt, d.Token)
}

// describe names deliveries in failure messages.
func describe(ds []peonify.Delivery) string {
	if len(ds) == 0 {
		return "nothing"
	}
	parts := make([]string, 0, min(len(ds), 5))
	for i, d := range ds {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(ds)-i))
			break
		}
		parts = append(parts, describe1(d))
	}
	return strings.Join(parts, ", ")
}

// noPanic runs fn and turns a panic into a test failure naming the call.
func noPanic(t *testing.T, call string, fn func()) {
	t.Helper()
	defer func() {
		if v := recover(); v != nil {
			t.Errorf("%s panicked: %v; a stream must return an error for bad input", call, v)
		}
	}()
	fn()
}
