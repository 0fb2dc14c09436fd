package peonifytest

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/peonify/peonify"
)

// testRoundTrip checks that enqueue then poll returns every field a stream
// carries byte-exactly, and that a first delivery is attempt 1.
func testRoundTrip(h *harness) {
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	size := largePayload
	if h.f.MaxPayload > 0 {
		size = min(size, h.f.MaxPayload)
	}
	large := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{'p', 'e', 'o', 'n', 'i', 'f', 'y'}).Read(large)

	payloads := [][]byte{every, nil, {}, large, []byte(`{"to":"ada@example.com","n":1}`)}
	want := make(map[string]*peonify.Task, len(payloads))
	in := make([]*peonify.Task, 0, len(payloads))
	for i, p := range payloads {
		tk := h.newTask()
		tk.Payload = p
		tk.MaxAttempts = i
		tk.Priority = 0
		if i%2 == 0 {
			tk.Headers = map[string]string{
				"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				"tenant":      "zoë ✓ \"quoted\" \x01",
				"empty":       "",
			}
		}
		want[tk.ID] = tk
		in = append(in, tk.Clone())
	}
	h.enqueue(in...)

	ds := h.collect(len(in), len(in))
	seen := make(map[string]bool, len(ds))
	for _, d := range ds {
		w := want[d.Task.ID]
		switch {
		case w == nil:
			h.t.Errorf("Poll returned a task that was not enqueued: %s", describe1(d))
			continue
		case seen[d.Task.ID]:
			h.t.Errorf("Poll returned task %s twice", d.Task.ID)
		}
		seen[d.Task.ID] = true
		h.checkTask(d.Task, w)
		if d.Task.Attempt != 1 {
			h.t.Errorf("task %s: first delivery has Attempt %d, want 1", d.Task.ID, d.Task.Attempt)
		}
		if d.Task.LastError != "" {
			h.t.Errorf("task %s: first delivery has LastError %q, want none", d.Task.ID, d.Task.LastError)
		}
	}
	h.ack(ds...)
}

// testEnqueueCopiesTask checks that a stream does not keep the caller's
// payload or headers: a producer may reuse its buffers once Enqueue
// returns.
func testEnqueueCopiesTask(h *harness) {
	want := h.newTask()
	want.Headers = map[string]string{"k": "v"}
	in := want.Clone()
	h.enqueue(in)
	for i := range in.Payload {
		in.Payload[i] = 'x'
	}
	in.Headers["k"] = "changed"
	in.Headers["added"] = "after Enqueue"

	d := h.next()
	if string(d.Task.Payload) == string(in.Payload) {
		h.t.Fatalf("the delivered payload changed when the producer reused its buffer after Enqueue: Enqueue must copy the task (see Task.Clone)")
	}
	h.checkTask(d.Task, want)
	h.ack(d)
}

// testEnqueueFills checks that Enqueue gives a task without an ID and
// EnqueuedAt both, as Task.Prepare does.
func testEnqueueFills(h *harness) {
	h.needEnqueuer()
	tk := &peonify.Task{Type: "peonifytest.no-id", Payload: []byte("x")}
	before := time.Now()
	h.enqueue(tk)
	if tk.ID == "" {
		h.t.Fatal("Enqueue of a task without an ID left Task.ID empty: call Task.Prepare at the top of Enqueue")
	}
	if tk.EnqueuedAt.IsZero() {
		h.t.Error("Enqueue of a task without EnqueuedAt left it zero: call Task.Prepare at the top of Enqueue")
	} else if tk.EnqueuedAt.Before(before.Add(-time.Second)) {
		h.t.Errorf("Enqueue set EnqueuedAt to %s, before the call started at %s", tk.EnqueuedAt, before)
	}
	d := h.next()
	if d.Task.ID != tk.ID {
		h.t.Errorf("delivered ID %q, want the ID that Enqueue filled in, %q", d.Task.ID, tk.ID)
	}
	h.ack(d)
}

// testPollEmpty checks that Poll of an empty stream returns nothing, with no
// error, without waiting for the caller's deadline.
func testPollEmpty(h *harness) {
	start := time.Now()
	if ds := h.poll(10); len(ds) != 0 {
		h.t.Fatalf("Poll of a new, empty stream returned %s: newStream must return an empty, isolated stream", describe(ds))
	}
	h.t.Logf("an empty Poll took %s", time.Since(start).Round(time.Microsecond))
}

// testPollContext checks that Poll returns when its context ends, and
// claims nothing with a context that has already ended.
func testPollContext(h *harness) {
	ctx, cancel := context.WithCancel(h.ctx())
	stop := time.AfterFunc(20*time.Millisecond, cancel)
	defer stop.Stop()
	start := time.Now()
	ds, _ := h.s.Poll(ctx, 10)
	if took := time.Since(start); took > h.f.Timeout {
		h.t.Errorf("Poll took %s to return after its context was cancelled; it must return when ctx ends", took)
	}
	if len(ds) != 0 {
		h.t.Errorf("Poll of an empty stream returned %s", describe(ds))
	}

	h.enqueue(h.newTask())
	ctx, cancel = context.WithCancel(h.ctx())
	cancel()
	ds, err := h.s.Poll(ctx, 10)
	if len(ds) != 0 && err == nil {
		// Claiming with a dead context is allowed, but the claim must
		// then be usable: hand it back.
		h.ack(ds...)
		return
	}
	if len(ds) != 0 {
		h.t.Errorf("Poll with an ended context returned both %s and the error %v: return one or the other", describe(ds), err)
	}
	d := h.next()
	if d.Task.Attempt != 1 {
		h.t.Errorf("after a Poll with an ended context returned no task, the task came with Attempt %d: "+
			"that Poll claimed it without returning it", d.Task.Attempt)
	}
	h.ack(d)
}

// testPollMax checks that Poll never returns more than limit, whatever is
// available, and that Poll(1), Poll(3) and Poll(more than left) deliver
// every task once.
func testPollMax(h *harness) {
	tasks := h.newTasks(5)
	h.enqueue(tasks...)
	var got []peonify.Delivery
	got = append(got, h.poll(1)...)
	got = append(got, h.poll(3)...)
	got = append(got, h.collect(len(tasks)-len(got), 10)...)

	ids := make([]string, 0, len(got))
	for _, d := range got {
		ids = append(ids, d.Task.ID)
	}
	slices.Sort(ids)
	want := make([]string, 0, len(tasks))
	for _, tk := range tasks {
		want = append(want, tk.ID)
	}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		h.t.Errorf("polling 5 tasks with limit 1, 3 and 10 delivered %v, want each of %v once", ids, want)
	}
	h.ack(got...)
	h.nothingUntil(h.afterLease(latestDeadline(got)), "every task was acked")
}

// testPollDeadline checks that a delivery's Deadline matches Features.Lease.
func testPollDeadline(h *harness) {
	h.enqueue(h.newTask())
	start := time.Now()
	d := h.next()
	end := time.Now()
	defer h.ack(d)
	if h.f.Lease == 0 {
		if !d.Deadline.IsZero() {
			h.t.Errorf("delivery has Deadline %s but Features.Lease is 0: set Features.Lease to the stream's lease",
				d.Deadline.Format(time.StampMilli))
		}
		return
	}
	if d.Deadline.IsZero() {
		h.t.Fatalf("delivery has a zero Deadline but Features.Lease is %s: set Delivery.Deadline so the processor extends the lease", h.f.Lease)
	}
	tol := max(slack, h.f.Lease/4)
	lo, hi := start.Add(h.f.Lease-tol), end.Add(h.f.Lease+tol)
	if d.Deadline.Before(lo) || d.Deadline.After(hi) {
		h.t.Errorf("delivery Deadline is %s after the poll started; want about Features.Lease (%s)",
			d.Deadline.Sub(start).Round(time.Millisecond), h.f.Lease)
	}
}

// testLeasedInvisible checks that a claimed task is not returned by another
// Poll while its lease holds.
func testLeasedInvisible(h *harness) {
	tasks := h.newTasks(2)
	h.enqueue(tasks...)
	d1 := h.next()
	d2 := h.next()
	if d1.Task.ID == d2.Task.ID {
		h.t.Fatalf("Poll returned task %s again while the first claim held it", d1.Task.ID)
	}
	until := time.Now().Add(h.f.Settle)
	if h.f.Lease > 0 {
		until = minTime(until, earliestDeadline([]peonify.Delivery{d1, d2}).Add(-slack))
	}
	h.leasedUntil(until, "both tasks are leased")
	h.ack(d1, d2)
}

// testConcurrentPollers checks that 8 pollers acking 500 tasks never hold
// the same task at once and ack each task exactly once.
func testConcurrentPollers(h *harness) {
	const n, pollers, batch = 500, 8, 10
	tasks := h.newTasks(n)
	for chunk := range slices.Chunk(tasks, 100) {
		h.enqueue(chunk...)
	}

	ctx, cancel := context.WithTimeout(h.ctx(), h.f.Timeout)
	defer cancel()
	var (
		mu    sync.Mutex
		held  = make(map[string]peonify.Delivery) // task ID -> claim being acked
		owner = make(map[string]int)              // task ID -> poller holding it
		acked = make(map[string]int)              // task ID -> acks
		late  bool                                // a poller held a task past its lease: duplicates are then allowed
	)
	start := time.Now()
	var wg sync.WaitGroup
	for p := range pollers {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				finished := len(acked) >= n
				mu.Unlock()
				if finished {
					return
				}
				ds, err := h.s.Poll(ctx, batch)
				if err != nil {
					if ctx.Err() == nil {
						h.t.Errorf("poller %d: Poll: %v", p, err)
						cancel()
					}
					return
				}
				if len(ds) > batch {
					h.t.Errorf("poller %d: Poll(limit=%d) returned %d deliveries", p, batch, len(ds))
				}
				if len(ds) == 0 {
					sleep(ctx, time.Millisecond)
					continue
				}
				mu.Lock()
				for _, d := range ds {
					if prev, ok := held[d.Task.ID]; ok {
						if h.f.Lease == 0 || time.Now().Before(prev.Deadline.Add(-slack)) {
							h.t.Errorf("task %s was delivered to poller %d while poller %d held it", d.Task.ID, p, owner[d.Task.ID])
						}
						late = true
					}
					held[d.Task.ID], owner[d.Task.ID] = d, p
				}
				mu.Unlock()
				err = h.s.Ack(ctx, ds...)
				mu.Lock()
				if h.f.Lease > 0 && !time.Now().Before(earliestDeadline(ds).Add(-slack)) {
					late = true
				}
				if err != nil && !(late && errors.Is(err, peonify.ErrLeaseLost)) {
					mu.Unlock()
					h.t.Errorf("poller %d: Ack of %d deliveries: %v", p, len(ds), err)
					cancel()
					return
				}
				for _, d := range ds {
					if held[d.Task.ID].Token == d.Token {
						delete(held, d.Task.ID)
					}
					acked[d.Task.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	h.t.Logf("%d pollers acked %d distinct tasks in %s", pollers, len(acked), time.Since(start).Round(time.Millisecond))

	missing := 0
	for _, tk := range tasks {
		switch c := acked[tk.ID]; {
		case c == 0:
			missing++
		case c > 1 && late:
			h.t.Logf("task %s was delivered twice: a poller held it past its lease because the test ran slowly", tk.ID)
		case c > 1:
			h.t.Errorf("task %s was delivered and acked %d times, want once", tk.ID, c)
		}
		delete(acked, tk.ID)
	}
	if missing > 0 {
		h.t.Errorf("%d of %d tasks were not delivered within %s", missing, n, h.f.Timeout)
	}
	for id := range acked {
		h.t.Errorf("Poll returned task %s, which was not enqueued", id)
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// latestDeadline returns the latest lease deadline of ds.
func latestDeadline(ds []peonify.Delivery) time.Time {
	var t time.Time
	for _, d := range ds {
		if d.Deadline.After(t) {
			t = d.Deadline
		}
	}
	return t
}

// earliestDeadline returns the earliest lease deadline of ds.
func earliestDeadline(ds []peonify.Delivery) time.Time {
	var t time.Time
	for _, d := range ds {
		if t.IsZero() || d.Deadline.Before(t) {
			t = d.Deadline
		}
	}
	return t
}

// minTime returns the earlier of a and b.
func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
