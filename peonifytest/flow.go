package peonifytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/peonify/peonify"
)

// The flow-control checks. Those that need a peonify.Limiter skip, saying
// why, for a stream that is not one; the Limiter check fails for such a
// stream unless Features.NoLimiter says it is meant. Each limit applies to
// the check's own task type, so that nothing else is held back.

// blockedPollTime is how long a Poll whose every ready task a limit holds
// back may take at most: it must return at once, not wait for a permit.
const blockedPollTime = time.Second

// wakeTime is how long the suite waits for Wake after a permit was freed
// or a rate token fell due: a held-back task starts within milliseconds
// of that, so a second is generous even on a loaded machine.
const wakeTime = time.Second

// typeOf returns the task type of the check: every task newTask makes has
// it.
func (h *harness) typeOf() string { return h.newTask().Type }

// keyed returns n new tasks with key.
func (h *harness) keyed(key string, n int) []*peonify.Task {
	ts := h.newTasks(n)
	for _, tk := range ts {
		tk.Key = key
	}
	return ts
}

// limiter returns the stream's peonify.Limiter, found with peonify.As, or
// skips the test.
func (h *harness) limiter() peonify.Limiter {
	h.t.Helper()
	lim, ok := peonify.As[peonify.Limiter](h.s)
	switch {
	case !ok && h.f.NoLimiter:
		h.t.Skip("Features.NoLimiter: the stream does not enforce limits")
	case !ok:
		h.t.Skipf("%T is not a peonify.Limiter: it cannot enforce limits (the Limiter check says whether that is meant)", h.s)
	}
	return lim
}

// setLimits gives the stream limits, as peonify.Limits does, failing the
// test if it refuses them, and then starts it if it is a peonify.Starter:
// the processor sets a stream's limits before it starts it. unsupported
// names the Features flag of a kind of limit that the check needs; the
// check is skipped if it is set.
func (h *harness) setLimits(unsupported string, limits ...peonify.Limit) {
	h.t.Helper()
	lim := h.needLimits(unsupported)
	if err := lim.SetLimits(limits); err != nil {
		h.t.Fatalf("SetLimits(%+v): %v", limits, err)
	}
	if st, ok := peonify.As[peonify.Starter](h.s); ok {
		if err := st.Start(h.ctx()); err != nil {
			h.t.Fatalf("Start: %v", err)
		}
	}
}

// needLimits returns the stream's peonify.Limiter, or skips the test if
// the stream is not one, or if unsupported names a Features flag (of a
// kind of limit the check needs) that is set.
func (h *harness) needLimits(unsupported string) peonify.Limiter {
	h.t.Helper()
	lim := h.limiter()
	flags := map[string]bool{"NoRateLimit": h.f.NoRateLimit, "NoOrdered": h.f.NoOrdered, "NoLocalLimit": h.f.NoLocalLimit}
	if flags[unsupported] {
		h.t.Skipf("Features.%s: the stream does not enforce this kind of limit", unsupported)
	}
	return lim
}

// mayHaveExpired reports whether the lease of one of held may have ended
// by now, so that its task may be claimed again, freeing its permit.
func (h *harness) mayHaveExpired(held []peonify.Delivery) bool {
	dl := earliestDeadline(held)
	return h.f.Lease > 0 && !dl.IsZero() && !time.Now().Before(dl.Add(-slack))
}

// quietWhileHeld polls for Settle and fails the test if anything is
// claimed: why says why nothing may be. It stops early, just before the
// first lease of held ends: a claim after that is inconclusive, since the
// permit of an expired lease comes back.
func (h *harness) quietWhileHeld(held []peonify.Delivery, why string) {
	h.t.Helper()
	until := time.Now().Add(h.f.Settle)
	if dl := earliestDeadline(held); h.f.Lease > 0 && !dl.IsZero() && dl.Add(-slack).Before(until) {
		until = dl.Add(-slack)
	}
	h.leasedUntil(until, why)
}

// claimExactly polls with Poll(limit) until n tasks are claimed, then for
// Settle more, and fails the test unless exactly n were: why says why no
// more may be. held are the claims the test holds meanwhile.
func (h *harness) claimExactly(n, limit int, held []peonify.Delivery, why string) []peonify.Delivery {
	h.t.Helper()
	deadline := time.Now().Add(h.f.Timeout)
	got, ok := h.pollUntil(n, limit, deadline)
	if !ok {
		h.t.Fatalf("%d of %d tasks were claimed within %s (%s): %s; a limit holds back a task only while it must",
			len(got), n, h.f.Timeout, why, describe(got))
	}
	all := append(slices.Clone(held), got...)
	if len(got) > n {
		if h.mayHaveExpired(all) {
			h.late = true
		}
		h.failf("%s, but Poll claimed %d tasks, not %d: %s", why, len(got), n, describe(got))
	}
	h.quietWhileHeld(all, why)
	return got
}

// countKeys counts deliveries per Task.Key.
func countKeys(ds []peonify.Delivery) map[string]int {
	n := make(map[string]int)
	for _, d := range ds {
		n[d.Task.Key]++
	}
	return n
}

// wantFirstAttempts checks that the attempt of each delivery counts only
// the claims Poll returned: a task that a limit held back was not claimed
// meanwhile. It is Attempt 1 unless an expired lease or a retry brought it
// back.
func (h *harness) wantFirstAttempts(ds []peonify.Delivery) {
	h.t.Helper()
	for _, d := range ds {
		if want := h.claims[d.Task.ID]; d.Task.Attempt != want {
			h.t.Errorf("%s was held back by a limit and then claimed as attempt %d, but Poll returned it %d time(s): a held-back task is not claimed, so it is not an attempt",
				describe1(d), d.Task.Attempt, want)
		}
	}
}

// drainWake empties ch.
func drainWake(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// testKeyRoundTrip checks that Task.Key, of up to peonify.MaxKeyLen bytes,
// is delivered as enqueued, and shown by an Inspector. Every stream
// carries Key, whether it enforces limits or not; one that cannot sets
// Features.NoKey, and the check then makes sure that it does not.
func testKeyRoundTrip(h *harness) {
	key := "peonifytest/clé/"
	key += strings.Repeat("é", (peonify.MaxKeyLen-len(key))/2)
	key += strings.Repeat("k", peonify.MaxKeyLen-len(key))
	tk, plain := h.newTask(), h.newTask()
	tk.Key = key
	h.enqueue(tk.Clone(), plain)
	ds := h.collect(2, 10)
	defer h.ack(ds...)
	got := map[string]string{}
	for _, d := range ds {
		got[d.Task.ID] = d.Task.Key
	}
	if h.f.NoKey {
		if got[tk.ID] == key {
			h.t.Errorf("Features.NoKey says the stream does not carry Task.Key, but it delivered it: remove Features.NoKey")
			return
		}
		h.t.Skip("Features.NoKey: the stream does not carry Task.Key")
	}
	if got[tk.ID] != key {
		h.t.Errorf("task %s enqueued with a %d-byte Key was delivered with Key %q, want %q: every stream carries Task.Key (set Features.NoKey if it cannot)",
			tk.ID, len(key), got[tk.ID], key)
	}
	if got[plain.ID] != "" {
		h.t.Errorf("task %s enqueued without a Key was delivered with Key %q", plain.ID, got[plain.ID])
	}
	if info, ok := h.get(tk.ID, peonify.StateRunning); ok && info.Task.Key != key {
		h.t.Errorf("Inspector.Get(%s).Task.Key = %q, want %q", tk.ID, info.Task.Key, key)
	}
}

// testListByKey checks that Inspector.List honours ListOptions.Key.
func testListByKey(h *harness) {
	h.needInspector()
	if h.f.NoKey {
		h.t.Skip("Features.NoKey: the stream does not carry Task.Key")
	}
	a, b := h.keyed("peonifytest-a", 2), h.keyed("peonifytest-b", 1)
	h.enqueue(append(a, b...)...)
	h.wantCount(peonify.StatePending, 3)
	for _, c := range []struct {
		opts peonify.ListOptions
		want []string
	}{
		{peonify.ListOptions{State: peonify.StatePending, Key: "peonifytest-a"}, []string{a[0].ID, a[1].ID}},
		{peonify.ListOptions{State: peonify.StatePending, Key: "peonifytest-a", After: a[0].ID}, []string{a[1].ID}},
		{peonify.ListOptions{State: peonify.StatePending, Key: "peonifytest-b"}, []string{b[0].ID}},
		{peonify.ListOptions{State: peonify.StatePending, Key: "peonifytest-none"}, nil},
		{peonify.ListOptions{State: peonify.StatePending, Key: "peonifytest-a", Type: "peonifytest.no-such-type"}, nil},
	} {
		infos, err := h.ins.List(h.ctx(), c.opts)
		if !h.answered(callOf("List", peonify.StatePending), err) {
			return
		}
		if err != nil {
			h.t.Fatalf("Inspector.List(%+v): %v", c.opts, err)
		}
		var got []string
		for _, ti := range infos {
			got = append(got, ti.Task.ID)
			if ti.Task.Key != c.opts.Key {
				h.t.Errorf("Inspector.List(%+v) lists task %s with Key %q", c.opts, ti.Task.ID, ti.Task.Key)
			}
		}
		if !slices.Equal(got, c.want) {
			h.t.Errorf("Inspector.List(%+v) = %v, want %v: List honours ListOptions.Key", c.opts, got, c.want)
		}
	}
}

// testLimiter checks that a stream is a peonify.Limiter unless
// Features.NoLimiter says it is not, that SetLimits checks its limits,
// and that it accepts every kind of limit except those the Features
// flags name, which it refuses with an error wrapping
// errors.ErrUnsupported, so that no limit is ever silently ignored.
func testLimiter(h *harness) {
	lim, ok := peonify.As[peonify.Limiter](h.s)
	switch {
	case !ok && h.f.NoLimiter:
		h.t.Skip("Features.NoLimiter: the stream is not a peonify.Limiter, so peonify.Limits fails on it with errors.ErrUnsupported")
	case !ok:
		h.t.Fatalf("%T is not a peonify.Limiter (looked for with peonify.As): it cannot enforce flow-control limits. "+
			"Implement peonify.Limiter, or set Features.NoLimiter if the stream cannot enforce limits in its claims and its documentation says so; "+
			"a wrapper needs an Unwrap method", h.s)
	case h.f.NoLimiter:
		h.t.Fatalf("%T is a peonify.Limiter, but Features.NoLimiter says it is not: remove Features.NoLimiter", h.s)
	}
	typ := h.typeOf()
	var ce *peonify.ConfigError
	if err := lim.SetLimits([]peonify.Limit{{Type: typ}}); !errors.As(err, &ce) {
		h.t.Errorf("SetLimits of a limit that limits nothing returned %v, want the *peonify.ConfigError of peonify.NormalizeLimits", err)
	}
	kinds := []struct {
		what        string
		unsupported bool
		flag        string
		limit       peonify.Limit
	}{
		{"a concurrency limit", false, "", peonify.Limit{Type: typ, Concurrency: 3}},
		{"a per-key limit with KeyConcurrency", false, "", peonify.Limit{Type: typ, PerKey: true, Concurrency: 1, KeyConcurrency: map[string]int{"k": 0}}},
		{"a fair limit", false, "", peonify.Limit{Type: typ, PerKey: true, Fair: true}},
		{"a rate limit", h.f.NoRateLimit, "NoRateLimit", peonify.Limit{Type: typ, Rate: 10, Burst: 2}},
		{"an ordered limit", h.f.NoOrdered, "NoOrdered", peonify.Limit{Type: typ, PerKey: true, Ordered: true}},
		{"a local limit", h.f.NoLocalLimit, "NoLocalLimit", peonify.Limit{Type: typ, Concurrency: 2, Local: true}},
	}
	for _, k := range kinds {
		err := lim.SetLimits([]peonify.Limit{k.limit})
		switch {
		case k.unsupported && err == nil:
			h.t.Errorf("SetLimits accepted %s, but Features.%s says the stream cannot enforce it: remove the flag, or refuse such a limit with an error wrapping errors.ErrUnsupported",
				k.what, k.flag)
		case k.unsupported && !errors.Is(err, errors.ErrUnsupported):
			h.t.Errorf("SetLimits of %s returned %v; Features.%s says the stream cannot enforce it, so the error must wrap errors.ErrUnsupported", k.what, err, k.flag)
		case !k.unsupported && err != nil && k.flag != "":
			h.t.Errorf("SetLimits of %s: %v; set Features.%s if the stream cannot enforce it", k.what, err, k.flag)
		case !k.unsupported && err != nil:
			h.t.Errorf("SetLimits of %s: %v; every Limiter enforces it", k.what, err)
		}
	}
	if err := lim.SetLimits([]peonify.Limit{{Type: typ, Concurrency: 1}, {Name: "peonifytest-second", Type: typ, PerKey: true, Fair: true}}); err != nil {
		h.t.Fatalf("SetLimits of two limits: %v", err)
	}
	stats, err := lim.LimitStats(h.ctx())
	if err != nil {
		h.t.Fatalf("LimitStats: %v", err)
	}
	if len(stats) != 2 || stats[0].Name != typ || stats[1].Name != "peonifytest-second" {
		h.t.Errorf("LimitStats = %+v, want the stats of %s then peonifytest-second, in the order SetLimits was given them", stats, typ)
	}
	if err := lim.SetLimits(nil); err != nil {
		h.t.Errorf("SetLimits(nil) returned %v, want nil: no limits", err)
	}
}

// testLimitConcurrency checks a Concurrency limit on a task type: a Poll
// with room for many claims only as many as the limit, tasks of other
// types are claimed as usual, an Ack frees one permit and the next Poll
// claims one held-back task, as its first attempt.
func testLimitConcurrency(h *harness) {
	typ := h.typeOf()
	h.setLimits("", peonify.Limit{Type: typ, Concurrency: 2})
	tasks := h.newTasks(5)
	other := h.newTask()
	other.Type = typ + ".unlimited"
	h.enqueue(append(tasks, other)...)

	ds := h.claimExactly(3, 10, nil, "a Concurrency 2 limit on the type of 5 tasks lets 2 run, and a task of another type runs as usual")
	var held []peonify.Delivery
	for _, d := range ds {
		if d.Task.Type == typ {
			held = append(held, d)
		} else {
			h.ack(d)
		}
	}
	if len(held) != 2 {
		h.t.Fatalf("Poll claimed %d tasks of the limited type and %d of the other, want 2 and 1", len(held), len(ds)-len(held))
	}
	h.ack(held[0])
	next := h.claimExactly(1, 10, held[1:], "an Ack freed one permit of a Concurrency 2 limit")
	h.wantFirstAttempts(append(held, next...))
	h.ack(held[1])
	h.ack(next...)
	rest := h.claimExactly(2, 10, nil, "the two remaining tasks fit the limit")
	h.wantFirstAttempts(rest)
	h.ack(rest...)
}

// testLimitLocal checks a Local concurrency limit: with one stream it
// holds back what a global one would.
func testLimitLocal(h *harness) {
	typ := h.typeOf()
	h.setLimits("NoLocalLimit", peonify.Limit{Type: typ, Concurrency: 1, Local: true})
	h.enqueue(h.newTasks(3)...)
	ds := h.claimExactly(1, 10, nil, "a Local Concurrency 1 limit lets this stream run one task")
	h.ack(ds...)
	ds = h.claimExactly(1, 10, nil, "an Ack freed the one permit of a Local Concurrency 1 limit")
	h.wantFirstAttempts(ds)
	h.ack(ds...)
}

// testLimitPerKey checks a PerKey Concurrency limit with a KeyConcurrency
// override and a key held with KeyConcurrency 0: each key runs up to its
// own limit, a held key runs nothing, and a task without a key is not
// limited.
func testLimitPerKey(h *harness) {
	typ := h.typeOf()
	h.setLimits("", peonify.Limit{Type: typ, PerKey: true, Concurrency: 1, KeyConcurrency: map[string]int{"gold": 2, "held": 0}})
	tasks := slices.Concat(h.keyed("held", 2), h.keyed("a", 3), h.keyed("gold", 3), h.keyed("", 1))
	h.enqueue(tasks...)

	ds := h.claimExactly(4, 20, nil, "a PerKey limit of 1 lets key a run 1 task, key gold 2 (KeyConcurrency), key held none (KeyConcurrency 0), and a task without a key run")
	if n := countKeys(ds); n["a"] != 1 || n["gold"] != 2 || n[""] != 1 {
		h.t.Fatalf("Poll claimed tasks of keys %v, want a:1, gold:2, and 1 without a key (held:0)", n)
	}
	h.wantFirstAttempts(ds)
	var a peonify.Delivery
	var others []peonify.Delivery
	for _, d := range ds {
		if d.Task.Key == "a" {
			a = d
		} else {
			others = append(others, d)
		}
	}
	h.ack(a)
	next := h.claimExactly(1, 20, others, "an Ack of key a's task freed key a's one permit")
	if next[0].Task.Key != "a" {
		h.t.Errorf("after an Ack of key a's task, Poll claimed %s of key %q, want a task of key a", describe1(next[0]), next[0].Task.Key)
	}
	h.wantFirstAttempts(next)
	h.ack(next...)
	h.ack(others...)
}

// testLimitNoHeadOfLineBlocking checks that a key saturated by a PerKey
// limit, with a long backlog ahead of the other key's task in the queue,
// does not stop that task from being claimed, even by a Poll with room
// for only two.
func testLimitNoHeadOfLineBlocking(h *harness) {
	typ := h.typeOf()
	h.setLimits("", peonify.Limit{Type: typ, PerKey: true, Concurrency: 1})
	h.enqueue(h.keyed("busy", 50)...)
	h.enqueue(h.keyed("other", 1)...)
	ds := h.claimExactly(2, 2, nil, "key busy may run 1 task, and key other's task must not wait behind busy's backlog")
	if n := countKeys(ds); n["busy"] != 1 || n["other"] != 1 {
		h.t.Errorf("Poll claimed tasks of keys %v, want one of busy and one of other: a saturated key blocks no other key", n)
	}
	h.ack(ds...)
}

// testLimitFairness checks that keys take turns: key A's 40 tasks were
// enqueued before key B's 4, and a fair PerKey limit still claims B's
// early, in the first few polls, not after A's backlog.
func testLimitFairness(h *harness) {
	typ := h.typeOf()
	h.setLimits("", peonify.Limit{Type: typ, PerKey: true, Fair: true})
	const nA, nB = 40, 4
	h.enqueue(h.keyed("A", nA)...)
	h.enqueue(h.keyed("B", nB)...)
	h.wantCount(peonify.StatePending, nA+nB)

	var order []string
	bAt := make([]int, 0, nB)
	deadline := time.Now().Add(h.f.Timeout)
	for len(bAt) < nB && len(order) < nA+nB {
		ds := h.poll(4)
		for _, d := range ds {
			order = append(order, d.Task.Key)
			if d.Task.Key == "B" {
				bAt = append(bAt, len(order))
			}
		}
		h.ack(ds...)
		if len(ds) == 0 {
			if time.Now().After(deadline) {
				h.t.Fatalf("%d of %d tasks were claimed within %s", len(order), nA+nB, h.f.Timeout)
			}
			h.pause(pollPause)
		}
	}
	// Round the keys, B's 4 tasks are claims 2, 4, 6 and 8; allow some
	// slack for a store that sees the last enqueues a moment late.
	if last := 2*nB + 4; len(bAt) < nB || bAt[nB-1] > last {
		h.t.Errorf("key B's %d tasks were claims %v of the first %d (%s): with a fair PerKey limit each key's first task is claimed before any key's second, so B's must all be among the first %d",
			nB, bAt, len(order), strings.Join(order, " "), last)
	}
}

// testLimitRate checks a rate limit: the burst is claimed at once, then
// tasks are spaced at the rate. It asserts bounds that hold on a loaded
// machine: never more claims than Burst + elapsed*Rate + 1 since the
// limit was set, and the task after the burst is claimed eventually.
func testLimitRate(h *harness) {
	typ := h.typeOf()
	const rate, burst = 5, 2 // per second
	h.needLimits("NoRateLimit")
	h.enqueue(h.newTasks(10)...)
	h.wantCount(peonify.StatePending, 10)
	start := time.Now()
	h.setLimits("NoRateLimit", peonify.Limit{Type: typ, Rate: rate, Period: time.Second, Burst: burst})

	claimed := 0
	deadline := start.Add(h.f.Timeout)
	for run := start.Add(time.Second); time.Now().Before(run) || claimed <= burst; {
		ds := h.poll(10)
		elapsed := time.Since(start)
		claimed += len(ds)
		h.wantFirstAttempts(ds)
		h.ack(ds...)
		if most := burst + int(elapsed.Seconds()*rate) + 1; claimed > most {
			h.t.Fatalf("%d tasks were claimed %s after a limit of %d per second with burst %d was set; at most %d may be",
				claimed, elapsed.Round(time.Millisecond), rate, burst, most)
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("only %d tasks were claimed within %s under a limit of %d per second with burst %d", claimed, h.f.Timeout, rate, burst)
		}
		h.pause(pollPause)
	}
	h.t.Logf("%d tasks claimed in %s at %d per second with burst %d", claimed, time.Since(start).Round(time.Millisecond), rate, burst)
}

// testLimitRatePerKey checks that a PerKey rate limit keeps a bucket per
// key: each key gets its own burst.
func testLimitRatePerKey(h *harness) {
	typ := h.typeOf()
	h.setLimits("NoRateLimit", peonify.Limit{Type: typ, PerKey: true, Rate: 1, Period: time.Hour, Burst: 2})
	h.enqueue(slices.Concat(h.keyed("a", 3), h.keyed("b", 3))...)
	ds := h.claimExactly(4, 10, nil, "a PerKey rate limit of 1 per hour with burst 2 lets each key start 2 tasks")
	if n := countKeys(ds); n["a"] != 2 || n["b"] != 2 {
		h.t.Errorf("Poll claimed tasks of keys %v, want 2 of a and 2 of b", n)
	}
	h.ack(ds...)
}

// testLimitRateWakes checks that a Waker receives when a rate token falls
// due for a task that a rate limit held back.
func testLimitRateWakes(h *harness) {
	h.needLimits("NoRateLimit")
	w, ok := peonify.As[peonify.Waker](h.s)
	if !ok {
		h.t.Skipf("%T does not implement peonify.Waker", h.s)
	}
	typ := h.typeOf()
	h.setLimits("NoRateLimit", peonify.Limit{Type: typ, Rate: 4, Period: time.Second, Burst: 1})
	h.enqueue(h.newTasks(2)...)
	h.ack(h.next())
	drainWake(w.Wake())
	if ds := h.poll(10); len(ds) > 0 {
		h.t.Logf("the second task's token was due already (a slow machine): %s", describe(ds))
		h.ack(ds...)
		return
	}
	start := time.Now()
	select {
	case <-w.Wake():
	case <-time.After(wakeTime):
		h.t.Fatalf("Wake did not receive within %s of a held-back task's rate token falling due (after 250ms): arm a timer when a poll is held back by a rate bucket", wakeTime)
	}
	h.t.Logf("Wake received %s after the held-back poll", time.Since(start).Round(time.Millisecond))
	d := h.next()
	h.wantFirstAttempts([]peonify.Delivery{d})
	h.ack(d)
}

// testLimitOrdered checks an Ordered PerKey limit: a key's tasks run one
// at a time in enqueue order, whatever their priorities; a failed task is
// retried in place, the key waiting through its delay; a dead task
// releases the key; other keys are not held.
func testLimitOrdered(h *harness) {
	typ := h.typeOf()
	h.setLimits("NoOrdered", peonify.Limit{Type: typ, PerKey: true, Ordered: true})
	k := h.keyed("k", 4)
	if !h.f.NoPriority {
		k[2].Priority = 10 // priority does not overtake within a key
	}
	other := h.keyed("other", 1)
	h.enqueue(k...)
	h.enqueue(other...)

	ds := h.claimExactly(2, 10, nil, "an Ordered limit lets each key run its oldest task only")
	var d peonify.Delivery
	for _, x := range ds {
		switch x.Task.ID {
		case k[0].ID:
			d = x
		case other[0].ID:
			h.ack(x)
		default:
			h.t.Fatalf("Poll claimed %s, want the first task of each key (%s and %s)", describe1(x), k[0].ID, other[0].ID)
		}
	}
	h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: nackDelay, Reason: "peonifytest: fails once"})
	retryAt := time.Now().Add(nackDelay)
	d = h.nextAfter(retryAt.Add(-slack), "key k waits for the retry of its first task, due "+retryAt.Format(time.StampMilli))
	if d.Task.ID != k[0].ID || d.Task.Attempt != 2 {
		h.t.Fatalf("after the retry delay, Poll claimed %s, want task %s attempt 2: a failed task keeps its place", describe1(d), k[0].ID)
	}
	h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "peonifytest: dead"})
	for i, want := range k[1:] {
		got := h.claimExactly(1, 10, nil, "key k runs one task at a time")
		if got[0].Task.ID != want.ID {
			h.t.Fatalf("claim %d of key k after its first task died: %s, want task %s, the next in enqueue order", i+2, describe1(got[0]), want.ID)
		}
		h.wantFirstAttempts(got)
		h.ack(got...)
	}
}

// testLimitHeldBackIsNotAnAttempt checks that polls that find a task held
// back by a limit do not touch it: it stays pending with no attempt, and
// its first claim is Attempt 1.
func testLimitHeldBackIsNotAnAttempt(h *harness) {
	typ := h.typeOf()
	h.setLimits("", peonify.Limit{Type: typ, Concurrency: 1})
	first, waiting := h.newTask(), h.newTask()
	h.enqueue(first)
	h.enqueue(waiting)
	d := h.claimExactly(1, 10, nil, "a Concurrency 1 limit lets one task run")[0]
	for range 5 {
		if ds := h.poll(10); len(ds) > 0 {
			h.failf("Poll claimed %s while a Concurrency 1 limit was full", describe(ds))
		}
	}
	if info, ok := h.wantState(waiting.ID, peonify.StatePending, "a held-back task"); ok && info.Attempts != 0 {
		h.t.Errorf("Inspector.Get(%s).Attempts = %d for a task held back by a limit, want 0", waiting.ID, info.Attempts)
	}
	h.ack(d)
	next := h.claimExactly(1, 10, nil, "an Ack freed the permit")
	h.wantFirstAttempts(next)
	h.ack(next...)
}

// testLimitBlockedPollWakes checks that a Poll whose every ready task a
// limit holds back returns nothing, at once, and that a Waker receives
// when an Ack frees a permit, so that the held-back task starts within
// milliseconds rather than at the next poll interval.
func testLimitBlockedPollWakes(h *harness) {
	typ := h.typeOf()
	h.setLimits("", peonify.Limit{Type: typ, Concurrency: 1})
	h.enqueue(h.newTasks(2)...)
	d := h.claimExactly(1, 10, nil, "a Concurrency 1 limit lets one task run")[0]
	w, waker := peonify.As[peonify.Waker](h.s)
	if waker {
		drainWake(w.Wake())
	}
	start := time.Now()
	ds := h.poll(10)
	took := time.Since(start)
	if len(ds) > 0 {
		h.failf("Poll claimed %s while a Concurrency 1 limit was full", describe(ds))
	}
	if took > blockedPollTime {
		h.t.Errorf("a Poll whose every ready task is held back took %s, want it to return at once (under %s)", took, blockedPollTime)
	}
	h.t.Logf("a blocked Poll took %s", took.Round(time.Microsecond))
	h.ack(d)
	if !waker {
		h.t.Logf("%T does not implement peonify.Waker: the processor finds the freed permit at its next poll", h.s)
	} else {
		select {
		case <-w.Wake():
		case <-time.After(wakeTime):
			h.t.Errorf("Wake did not receive within %s of an Ack that freed a permit: a held-back task must start within milliseconds", wakeTime)
		}
	}
	next := h.claimExactly(1, 10, nil, "an Ack freed the permit")
	h.wantFirstAttempts(next)
	h.ack(next...)
}

// testLimitStats checks LimitStats: one stat per limit, named and in the
// order given, with the running tasks each counts (InUse), the ready ones
// it applies to (Waiting), and for a PerKey limit its busiest keys.
func testLimitStats(h *harness) {
	typ := h.typeOf()
	h.setLimits("",
		peonify.Limit{Name: "peonifytest-per-key", Type: typ, PerKey: true, Concurrency: 1},
		peonify.Limit{Type: typ, Concurrency: 10},
	)
	h.enqueue(slices.Concat(h.keyed("a", 3), h.keyed("b", 1), h.keyed("c", 2))...)
	ds := h.claimExactly(3, 10, nil, "a PerKey Concurrency 1 limit lets one task of each of 3 keys run")
	defer h.ack(ds...)
	want := []peonify.LimitStat{
		{Name: "peonifytest-per-key", InUse: 3, Waiting: 3, Keys: []peonify.KeyStat{
			{Key: "a", InUse: 1, Waiting: 2}, {Key: "c", InUse: 1, Waiting: 1}, {Key: "b", InUse: 1},
		}},
		{Name: typ, InUse: 3, Waiting: 3},
	}
	lim := h.limiter()
	deadline := time.Now().Add(h.f.Timeout)
	for {
		stats, err := lim.LimitStats(h.ctx())
		if err != nil {
			h.t.Fatalf("LimitStats: %v", err)
		}
		if fmt.Sprint(stats) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) || h.mayHaveExpired(ds) {
			if h.mayHaveExpired(ds) {
				h.late = true
			}
			h.failf("LimitStats = %+v, want %+v (Keys: busiest first, then by key; none for a limit that is not PerKey)", stats, want)
		}
		h.pause(pollPause)
	}
}

// testLimitProcessor runs a real peonify.Processor over the stream with a
// PerKey limit given through peonify.Limits, as a program would: every
// task runs, and no key ever runs more tasks at once than its limit,
// though the processor has room for more.
func testLimitProcessor(h *harness) {
	h.limiter()
	typ := h.typeOf()
	const limit = 2
	tasks := slices.Concat(h.keyed("k", 30), h.keyed("other", 10))
	h.enqueue(tasks...)

	var (
		mu      sync.Mutex
		running = map[string]int{}
		most    = map[string]int{}
		done    = map[string]bool{}
		allDone = make(chan struct{})
	)
	handler := peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
		mu.Lock()
		running[t.Key]++
		most[t.Key] = max(most[t.Key], running[t.Key])
		mu.Unlock()
		sleep(ctx, 2*time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		running[t.Key]--
		if !done[t.ID] {
			done[t.ID] = true
			if len(done) == len(tasks) {
				close(allDone)
			}
		}
		return nil
	})
	p, err := peonify.New(h.processorConfig())
	if err != nil {
		h.t.Fatalf("peonify.New: %v", err)
	}
	if err := p.AddTaskList(peonify.TaskList{typ: handler}); err != nil {
		h.t.Fatalf("AddTaskList: %v", err)
	}
	if err := p.AddStream(h.s, peonify.Limits(peonify.Limit{Type: typ, PerKey: true, Concurrency: limit})); err != nil {
		h.t.Fatalf("AddStream with a PerKey limit: %v", err)
	}
	h.runUntilDone(p, allDone, func() {
		mu.Lock()
		h.t.Errorf("the processor completed %d of %d tasks within %s under a PerKey limit of %d", len(done), len(tasks), h.f.Timeout, limit)
		mu.Unlock()
	})
	mu.Lock()
	defer mu.Unlock()
	for key, n := range most {
		if n > limit {
			h.t.Errorf("key %s ran %d tasks at once under a PerKey Concurrency %d limit", key, n, limit)
		}
	}
	h.t.Logf("at most %v tasks ran at once per key (limit %d, 8 workers)", most, limit)
}
