package pgstream

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

func TestEnqueueDuplicates(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)

	a := task("a")
	a.ID = "fixed-id"
	streamtest.Enqueue(t, s, a)

	again := task("a")
	again.ID = "fixed-id"
	fresh := task("b")
	err := s.Enqueue(ctx, again, fresh)
	var de *peonify.DuplicateError
	if !errors.As(err, &de) || !isDup(err) || !slices.Equal(de.IDs, []string{"fixed-id"}) {
		t.Fatalf("Enqueue with a stored ID = %v, want DuplicateError for fixed-id only", err)
	}
	if _, err := s.Get(ctx, fresh.ID); err != nil {
		t.Fatalf("the other task of the call was not stored: %v", err)
	}

	// The same ID twice in one call.
	x1, x2 := task("x"), task("x")
	x1.ID, x2.ID = "twice", "twice"
	if err := s.Enqueue(ctx, x1, x2); !errors.As(err, &de) || !slices.Equal(de.IDs, []string{"twice"}) {
		t.Fatalf("same ID twice in one call = %v", err)
	}

	// A unique key is unique among live tasks only.
	u1, u2, u3 := task("u"), task("u"), task("u")
	u1.UniqueKey, u2.UniqueKey, u3.UniqueKey = "slot-1", "slot-1", "slot-1"
	if err := s.Enqueue(ctx, u1, u2); !errors.As(err, &de) || !slices.Equal(de.IDs, []string{u2.ID}) {
		t.Fatalf("live unique key twice in one call = %v, want %s reported", err, u2.ID)
	}
	if err := s.Enqueue(ctx, u3); !isDup(err) {
		t.Fatalf("live unique key = %v, want ErrDuplicate", err)
	}
	if _, err := s.Purge(ctx, peonify.StatePending); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, u3); err != nil {
		t.Fatalf("unique key after its task is gone = %v, want stored", err)
	}

	// Another queue has its own IDs.
	o := newTestStream(t, pool, Config{})
	a2 := task("a")
	a2.ID = "fixed-id"
	if err := o.Enqueue(ctx, a2); err != nil {
		t.Fatalf("same ID in another queue: %v", err)
	}
}

func TestEnqueueInvalidStoresNothing(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)
	for name, bad := range map[string]*peonify.Task{
		"no type":       {},
		"nul in type":   {Type: "a\x00b"},
		"bad utf8 key":  {Type: "a", UniqueKey: "\xff"},
		"negative max":  {Type: "a", MaxAttempts: -1},
		"huge priority": {Type: "a", Priority: 1 << 40},
		"nul header":    {Type: "a", Headers: map[string]string{"k": "\x00"}},
	} {
		ok := task("ok")
		err := s.Enqueue(ctx, ok, bad)
		var ie *peonify.InvalidTaskError
		if !errors.As(err, &ie) {
			t.Errorf("%s: Enqueue = %v, want *peonify.InvalidTaskError", name, err)
		}
	}
	if err := s.Enqueue(ctx, nil); err == nil {
		t.Error("Enqueue(nil task) succeeded")
	}
	if c, err := s.Counts(ctx); err != nil || len(c) != 0 {
		t.Fatalf("an invalid batch stored tasks: %v %v", c, err)
	}
	if err := s.Enqueue(ctx); err != nil {
		t.Fatalf("empty Enqueue: %v", err)
	}
}

func TestEnqueueLargeBatchUsesCopyAndFindsDuplicates(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)
	pre := task("p")
	pre.ID = "already-there"
	streamtest.Enqueue(t, s, pre)

	var tasks []*peonify.Task
	for i := range 3 * CopyThreshold {
		tk := &peonify.Task{Type: "bulk", Payload: []byte(fmt.Sprint(i)), Priority: i % 5}
		if i%50 == 0 {
			tk.Headers = map[string]string{"i": fmt.Sprint(i)}
		}
		tasks = append(tasks, tk)
	}
	tasks[10].ID = "already-there"
	tasks[20].UniqueKey, tasks[21].UniqueKey = "u", "u"
	err := s.Enqueue(ctx, tasks...)
	var de *peonify.DuplicateError
	if !errors.As(err, &de) || !slices.Equal(de.IDs, []string{"already-there", tasks[21].ID}) {
		t.Fatalf("bulk Enqueue = %v, want duplicates already-there and %s", err, tasks[21].ID)
	}
	counts, err := s.Counts(ctx)
	if err != nil || counts[peonify.StatePending] != 3*CopyThreshold-1 {
		t.Fatalf("Counts = %v, %v; want %d pending", counts, err, 3*CopyThreshold-1)
	}
	info, err := s.Get(ctx, tasks[50].ID)
	if err != nil || info.Task.Headers["i"] != "50" || string(info.Task.Payload) != "50" {
		t.Fatalf("bulk task 50 stored as %+v, %v", info.Task, err)
	}
	if info, err := s.Get(ctx, tasks[51].ID); err != nil || info.Task.Headers != nil {
		t.Fatalf("bulk task 51 stored as %+v, %v", info.Task, err)
	}
}

func TestEnqueueTx(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)

	// Rolled back: the task never existed.
	rolled := task("order-created")
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnqueueTx(ctx, tx, rolled); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, rolled.ID); !errors.Is(err, peonify.ErrNotFound) {
		t.Fatalf("task of a rolled-back transaction: %v, want ErrNotFound", err)
	}

	// Committed: the task exists with the business change, and is not
	// visible before the commit.
	committed := task("order-created")
	var bulk []*peonify.Task
	for range CopyThreshold + 1 {
		bulk = append(bulk, task("bulk"))
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := s.EnqueueTx(ctx, tx, committed); err != nil {
			return err
		}
		// Two bulk loads in one transaction: the COPY path cleans up after
		// itself.
		if err := s.EnqueueTx(ctx, tx, bulk[:CopyThreshold/2+1]...); err != nil {
			return err
		}
		if err := s.EnqueueTx(ctx, tx, bulk...); !isDup(err) {
			return fmt.Errorf("re-enqueueing in the same tx = %v, want duplicates", err)
		}
		if ds, err := s.Poll(ctx, 1); err != nil || len(ds) != 0 {
			return fmt.Errorf("task visible before commit: %v %v", ds, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, committed.ID); err != nil {
		t.Fatalf("task of a committed transaction: %v", err)
	}
	if c, _ := s.Counts(ctx); c[peonify.StatePending] != len(bulk)+1 {
		t.Fatalf("Counts = %v, want %d pending", c, len(bulk)+1)
	}
	if err := s.EnqueueTx(ctx, nil, task("x")); err == nil {
		t.Fatal("EnqueueTx(nil tx) succeeded")
	}
}

func TestEnqueueLargeBatchWithoutDuplicates(t *testing.T) {
	pool := testPool(t)
	s := newTestStream(t, pool, Config{})
	ctx := streamtest.Context(t)
	var tasks []*peonify.Task
	for i := range 2 * CopyThreshold {
		tk := &peonify.Task{Type: "bulk", Payload: []byte{byte(i), 0}, Headers: map[string]string{"i": fmt.Sprint(i)}}
		if i%4 == 0 {
			tk.RunAt = time.Now().Add(time.Hour)
		}
		if i%10 == 0 {
			tk.UniqueKey = fmt.Sprint("key-", i)
		}
		tasks = append(tasks, tk)
	}
	if err := s.Enqueue(ctx, tasks...); err != nil {
		t.Fatal(err)
	}
	c, err := s.Counts(ctx)
	if err != nil || c[peonify.StateScheduled] != CopyThreshold/2 || c[peonify.StatePending] != 3*CopyThreshold/2 {
		t.Fatalf("Counts = %v, %v", c, err)
	}
	for _, i := range []int{0, 1, 10} {
		info, err := s.Get(ctx, tasks[i].ID)
		if err != nil || info.Task.Headers["i"] != fmt.Sprint(i) || info.Task.UniqueKey != tasks[i].UniqueKey ||
			!bytes.Equal(info.Task.Payload, tasks[i].Payload) || (i%4 == 0) != (info.State == peonify.StateScheduled) {
			t.Fatalf("task %d stored as %+v, %v", i, info, err)
		}
	}
	// A unique key already live makes the whole COPY fail; the batch is
	// stored again without it.
	again := []*peonify.Task{{Type: "bulk", UniqueKey: "key-10"}}
	for range CopyThreshold {
		again = append(again, &peonify.Task{Type: "bulk"})
	}
	var de *peonify.DuplicateError
	if err := s.Enqueue(ctx, again...); !errors.As(err, &de) || !slices.Equal(de.IDs, []string{again[0].ID}) {
		t.Fatalf("bulk Enqueue with a live unique key = %v", err)
	}
	if c, _ := s.Counts(ctx); c[peonify.StatePending] != 3*CopyThreshold/2+CopyThreshold {
		t.Fatalf("Counts = %v", c)
	}
}
