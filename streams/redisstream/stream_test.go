package redisstream

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/redis/go-redis/v9"
)

func TestNewValidatesConfig(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer c.Close()
	for _, cfg := range []Config{
		{Queue: "a{b}"},
		{Prefix: "x}"},
		{Queue: strings.Repeat("q", 201)},
		{Prefix: strings.Repeat("p", 51)},
		{Consumer: strings.Repeat("c", 201)},
		{Lease: -time.Second},
		{Lease: time.Microsecond},
		{RescueInterval: -1},
		{WaitReplicas: -1},
		{WaitReplicas: 1, WaitTimeout: -time.Second},
		{WaitReplicas: 1, WaitTimeout: time.Microsecond},
	} {
		_, err := New(c, cfg)
		var ce *peonify.ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("New(%+v) = %v, want a *peonify.ConfigError", cfg, err)
		}
	}
	if _, err := New(nil, Config{}); err == nil {
		t.Error("New(nil client) returned no error")
	}
	s, err := New(c, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Queue() != "default" || s.cfg.Lease != 30*time.Second || s.cfg.RescueInterval != time.Second || s.cfg.DedupWindow != 5*time.Minute {
		t.Errorf("defaults: %+v", s.cfg)
	}
	if k := s.Keys(); k.Stream != "peonify:{default}:stream" || k.Dead != "peonify:{default}:dead" {
		t.Errorf("Keys() = %+v", k)
	}
	if s2, _ := New(c, Config{}); s2.Consumer() == s.Consumer() {
		t.Errorf("two streams got the same default consumer name %q", s.Consumer())
	}
}

// TestRawProducer enqueues tasks the way a program in another language
// does, with plain XADD commands as the README documents them, and checks
// that they are delivered, inspected, retried and acked like any other.
func TestRawProducer(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{Queue: "emails"})
	ctx := streamtest.Context(t)
	key := s.Keys().Stream
	if !strings.HasSuffix(key, ":{emails}:stream") {
		t.Fatalf("stream key %q does not follow the README", key)
	}

	// The smallest valid task: a type and a payload.
	eid, err := c.Do(ctx, "XADD", key, "*", "type", "email-task", "payload", `{"to":"a@example.com"}`).Text()
	if err != nil {
		t.Fatal(err)
	}
	// Every field the README lists.
	err = c.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{
		"id", "order-42", "type", "email-task", "payload", []byte{0, 1, 2, 0xff},
		"headers", `{"traceparent":"00-abc-01","n":7}`, "max_attempts", "3", "priority", "5",
		"enqueued_at", "1700000000000",
	}}).Err()
	if err != nil {
		t.Fatal(err)
	}

	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 2 {
		t.Fatalf("Poll returned %d tasks, want the 2 added with XADD", len(ds))
	}
	plain, full := ds[0].Task, ds[1].Task
	if plain.ID != eid || plain.Type != "email-task" || string(plain.Payload) != `{"to":"a@example.com"}` || plain.Attempt != 1 {
		t.Errorf("plain XADD delivered as %+v; want ID %s (the entry ID), its type and payload, attempt 1", plain, eid)
	}
	if ms, _, _ := parseEntryID(eid); plain.EnqueuedAt.UnixMilli() != int64(ms) {
		t.Errorf("EnqueuedAt of a task without enqueued_at is %s, want the entry ID's time", plain.EnqueuedAt)
	}
	if full.ID != "order-42" || string(full.Payload) != "\x00\x01\x02\xff" || full.MaxAttempts != 3 || full.Priority != 5 ||
		full.Headers["traceparent"] != "00-abc-01" || full.Headers["n"] != "7" || full.EnqueuedAt.UnixMilli() != 1700000000000 {
		t.Errorf("full XADD delivered as %+v", full)
	}

	// The Inspector finds a task added without an id by its entry ID.
	info, err := s.Get(ctx, eid)
	if err != nil || info.State != peonify.StateRunning {
		t.Errorf("Get(%s) = %+v, %v; want the running task", eid, info, err)
	}

	// A failed attempt keeps the ID and counts the attempt.
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeFailed, Reason: "smtp down"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, ds[1]); err != nil {
		t.Fatal(err)
	}
	d := streamtest.Poll(t, s, 10)
	if len(d) != 1 || d[0].Task.ID != eid || d[0].Task.Attempt != 2 || d[0].Task.LastError != "smtp down" {
		t.Fatalf("after a failed attempt, Poll returned %+v; want task %s as attempt 2 with its error", d, eid)
	}
	if err := s.Ack(ctx, d...); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, s, map[peonify.State]int{})

	// The README's recipe for duplicates and lookups by ID.
	seen := func() bool {
		ok, err := c.SetNX(ctx, s.Keys().Seen+"order-43", "1", 300*time.Second).Result()
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !seen() {
		t.Fatal("SET NX of a new ID failed")
	}
	eid, err = c.Do(ctx, "XADD", key, "*", "id", "order-43", "type", "email-task", "payload", `{"order":43}`).Text()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "HSET", s.Keys().Tasks, "order-43", eid).Err(); err != nil {
		t.Fatal(err)
	}
	if seen() {
		t.Error("a second SET NX of the ID succeeded")
	}
	if err := s.Enqueue(ctx, &peonify.Task{ID: "order-43", Type: "email-task"}); !isDup(err) {
		t.Errorf("Enqueue of an ID added by the recipe: %v, want a duplicate", err)
	}
	if info, err := s.Get(ctx, "order-43"); err != nil || info.State != peonify.StatePending {
		t.Errorf("Get(order-43) = %+v, %v; want the pending task", info, err)
	}
	d = streamtest.Poll(t, s, 10)
	if len(d) != 1 || d[0].Task.ID != "order-43" {
		t.Fatalf("Poll returned %v, want order-43", d)
	}
	if err := s.Ack(ctx, d...); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, s, map[peonify.State]int{})
	if n := c.HLen(ctx, s.Keys().Tasks).Val(); n != 0 {
		t.Errorf("the tasks hash holds %d IDs after the ack", n)
	}
}

// TestRawProducerSchedule follows the README's recipe for a task that
// runs later, in raw commands.
func TestRawProducerSchedule(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{})
	ctx := streamtest.Context(t)
	k := s.Keys()
	due := time.UnixMilli(time.Now().Add(300 * time.Millisecond).UnixMilli()) // the schedule has milliseconds
	pipe := c.TxPipeline()
	pipe.HSet(ctx, k.Scheduled+"report-7", "id", "report-7", "type", "report", "payload", "{}")
	pipe.ZAdd(ctx, k.Schedule, redis.Z{Score: float64(due.UnixMilli()), Member: "report-7"})
	pipe.HSet(ctx, k.Tasks, "report-7", "s")
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := s.Get(ctx, "report-7"); err != nil || info.State != peonify.StateScheduled || info.Task.RunAt.UnixMilli() != due.UnixMilli() {
		t.Errorf("Get(report-7) = %+v, %v; want it scheduled for %s", info, err, due)
	}
	if err := s.Enqueue(ctx, &peonify.Task{ID: "report-7", Type: "report"}); !isDup(err) {
		t.Errorf("Enqueue of the ID of a scheduled task: %v, want a duplicate", err)
	}
	ds := streamtest.Poll(t, s, 1)
	if len(ds) != 0 && time.Now().Before(due) {
		t.Fatalf("the task was delivered before it was due: %v", ds[0].Task)
	}
	if len(ds) == 0 {
		ds = streamtest.PollUntil(t, s, 1, 5*time.Second)
	}
	if time.Now().Before(due) || ds[0].Task.ID != "report-7" {
		t.Fatalf("got %s at %s, want report-7 after %s", ds[0].Task.ID, time.Now(), due)
	}
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}
}

// TestStaleAckAcrossConsumers checks fencing between two processors: the
// lease of one ends, the other rescues the task, and the first one's Ack,
// Nack and Extend then change nothing.
func TestStaleAckAcrossConsumers(t *testing.T) {
	c := testClient(t)
	const lease = 200 * time.Millisecond
	a := newTestStream(t, c, Config{Lease: lease, RescueInterval: 10 * time.Millisecond})
	b := newTestStream(t, c, Config{Prefix: a.cfg.Prefix, Lease: lease, RescueInterval: 10 * time.Millisecond})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, a, task("x"))
	da := streamtest.Poll(t, a, 1)
	if len(da) != 1 {
		t.Fatal("no delivery")
	}
	db := streamtest.PollUntil(t, b, 1, 5*time.Second)
	if time.Now().Before(da[0].Deadline) {
		t.Fatalf("b rescued the task before a's lease ended (%s)", da[0].Deadline)
	}
	if db[0].Task.Attempt != 2 || db[0].Token != 2 {
		t.Errorf("rescued delivery: attempt %d, token %d; want 2 and 2", db[0].Task.Attempt, db[0].Token)
	}
	if err := a.Ack(ctx, da...); err != nil {
		t.Errorf("stale Ack: %v", err)
	}
	if err := a.Nack(ctx, da[0], peonify.NackOptions{Outcome: peonify.OutcomeDead}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("stale Nack: %v, want ErrLeaseLost", err)
	}
	if _, err := a.Extend(ctx, da[0], lease); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("stale Extend: %v, want ErrLeaseLost", err)
	}
	info, err := b.Get(ctx, db[0].Task.ID)
	if err != nil || info.State != peonify.StateRunning || info.Attempts != 2 {
		t.Fatalf("after stale calls, Get = %+v, %v; want running, 2 attempts", info, err)
	}
	if err := b.Ack(ctx, db...); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, b, map[peonify.State]int{})
}

// TestOwnPendingOnStart checks that a stream with a stable consumer name
// takes back, on its first Poll, the entries a previous run under the same
// name held, without waiting for their lease to end.
func TestOwnPendingOnStart(t *testing.T) {
	c := testClient(t)
	prefix := uniquePrefix(t, c)
	first, err := New(c, Config{Prefix: prefix, Consumer: "worker-0", Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	streamtest.Enqueue(t, first, task("a"), task("b"))
	held := streamtest.Poll(t, first, 2)
	if len(held) != 2 {
		t.Fatalf("got %d tasks", len(held))
	}
	// The process "dies": no ack, no Close.

	second := newTestStream(t, c, Config{Prefix: prefix, Consumer: "worker-0", Lease: time.Hour})
	streamtest.Enqueue(t, second, task("c"))
	ds := streamtest.Poll(t, second, 1) // never more than asked, own entries first
	if len(ds) != 1 || ds[0].Task.ID != held[0].Task.ID {
		t.Fatalf("Poll(1) of the restarted consumer returned %v, want its first own pending task", ds)
	}
	ds = append(ds, streamtest.Poll(t, second, 10)...)
	if len(ds) != 3 {
		t.Fatalf("the restarted consumer got %d tasks, want its 2 own pending ones and the new one", len(ds))
	}
	for i, d := range ds[:2] {
		if d.Task.ID != held[i].Task.ID || d.Task.Attempt != 2 || d.Token != 2 {
			t.Errorf("own pending task %d: %s attempt %d token %d; want %s attempt 2 token 2", i, d.Task.ID, d.Task.Attempt, d.Token, held[i].Task.ID)
		}
	}
	if ds[2].Task.Type != "c" || ds[2].Task.Attempt != 1 {
		t.Errorf("third delivery %+v, want the new task", ds[2].Task)
	}
	// The old claims are stale now.
	if err := first.Ack(streamtest.Context(t), held...); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, second, map[peonify.State]int{peonify.StateRunning: 3})
	if err := second.Ack(streamtest.Context(t), ds...); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, second, map[peonify.State]int{})
}

// TestLostReplyRecovered loses the reply of a read: the server gives
// entries to this consumer, but the stream never sees them. The next Poll
// takes them back, and only them: not the task the stream holds and runs.
func TestLostReplyRecovered(t *testing.T) {
	c := testClient(t)
	lose := &loseReplies{}
	c.AddHook(lose)
	s := newTestStream(t, c, Config{Lease: time.Hour})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, task("running"))
	running := streamtest.Poll(t, s, 1)
	streamtest.Enqueue(t, s, task("lost"))
	lose.next.Store(true)
	if ds, err := s.Poll(ctx, 10); err == nil || len(ds) != 0 {
		t.Fatalf("Poll whose reply was lost returned %v, %v; want an error", ds, err)
	}
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 1 || ds[0].Task.Type != "lost" || ds[0].Task.Attempt != 2 {
		t.Fatalf("after a lost reply, Poll returned %d tasks (%v), want the lost one as attempt 2", len(ds), ds)
	}
	if err := s.Ack(ctx, append(ds, running...)...); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, s, map[peonify.State]int{})
}

// loseReplies is a client hook that, when next is set, lets one command or
// pipeline run on the server and then fails it as if the connection broke
// before the reply arrived.
type loseReplies struct{ next atomic.Bool }

var errLostReply = errors.New("injected fault: connection lost before the reply")

func (*loseReplies) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *loseReplies) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if l.next.CompareAndSwap(true, false) {
			cmd.SetErr(errLostReply)
			return errLostReply
		}
		return err
	}
}

func (l *loseReplies) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if l.next.CompareAndSwap(true, false) {
			for _, cmd := range cmds {
				cmd.SetErr(errLostReply)
			}
			return errLostReply
		}
		return err
	}
}

// TestSilentRetryRecovered covers a lost reply that never reaches the
// stream as an error: go-redis sends a command again when its connection
// breaks, so the entries the first try claimed are held by this consumer
// but were never delivered. The stream takes them back within
// RescueInterval, long before their lease ends.
func TestSilentRetryRecovered(t *testing.T) {
	c := testClient(t)
	retry := &retryReads{}
	c.AddHook(retry)
	s := newTestStream(t, c, Config{Lease: time.Hour, RescueInterval: 50 * time.Millisecond})
	ctx := streamtest.Context(t)
	streamtest.Poll(t, s, 1) // creates the group
	streamtest.Enqueue(t, s, task("first"), task("second"))
	retry.next.Store(true)
	ds := streamtest.Poll(t, s, 1)
	if len(ds) != 1 || ds[0].Task.Type != "second" {
		t.Fatalf("Poll returned %v, want the task the retried read claimed", ds)
	}
	got := streamtest.PollUntil(t, s, 1, 5*time.Second)
	if got[0].Task.Type != "first" || got[0].Task.Attempt != 2 {
		t.Fatalf("Poll returned %v, want the stranded task as attempt 2", got[0].Task)
	}
	if err := s.Ack(ctx, append(ds, got...)...); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, s, map[peonify.State]int{})
}

// retryReads is a client hook that, when next is set, runs the next
// XREADGROUP twice and keeps only the second reply, as go-redis does when
// the first reply is lost with its connection.
type retryReads struct{ next atomic.Bool }

func isRead(cmd redis.Cmder) bool { return cmd.Name() == "xreadgroup" }

func (*retryReads) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *retryReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isRead(cmd) && r.next.CompareAndSwap(true, false) {
			_ = next(ctx, cmd)
		}
		return next(ctx, cmd)
	}
}

func (r *retryReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if slices.ContainsFunc(cmds, isRead) && r.next.CompareAndSwap(true, false) {
			_ = next(ctx, cmds)
		}
		return next(ctx, cmds)
	}
}

// TestDedupWindow checks that an ID counts as a duplicate for the window
// after its Enqueue, even once the task is done, and not after.
func TestDedupWindow(t *testing.T) {
	c := testClient(t)
	ctx := streamtest.Context(t)
	run := func(t *testing.T, window time.Duration) (*Stream, *peonify.Task) {
		s := newTestStream(t, c, Config{DedupWindow: window})
		tk := &peonify.Task{ID: "once", Type: "x"}
		streamtest.Enqueue(t, s, tk)
		ds := streamtest.Poll(t, s, 1)
		if err := s.Ack(ctx, ds...); err != nil {
			t.Fatal(err)
		}
		return s, tk
	}
	t.Run("within", func(t *testing.T) {
		s, _ := run(t, 300*time.Millisecond)
		if err := s.Enqueue(ctx, &peonify.Task{ID: "once", Type: "x"}); !isDup(err) {
			t.Fatalf("Enqueue of an acked task's ID within the window: %v, want a duplicate", err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for isDup(s.Enqueue(ctx, &peonify.Task{ID: "once", Type: "x"})) {
			if time.Now().After(deadline) {
				t.Fatal("the ID still counts as a duplicate 5s after a 300ms window")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if ds := streamtest.Poll(t, s, 2); len(ds) != 1 || ds[0].Task.ID != "once" {
			t.Fatalf("after the window, Poll returned %d tasks, want the second 'once'", len(ds))
		}
	})
	t.Run("off", func(t *testing.T) {
		s, _ := run(t, -1)
		if err := s.Enqueue(ctx, &peonify.Task{ID: "once", Type: "x"}); err != nil {
			t.Fatalf("Enqueue of an acked task's ID without a window: %v", err)
		}
		if err := s.Enqueue(ctx, &peonify.Task{ID: "once", Type: "x"}); !isDup(err) {
			t.Fatalf("Enqueue of a pending task's ID without a window: %v, want a duplicate", err)
		}
		if n := c.Exists(ctx, s.Keys().Seen+"once").Val(); n != 0 {
			t.Error("a seen key was written with the window off")
		}
	})
}

// TestEnqueueStaleIndex checks that a task removed behind Peonify's back
// (XDEL by hand) does not block its ID forever.
func TestEnqueueStaleIndex(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{DedupWindow: -1})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, &peonify.Task{ID: "t1", Type: "x", UniqueKey: "k"})
	loc := c.HGet(ctx, s.Keys().Tasks, "t1").Val()
	if err := c.XDel(ctx, s.Keys().Stream, loc).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, &peonify.Task{ID: "t1", Type: "x", UniqueKey: "k"}); err != nil {
		t.Fatalf("Enqueue after the task was deleted by hand: %v", err)
	}
	if err := s.Enqueue(ctx, &peonify.Task{ID: "t2", Type: "x", UniqueKey: "k"}); !isDup(err) {
		t.Fatalf("Enqueue of a live unique key: %v, want a duplicate", err)
	}
}

// TestLargeBatch enqueues more than one script run's worth and drains it
// with Polls larger than one page of the ack script's lookups.
func TestLargeBatch(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{})
	ctx := streamtest.Context(t)
	tasks := streamtest.Tasks(2500, "bulk")
	tasks[3].ID, tasks[700].ID = "dup", "dup" // a duplicate within the call
	err := s.Enqueue(ctx, tasks...)
	var de *peonify.DuplicateError
	if !errors.As(err, &de) || len(de.IDs) != 1 || de.IDs[0] != "dup" {
		t.Fatalf("Enqueue of 2500 with one duplicate ID: %v", err)
	}
	got := 0
	for got < 2499 {
		ds := streamtest.Poll(t, s, 2000)
		if len(ds) == 0 {
			t.Fatalf("only %d of 2499 tasks delivered", got)
		}
		if err := s.Ack(ctx, ds...); err != nil {
			t.Fatal(err)
		}
		got += len(ds)
	}
	wantCounts(t, s, map[peonify.State]int{})
	if n := c.HLen(ctx, s.Keys().Tasks).Val(); n != 0 {
		t.Errorf("the tasks hash holds %d IDs after every task was acked", n)
	}
}

// TestUniqueKeyReleased checks that a unique key is freed when its task
// dies or is deleted, and kept through a retry.
func TestUniqueKeyReleased(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{})
	ctx := streamtest.Context(t)
	keyed := func() *peonify.Task { return &peonify.Task{Type: "x", UniqueKey: "daily"} }
	streamtest.Enqueue(t, s, keyed())
	d := streamtest.Poll(t, s, 1)[0]
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, keyed()); !isDup(err) {
		t.Fatalf("Enqueue while the key's task waits for a retry: %v, want a duplicate", err)
	}
	if n, err := s.Delete(ctx, d.Task.ID); n != 1 || err != nil {
		t.Fatalf("Delete = %d, %v", n, err)
	}
	streamtest.Enqueue(t, s, keyed())
	d = streamtest.Poll(t, s, 1)[0]
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "poison"}); err != nil {
		t.Fatal(err)
	}
	streamtest.Enqueue(t, s, keyed()) // the dead task no longer holds the key
}

// TestDeadTrimmed checks that dead tasks older than KeepDead are dropped
// when another task dies, with their IDs.
func TestDeadTrimmed(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{KeepDead: 200 * time.Millisecond, DedupWindow: -1})
	ctx := streamtest.Context(t)
	kill := func(id string) {
		t.Helper()
		streamtest.Enqueue(t, s, &peonify.Task{ID: id, Type: "x"})
		d := streamtest.Poll(t, s, 1)[0]
		if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "poison"}); err != nil {
			t.Fatal(err)
		}
	}
	kill("old")
	if info, err := s.Get(ctx, "old"); err != nil || info.State != peonify.StateDead || info.LastError != "poison" || info.Attempts != 1 {
		t.Fatalf("Get(old) = %+v, %v", info, err)
	}
	time.Sleep(300 * time.Millisecond) // KeepDead passes on the server's clock
	kill("new")
	wantCounts(t, s, map[peonify.State]int{peonify.StateDead: 1})
	if _, err := s.Get(ctx, "old"); !errors.Is(err, peonify.ErrNotFound) {
		t.Errorf("Get of a trimmed dead task: %v, want ErrNotFound", err)
	}
	streamtest.Enqueue(t, s, &peonify.Task{ID: "old", Type: "x"}) // its ID is free again
}

// TestExtendShorterLease checks that Extend with a lease shorter than
// Config.Lease makes the task available again after that lease.
func TestExtendShorterLease(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{Lease: time.Hour, RescueInterval: 10 * time.Millisecond})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, task("x"))
	d := streamtest.Poll(t, s, 1)[0]
	start := time.Now()
	nd, err := s.Extend(ctx, d, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if lease := nd.Deadline.Sub(start); lease < 190*time.Millisecond || lease > time.Since(start)+200*time.Millisecond {
		t.Errorf("Extend(200ms) set a deadline %s after the call began", lease)
	}
	again := streamtest.PollUntil(t, s, 1, 5*time.Second)
	// The lease ends by Redis's clock, the wait is measured by this
	// process's monotonic one: allow them a few milliseconds apart.
	if time.Since(start) < 190*time.Millisecond || again[0].Task.ID != d.Task.ID {
		t.Fatalf("the task came back after %s, want after 200ms", time.Since(start))
	}
	if nd, err = s.Extend(ctx, again[0], 2*time.Hour); err != nil || time.Until(nd.Deadline) > time.Hour {
		t.Errorf("Extend(2h) = %s from now, %v; want at most Config.Lease", time.Until(nd.Deadline), err)
	}
	if err := s.Ack(ctx, again...); err != nil {
		t.Fatal(err)
	}
}

// TestWakeOnRawXAdd checks that an idle stream's Wake fires for an entry
// added by another client, and for a scheduled task falling due.
func TestWakeOnRawXAdd(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{})
	ctx := streamtest.Context(t)
	wake := s.Wake()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if ds := streamtest.Poll(t, s, 10); len(ds) != 0 { // an idle processor's empty poll arms the watcher
		t.Fatal("new stream not empty")
	}
	drain(wake)
	time.Sleep(50 * time.Millisecond) // let the watcher block
	start := time.Now()
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: s.Keys().Stream, Values: []any{"type", "x"}}).Err(); err != nil {
		t.Fatal(err)
	}
	waitWake(t, wake, 5*time.Second)
	t.Logf("woken %s after a raw XADD", time.Since(start))
	ds := streamtest.Poll(t, s, 10)
	if len(ds) != 1 {
		t.Fatalf("after the wake-up Poll returned %d tasks", len(ds))
	}
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}

	// Tasks scheduled by this stream wake it when due, even while the
	// watcher is blocked in a read; tasks another process scheduled are
	// seen at the watcher's next look, within maxBlock.
	other := newTestStream(t, testClient(t), Config{Prefix: s.cfg.Prefix})
	for _, by := range []*Stream{s, other} {
		due := time.Now().Add(300 * time.Millisecond)
		if err := by.Enqueue(ctx, &peonify.Task{Type: "x", RunAt: due}); err != nil {
			t.Fatal(err)
		}
		if by == s {
			s.mu.Lock()
			armed := s.dueAt.Equal(due)
			s.mu.Unlock()
			if !armed {
				t.Error("Enqueue of a scheduled task did not set the stream's due timer")
			}
		}
		drain(wake)
		waitWake(t, wake, 5*time.Second)
		// Wake is a hint, and a loaded machine can deliver an earlier
		// one late (the raw XADD's, the Ack's): wait for the due one.
		for time.Until(due) > 20*time.Millisecond {
			t.Logf("a wake %s before the task was due; waiting for the due one", time.Until(due))
			waitWake(t, wake, 5*time.Second)
		}
		late := time.Since(due)
		t.Logf("woken %s after a task scheduled by the %s stream was due", late, map[bool]string{true: "same", false: "other"}[by == s])
		switch {
		case late < -20*time.Millisecond:
			t.Errorf("woken %s before the task was due", -late)
		case by == s && late > 300*time.Millisecond: // far less than maxBlock, but a loaded machine is slow
			t.Errorf("woken %s after a task this stream scheduled was due", late)
		}
		ds = streamtest.Poll(t, s, 10)
		if len(ds) != 1 {
			t.Fatalf("after the due wake-up Poll returned %d tasks", len(ds))
		}
		if err := s.Ack(ctx, ds...); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCloseStopsWatcherAtOnce checks that Close ends the watcher's
// blocking read without waiting for it to time out.
func TestCloseStopsWatcherAtOnce(t *testing.T) {
	c := testClient(t)
	s, err := New(c, Config{Prefix: uniquePrefix(t, c), Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(streamtest.Context(t)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the watcher block
	start := time.Now()
	if err := s.Close(streamtest.Context(t)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > maxBlock*4/5 {
		t.Errorf("Close took %s; the blocking read should end at once", took)
	}
	if n := c.Exists(streamtest.Context(t), s.stopKey()).Val(); n != 0 {
		t.Error("Close left the watcher's stop key behind")
	}
}

// TestGroupRecreated checks that the stream recovers when its stream key
// is gone, as after a Redis restart without persistence.
func TestGroupRecreated(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, task("x"))
	old := streamtest.Poll(t, s, 1)
	if err := c.Del(ctx, s.Keys().Stream, s.Keys().Tasks).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, old...); err != nil {
		t.Errorf("Ack after the group vanished: %v, want nil (the claim is gone)", err)
	}
	if _, err := s.Extend(ctx, old[0], time.Second); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("Extend after the group vanished: %v, want ErrLeaseLost", err)
	}
	streamtest.Enqueue(t, s, task("y"))
	ds := streamtest.Poll(t, s, 1)
	if len(ds) != 1 || ds[0].Task.Type != "y" {
		t.Fatalf("after the group vanished, Poll returned %v", ds)
	}
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}
}

// TestForgetConsumers checks that Close removes an idle consumer from the
// group, and keeps one that holds entries.
func TestForgetConsumers(t *testing.T) {
	c := testClient(t)
	prefix := uniquePrefix(t, c)
	ctx := streamtest.Context(t)
	idle, _ := New(c, Config{Prefix: prefix, Consumer: "idle"})
	busy, _ := New(c, Config{Prefix: prefix, Consumer: "busy", Lease: time.Hour})
	streamtest.Enqueue(t, busy, task("x"))
	if len(streamtest.Poll(t, busy, 1)) != 1 || len(streamtest.Poll(t, idle, 1)) != 0 {
		t.Fatal("unexpected deliveries")
	}
	for _, s := range []*Stream{idle, busy} {
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := c.XInfoConsumers(ctx, idle.Keys().Stream, Group).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].Name != "busy" {
		t.Errorf("consumers after Close: %+v; want only busy, which holds an entry", cs)
	}
}

// drain empties a wake channel.
func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func waitWake(t testing.TB, ch <-chan struct{}, within time.Duration) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("no wake-up within %s", within)
	}
}

// wantCounts checks the Inspector's counts; missing states mean 0.
func wantCounts(t testing.TB, s *Stream, want map[peonify.State]int) {
	t.Helper()
	got, err := s.Counts(streamtest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range peonify.States {
		if got[st] != want[st] {
			t.Errorf("Counts() = %v, want %v", got, want)
			return
		}
	}
}

// TestName: the processor names the stream "redis:" and its queue, the
// kind:name form every stream uses.
func TestName(t *testing.T) {
	s := newTestStream(t, testClient(t), Config{Queue: "emails"})
	if got := s.Name(); got != "redis:emails" {
		t.Errorf("Name() = %q, want redis:emails", got)
	}
}
