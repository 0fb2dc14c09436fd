package pgstream

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

func TestEnqueuePollAckRoundTrip(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)

	payload := []byte{0, 1, 2, 0xff, '\\', 'x'}
	in := &peonify.Task{
		Type: "email", Payload: payload, Headers: map[string]string{"traceparent": "00-abc", "tenant": "é"},
		MaxAttempts: 3, Priority: 7, UniqueKey: "k1",
	}
	if err := s.Enqueue(ctx, in); err != nil {
		t.Fatal(err)
	}
	if in.ID == "" || in.EnqueuedAt.IsZero() {
		t.Fatalf("Enqueue did not fill ID and EnqueuedAt: %+v", in)
	}
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 1 {
		t.Fatalf("Poll returned %d deliveries, want 1", len(ds))
	}
	d := ds[0]
	got := d.Task
	if got.ID != in.ID || got.Type != "email" || !bytes.Equal(got.Payload, payload) || got.Attempt != 1 ||
		got.MaxAttempts != 3 || got.Priority != 7 || got.UniqueKey != "k1" ||
		got.Headers["traceparent"] != "00-abc" || got.Headers["tenant"] != "é" || len(got.Headers) != 2 {
		t.Fatalf("delivered task differs from enqueued one:\n got %+v\nwant %+v", got, in)
	}
	if !got.EnqueuedAt.Equal(in.EnqueuedAt.Truncate(time.Microsecond)) {
		t.Errorf("EnqueuedAt = %v, want %v", got.EnqueuedAt, in.EnqueuedAt)
	}
	if d.Token == 0 || time.Until(d.Deadline) < 25*time.Second {
		t.Errorf("delivery has token %d and deadline %v; want a token and a 30s lease", d.Token, d.Deadline)
	}
	if again := streamtest.Poll(t, s, 10); len(again) != 0 {
		t.Fatalf("leased task delivered twice")
	}
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, d); err != nil {
		t.Fatalf("second Ack of the same delivery: %v, want nil (idempotent)", err)
	}
	if _, err := s.Get(ctx, in.ID); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("Get after Ack: %v, want ErrNotFound", err)
	}
}

func TestPollNeverExceedsMaxAndOrders(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)
	var tasks []*peonify.Task
	for i := range 10 {
		tk := task("t")
		tk.Priority = i % 3
		tasks = append(tasks, tk)
	}
	streamtest.Enqueue(t, s, tasks...)
	ds := streamtest.Poll(t, s, 4)
	if len(ds) != 4 {
		t.Fatalf("Poll(4) returned %d", len(ds))
	}
	for _, d := range ds[:3] {
		if d.Task.Priority != 2 {
			t.Errorf("first claims should be the priority-2 tasks, got priority %d", d.Task.Priority)
		}
	}
	rest := streamtest.Poll(t, s, 100)
	if len(rest) != 6 {
		t.Fatalf("second Poll returned %d, want the 6 left", len(rest))
	}
	if err := s.Ack(ctx, append(ds, rest...)...); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Counts(ctx); err != nil || len(c) != 0 {
		t.Fatalf("Counts after acking all = %v, %v; want empty", c, err)
	}
	if ds, err := s.Poll(ctx, 0); err != nil || len(ds) != 0 {
		t.Fatalf("Poll(0) = %v, %v", ds, err)
	}
}

func TestLeaseExpiryAndFencing(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{Lease: 300 * time.Millisecond, RescueInterval: 50 * time.Millisecond})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, task("slow"))
	first := streamtest.Poll(t, s, 1)
	if len(first) != 1 {
		t.Fatal("no delivery")
	}
	second := streamtest.PollUntil(t, s, 1, 10*time.Second)
	if second[0].Task.ID != first[0].Task.ID || second[0].Task.Attempt != 2 || second[0].Token == first[0].Token {
		t.Fatalf("redelivery after lease expiry: got %+v token %d; first token %d", second[0].Task, second[0].Token, first[0].Token)
	}
	if second[0].Task.LastError == "" {
		t.Error("redelivered task has no LastError explaining the expired lease")
	}
	// The stale claim can neither complete, fail, nor extend the new one.
	if err := s.Ack(ctx, first[0]); err != nil && !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatal(err)
	}
	if err := s.Nack(ctx, first[0], peonify.NackOptions{Outcome: peonify.OutcomeDead}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("stale Nack = %v, want ErrLeaseLost", err)
	}
	if _, err := s.Extend(ctx, first[0], time.Minute); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("stale Extend = %v, want ErrLeaseLost", err)
	}
	info, err := s.Get(ctx, first[0].Task.ID)
	if err != nil || info.State != peonify.StateRunning || info.Attempts != 2 {
		t.Fatalf("after stale ack/nack: %+v, %v; want running, attempt 2", info, err)
	}
	// A delivery that no Poll made (token 0) touches nothing.
	forged := peonify.Delivery{Task: &peonify.Task{ID: first[0].Task.ID}}
	if err := s.Ack(ctx, forged); err != nil {
		t.Fatal(err)
	}
	if err := s.Nack(ctx, forged, peonify.NackOptions{Outcome: peonify.OutcomeDead}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("Nack without a token = %v, want ErrLeaseLost", err)
	}
	if info, err := s.Get(ctx, first[0].Task.ID); err != nil || info.State != peonify.StateRunning {
		t.Fatalf("after a forged ack: %+v, %v", info, err)
	}
	// The current claim extends and completes.
	d, err := s.Extend(ctx, second[0], time.Minute)
	if err != nil || time.Until(d.Deadline) < 50*time.Second {
		t.Fatalf("Extend = %v, %v", d.Deadline, err)
	}
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, first[0].Task.ID); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("task still there after current Ack: %v", err)
	}
	if _, err := s.Extend(ctx, d, time.Minute); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("Extend after Ack = %v, want ErrLeaseLost", err)
	}
}

func TestRescueDeadWhenAttemptsUsedUp(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{Lease: 100 * time.Millisecond, RescueInterval: time.Hour})
	ctx := streamtest.Context(t)
	tk := task("crasher")
	tk.MaxAttempts = 1
	streamtest.Enqueue(t, s, tk)
	if len(streamtest.Poll(t, s, 1)) != 1 {
		t.Fatal("no delivery")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, dead, err := s.rescue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if dead == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("expired lease on the last attempt never rescued")
		}
		time.Sleep(20 * time.Millisecond)
	}
	info, err := s.Get(ctx, tk.ID)
	if err != nil || info.State != peonify.StateDead || info.LastError == "" {
		t.Fatalf("task after last attempt expired: %+v, %v; want dead with a reason", info, err)
	}
}

func TestNackOutcomes(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)
	a, b, c := task("a"), task("b"), task("c")
	streamtest.Enqueue(t, s, a, b, c)
	ds := streamtest.Poll(t, s, 3)
	if len(ds) != 3 {
		t.Fatalf("got %d deliveries", len(ds))
	}
	byID := map[string]peonify.Delivery{}
	for _, d := range ds {
		byID[d.Task.ID] = d
	}

	// Failed: retried after the delay, the attempt counts, the error is kept.
	// The delay outlasts the checks below even on a loaded CI machine.
	if err := s.Nack(ctx, byID[a.ID], peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: 2 * time.Second, Reason: "boom"}); err != nil {
		t.Fatal(err)
	}
	// Released: at once, the attempt does not count.
	if err := s.Nack(ctx, byID[b.ID], peonify.NackOptions{Outcome: peonify.OutcomeReleased}); err != nil {
		t.Fatal(err)
	}
	// Dead: kept, inspectable.
	if err := s.Nack(ctx, byID[c.ID], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "poison"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Nack(ctx, byID[c.ID], peonify.NackOptions{Outcome: peonify.OutcomeDead}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("second Nack of the same delivery = %v, want ErrLeaseLost", err)
	}
	if err := s.Nack(ctx, byID[c.ID], peonify.NackOptions{}); err == nil {
		t.Fatal("Nack without an Outcome succeeded")
	}

	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts[peonify.StateScheduled] != 1 || counts[peonify.StatePending] != 1 || counts[peonify.StateDead] != 1 {
		t.Fatalf("Counts = %v, want 1 scheduled, 1 pending, 1 dead", counts)
	}
	info, err := s.Get(ctx, c.ID)
	if err != nil || info.State != peonify.StateDead || info.LastError != "poison" {
		t.Fatalf("dead task = %+v, %v", info, err)
	}

	released := streamtest.Poll(t, s, 10)
	if len(released) != 1 || released[0].Task.ID != b.ID || released[0].Task.Attempt != 1 {
		t.Fatalf("after release got %+v, want task b again at attempt 1", released)
	}
	retried := streamtest.PollUntil(t, s, 10, 10*time.Second)
	if retried[0].Task.ID != a.ID || retried[0].Task.Attempt != 2 || retried[0].Task.LastError != "boom" {
		t.Fatalf("retried task = %+v, want a at attempt 2 with LastError boom", retried[0].Task)
	}
	if err := s.Ack(ctx, released[0], retried[0]); err != nil {
		t.Fatal(err)
	}
}

func TestWakeOnEnqueueFromAnotherProcess(t *testing.T) {
	consumerPool, producerPool := testPool(t), testPool(t)
	consumer := newTestStream(t, consumerPool, Config{})
	producer := newTestStream(t, producerPool, Config{Queue: consumer.Queue()})
	other := newTestStream(t, producerPool, Config{})

	waitListening(t, consumer, 1)
	streamtest.Enqueue(t, other, task("elsewhere"))
	streamtest.Enqueue(t, producer, task("here"))
	waitWake(t, consumer, 10*time.Second)
	if ds := streamtest.Poll(t, consumer, 10); len(ds) != 1 || ds[0].Task.Type != "here" {
		t.Fatalf("after wake-up polled %v", ds)
	}
}

func TestPlainSQLInsertIsAValidTask(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)
	waitListening(t, s, 1)

	// What a producer in any language does: no Peonify code involved.
	_, err := pool.Exec(ctx, `INSERT INTO pgstream_test_v3.peonify_tasks (queue, type, payload)
		VALUES ($1, 'resize-image', convert_to('{"url":"https://example.com/a.png"}', 'UTF8'))`, s.Queue())
	if err != nil {
		t.Fatal(err)
	}
	_, err = pool.Exec(ctx, `INSERT INTO pgstream_test_v3.peonify_tasks (queue, type, payload, headers, priority)
		VALUES ($1, 'literal', '{"a":1}', '{"tenant":"t1","n":2}', 5)`, s.Queue())
	if err != nil {
		t.Fatal(err)
	}
	waitWake(t, s, 10*time.Second)
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 2 {
		t.Fatalf("polled %d tasks, want 2", len(ds))
	}
	lit, img := ds[0].Task, ds[1].Task
	if lit.Type != "literal" || string(lit.Payload) != `{"a":1}` || lit.Headers["tenant"] != "t1" || lit.Headers["n"] != "2" {
		t.Fatalf("literal insert delivered as %+v", lit)
	}
	if img.Type != "resize-image" || string(img.Payload) != `{"url":"https://example.com/a.png"}` ||
		len(img.ID) != 36 || img.ID[14] != '7' || img.Attempt != 1 || img.EnqueuedAt.IsZero() {
		t.Fatalf("plain insert delivered as %+v; want a UUIDv7 id and defaults", img)
	}
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}

	// Skipping duplicates and scheduling, as the README shows.
	for range 2 {
		_, err = pool.Exec(ctx, `INSERT INTO pgstream_test_v3.peonify_tasks (queue, id, type, payload, unique_key, run_at)
			VALUES ($1, 'report-1', 'daily-report', '\x', 'daily-report:1', now() + interval '1 hour')
			ON CONFLICT DO NOTHING`, s.Queue())
		if err != nil {
			t.Fatal(err)
		}
	}
	if c, err := s.Counts(ctx); err != nil || c[peonify.StateScheduled] != 1 || len(c) != 1 {
		t.Fatalf("Counts after two plain inserts of one scheduled task = %v, %v", c, err)
	}
	// A running row without a lease would never be rescued: refused.
	_, err = pool.Exec(ctx, `INSERT INTO pgstream_test_v3.peonify_tasks (queue, type, state) VALUES ($1, 'x', 'running')`, s.Queue())
	if err == nil {
		t.Fatal("a running task without lease_until was accepted")
	}
}

func TestPauseResume(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	other := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)
	if err := s.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Pause(ctx); err != nil {
		t.Fatalf("second Pause: %v", err)
	}
	streamtest.Enqueue(t, s, task("x"))
	streamtest.Enqueue(t, other, task("y"))
	if p, err := s.Paused(ctx); err != nil || !p {
		t.Fatalf("Paused = %v, %v", p, err)
	}
	if ds := streamtest.Poll(t, s, 10); len(ds) != 0 {
		t.Fatalf("paused queue delivered %d tasks", len(ds))
	}
	if ds := streamtest.Poll(t, other, 10); len(ds) != 1 {
		t.Fatalf("pausing one queue stopped another: %d", len(ds))
	}
	drainWake(s)
	if err := s.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	waitWake(t, s, 5*time.Second)
	if p, err := s.Paused(ctx); err != nil || p {
		t.Fatalf("Paused after Resume = %v, %v", p, err)
	}
	if ds := streamtest.Poll(t, s, 10); len(ds) != 1 {
		t.Fatalf("resumed queue delivered %d tasks", len(ds))
	}
}

func TestScheduledTask(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)
	tk := task("later")
	tk.RunAt = time.Now().Add(2 * time.Second) // outlasts Enqueue and Poll on a loaded CI machine
	streamtest.Enqueue(t, s, tk)
	if ds := streamtest.Poll(t, s, 1); len(ds) != 0 {
		t.Fatal("scheduled task delivered early")
	}
	if c, _ := s.Counts(ctx); c[peonify.StateScheduled] != 1 {
		t.Fatalf("Counts = %v, want 1 scheduled", c)
	}
	ds := streamtest.PollUntil(t, s, 1, 10*time.Second)
	if time.Now().Before(tk.RunAt) {
		t.Fatal("delivered before RunAt")
	}
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}
}

func TestClosedStream(t *testing.T) {
	pool := testPool(t)
	s, err := New(pool, Config{Schema: testSchema, Queue: uniqueQueue(t)})
	if err != nil {
		t.Fatal(err)
	}
	waitListening(t, s, 1)
	ctx := streamtest.Context(t)
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Poll(ctx, 1); !errors.Is(err, peonify.ErrClosed) {
		t.Fatalf("Poll after Close = %v", err)
	}
	if err := s.Enqueue(ctx, task("x")); !errors.Is(err, peonify.ErrClosed) {
		t.Fatalf("Enqueue after Close = %v", err)
	}
	// The pool is the caller's: still usable.
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("Close closed the caller's pool: %v", err)
	}
}

func TestListenerReconnects(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)
	waitListening(t, s, 1)

	app := pool.Config().ConnConfig.RuntimeParams["application_name"]
	var killed int
	err := pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND query LIKE 'LISTEN%'`, app).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminated %d listener connections (%v), want 1", killed, err)
	}
	waitListening(t, s, 2)
	other := testPool(t)
	producer := newTestStream(t, other, Config{Queue: s.Queue()})
	streamtest.Enqueue(t, producer, task("after-reconnect"))
	waitWake(t, s, 10*time.Second)
	if ds := streamtest.Poll(t, s, 1); len(ds) != 1 {
		t.Fatal("task not delivered after reconnect")
	}
}

func TestConfigErrors(t *testing.T) {
	pool := testPool(t)
	for name, cfg := range map[string]Config{
		"negative lease": {Lease: -1},
		"tiny lease":     {Lease: time.Microsecond},
		"bad schema":     {Schema: "Robert'); DROP TABLE"},
		"long queue":     {Queue: string(make([]byte, 256))},
		"negative keep":  {KeepDone: -time.Second},
	} {
		_, err := New(pool, cfg)
		var ce *peonify.ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: New = %v, want a *peonify.ConfigError", name, err)
		}
	}
	if _, err := New(nil, Config{}); err == nil {
		t.Error("New(nil) succeeded")
	}
}

func TestMissingSchemaSaysToMigrate(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{Schema: "peonify_missing_" + streamtest.RandHex(4), NoListen: true})
	_, err := s.Poll(streamtest.Context(t), 1)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("MigrateSchema")) {
		t.Fatalf("Poll on an unmigrated schema = %v; want advice to run MigrateSchema", err)
	}
}

func TestMigrateConcurrentlyIntoNewSchema(t *testing.T) {
	pool := testPool(t)
	schema := "peonify_mig_" + streamtest.RandHex(4)
	ctx := streamtest.Context(t)
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- MigrateSchema(ctx, pool, schema) }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := MigrateSchema(ctx, pool, schema); err != nil {
		t.Fatalf("migrating again: %v", err)
	}
	var v, n int
	if err := pool.QueryRow(ctx, "SELECT max(version), count(*) FROM "+schema+".peonify_migrations").Scan(&v, &n); err != nil {
		t.Fatal(err)
	}
	if v != SchemaVersion || n != SchemaVersion {
		t.Fatalf("schema at version %d with %d records, want %d", v, n, SchemaVersion)
	}
	s := newTestStream(t, pool, Config{Schema: schema})
	streamtest.Enqueue(t, s, task("in-own-schema"))
	waitWake(t, s, 10*time.Second)
	if ds := streamtest.Poll(t, s, 5); len(ds) != 1 {
		t.Fatalf("polled %d from schema %s", len(ds), schema)
	}
	if err := MigrateSchema(ctx, pool, "Bad-Name"); err == nil {
		t.Fatal("MigrateSchema accepted an invalid schema name")
	}
}

func TestSyncCommit(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{SyncCommit: true})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, task("a"), task("b"))
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 2 {
		t.Fatalf("polled %d", len(ds))
	}
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Counts(ctx); err != nil || len(c) != 0 {
		t.Fatalf("Counts = %v, %v", c, err)
	}
}

func TestSharedListener(t *testing.T) {
	pool := testPool(t)
	ctx := streamtest.Context(t)
	l, a, b := sharedListenerStreams(t, pool)

	var listening int
	app := pool.Config().ConnConfig.RuntimeParams["application_name"]
	err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'`, app).Scan(&listening)
	if err != nil || listening != 1 {
		t.Fatalf("%d LISTEN connections for two streams sharing a Listener (%v), want 1", listening, err)
	}

	producer := newTestStream(t, testPool(t), Config{Queue: b.Queue()})
	drainWake(b)
	streamtest.Enqueue(t, producer, task("for-b"))
	waitWake(t, b, 10*time.Second)

	// Notifications reach only the subscribers of their queue.
	drainWake(a)
	drainWake(b)
	l.notify(b.Queue(), false, nil)
	select {
	case <-a.Wake():
		t.Fatal("a notification for queue b woke the stream of queue a")
	default:
	}
	waitWake(t, b, time.Second)

	if _, err := New(pool, Config{Listener: l, Schema: "other"}); err == nil {
		t.Fatal("a stream accepted a Listener of another schema")
	}
}

// TestResumedClaimsStillFindEarlierTasks checks that claims resuming a
// drain after the last claimed task (see Poll) still deliver, within a
// full-claim period, the tasks that sort before that point: a higher
// priority enqueued during the drain, and a task whose lease expired.
func TestResumedClaimsStillFindEarlierTasks(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{Lease: 200 * time.Millisecond, RescueInterval: 20 * time.Millisecond})
	s.fullClaimEvery = 30 * time.Millisecond
	ctx := streamtest.Context(t)
	var backlog []*peonify.Task
	for range 200 {
		backlog = append(backlog, task("backlog"))
	}
	streamtest.Enqueue(t, s, backlog...)

	first := streamtest.Poll(t, s, 1) // a full claim; later ones resume after it
	urgent := task("urgent")
	urgent.Priority = 5
	streamtest.Enqueue(t, s, urgent)

	var gotUrgent, gotExpired bool
	drained := 1
	for drained < len(backlog) && !(gotUrgent && gotExpired) {
		ds := streamtest.Poll(t, s, 1)
		for _, d := range ds {
			switch {
			case d.Task.ID == urgent.ID:
				gotUrgent = true
			case d.Task.ID == first[0].Task.ID:
				gotExpired = true
			default:
				drained++
			}
		}
		if err := s.Ack(ctx, ds...); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // pace the drain against the clock of leases and full claims
	}
	if !gotUrgent || !gotExpired {
		t.Fatalf("after draining %d of %d backlog tasks: urgent delivered %v, expired lease redelivered %v; want both before the backlog ends",
			drained, len(backlog), gotUrgent, gotExpired)
	}
}

// TestName: the processor names the stream "postgres:" and its queue, the
// kind:name form every stream uses.
func TestName(t *testing.T) {
	queue := uniqueQueue(t)
	s := newTestStream(t, testPool(t), Config{Queue: queue})
	if got, want := s.Name(), "postgres:"+queue; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
}
