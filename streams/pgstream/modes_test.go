package pgstream

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
)

// TestQueryExecModes runs the main paths with the query modes that
// connection poolers in transaction mode need (no prepared statements).
func TestQueryExecModes(t *testing.T) {
	testPool(t) // migrated
	for name, mode := range map[string]pgx.QueryExecMode{
		"exec":   pgx.QueryExecModeExec,
		"simple": pgx.QueryExecModeSimpleProtocol,
	} {
		t.Run(name, func(t *testing.T) {
			pool := openPool(t, testenv.URL(t, "postgres"), func(cfg *pgxpool.Config) {
				cfg.ConnConfig.DefaultQueryExecMode = mode
			})
			s := newTestStream(t, pool, Config{NoListen: true})
			ctx := streamtest.Context(t)

			small := &peonify.Task{Type: "a", Payload: []byte{0, 1, 0xff}, Headers: map[string]string{"h": "v"},
				UniqueKey: "u", RunAt: time.Now().Add(-time.Second)}
			streamtest.Enqueue(t, s, small)
			bulk := streamtest.Tasks(CopyThreshold+1, "bulk")
			streamtest.Enqueue(t, s, bulk...)
			if err := s.Enqueue(ctx, small); !isDup(err) {
				t.Fatalf("duplicate = %v", err)
			}
			ds := streamtest.Poll(t, s, 500)
			if len(ds) != len(bulk)+1 {
				t.Fatalf("polled %d", len(ds))
			}
			if d, err := s.Extend(ctx, ds[0], time.Minute); err != nil || d.Deadline.IsZero() {
				t.Fatalf("Extend = %v", err)
			}
			if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Hour, Reason: "r"}); err != nil {
				t.Fatal(err)
			}
			if err := s.Ack(ctx, ds[1:]...); err != nil {
				t.Fatal(err)
			}
			c, err := s.Counts(ctx)
			if err != nil || c[peonify.StateScheduled] != 1 || len(c) != 1 {
				t.Fatalf("Counts = %v, %v", c, err)
			}
			if _, err := s.List(ctx, peonify.ListOptions{State: peonify.StateScheduled, Type: "a"}); err != nil {
				t.Fatal(err)
			}
			if err := s.Pause(ctx); err != nil {
				t.Fatal(err)
			}
			if err := s.Resume(ctx); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.rescue(ctx); err != nil {
				t.Fatal(err)
			}

			// The limited claim: a transaction over two batches.
			err = s.SetLimits([]peonify.Limit{
				{PerKey: true, Concurrency: 1, KeyConcurrency: map[string]int{"k'2": 2}},
				{Type: "r", Rate: 100, Burst: 3}, {Type: "o", PerKey: true, Ordered: true}})
			if err != nil {
				t.Fatal(err)
			}
			streamtest.Enqueue(t, s, append(append(keyed("t", "k1", 2), keyed("t", "k'2", 3)...), keyed("r", "", 5)...)...)
			if ds := streamtest.Poll(t, s, 100); len(ds) != 6 {
				t.Fatalf("limited poll claimed %d, want 1 + 2 + 3", len(ds))
			} else if err := s.Ack(ctx, ds...); err != nil {
				t.Fatal(err)
			}
			if _, err := s.LimitStats(ctx); err != nil {
				t.Fatal(err)
			}

			// Workflows, results, progress, cancellation.
			if err := s.SetLimits(nil); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Purge(ctx, peonify.StatePending); err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{3, CopyThreshold + 1} {
				w := &peonify.Workflow{}
				a := w.Add(&peonify.Task{Type: "wa"})
				for range n - 2 {
					w.Add(&peonify.Task{Type: "wb", Headers: map[string]string{"h": "v"}}, a)
				}
				last := w.Add(&peonify.Task{Type: "wc", AllowFailedParents: true}, w.Tasks[1:]...)
				if err := s.EnqueueWorkflow(ctx, w); err != nil {
					t.Fatal(err)
				}
				da := streamtest.Poll(t, s, 10)
				if len(da) != 1 {
					t.Fatalf("polled %d, want the workflow's root", len(da))
				}
				if err := s.SetProgress(ctx, da[0], peonify.Progress{Fraction: 0.5, Message: "half"}); err != nil {
					t.Fatal(err)
				}
				child := &peonify.Task{ID: a.ID + ".c1", Type: "wb", Workflow: w.ID}
				if err := s.Spawn(ctx, da[0], child); err != nil {
					t.Fatal(err)
				}
				da[0].Result = []byte{0, 1}
				if err := s.Ack(ctx, da...); err != nil {
					t.Fatal(err)
				}
				// The root's dependents wait for its child too.
				dc := streamtest.Poll(t, s, 500)
				if len(dc) != 1 || dc[0].Task.ID != child.ID {
					t.Fatalf("polled %d after the root's ack, want its child", len(dc))
				}
				if err := s.Ack(ctx, dc...); err != nil {
					t.Fatal(err)
				}
				ds := streamtest.Poll(t, s, 500)
				if len(ds) != n-2 {
					t.Fatalf("polled %d after the child's ack, want %d", len(ds), n-2)
				}
				for i := range ds {
					if i%2 == 0 {
						ds[i].Result = []byte("r")
					}
				}
				if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "x"}); err != nil {
					t.Fatal(err)
				}
				if err := s.Ack(ctx, ds[1:]...); err != nil {
					t.Fatal(err)
				}
				if res, err := s.Results(ctx, a.ID); err != nil || string(res[a.ID]) != "\x00\x01" {
					t.Fatalf("Results = %q, %v", res, err)
				}
				if info, err := s.Wait(ctx, a.ID); err != nil || info.State != peonify.StateDone {
					t.Fatalf("Wait = %+v, %v", info, err)
				}
				if _, err := s.GetWorkflow(ctx, w.ID); err != nil {
					t.Fatal(err)
				}
				if n, err := s.CancelWorkflow(ctx, w.ID); err != nil || n != 1 {
					t.Fatalf("CancelWorkflow = %d, %v; want the last task", n, err)
				}
				if _, err := s.Get(ctx, last.ID); err != nil {
					t.Fatal(err)
				}
			}
			if n, err := s.Purge(ctx, peonify.StateCancelled); err != nil || n != 2 {
				t.Fatalf("Purge(cancelled) = %d, %v", n, err)
			}
			if _, err := s.Delete(ctx, "no-such-task"); err != nil {
				t.Fatal(err)
			}
		})
	}
}
