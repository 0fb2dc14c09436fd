package chaostest

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifytest"
	"github.com/peonify/peonify/streams/memstream"
)

// The processor needs no clock of its own for tests of its timing: it and
// memstream take every time from the time package, so inside a
// testing/synctest bubble they run on the bubble's virtual clock. Hours of
// timeouts, leases, backoffs and grace periods pass in milliseconds, and
// exactly. (Streams on a server cannot run in a bubble: their leases run
// on the server's clock, and network I/O is not durably blocking.)

// runVirtual runs a processor on a memstream holding tasks, inside a
// synctest bubble, until stop is closed; it returns Run's error.
func runVirtual(t *testing.T, cfg peonify.Config, s peonify.Stream, h peonify.Handler, stop <-chan struct{}) error {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	p, err := peonify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddTaskList(peonify.TaskList{"t": h}); err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(s); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- p.Run(ctx) }()
	<-stop
	cancel()
	return <-errc
}

func TestVirtualTime(t *testing.T) {
	t.Run("task timeout and lease renewals", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			mem := memstream.New(memstream.Config{Lease: 30 * time.Second})
			s := peonifytest.NewFaultStream(mem)
			if err := mem.Enqueue(t.Context(), &peonify.Task{ID: "a", Type: "t"}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			var took time.Duration
			var cause error
			done := make(chan struct{})
			h := peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
				<-ctx.Done()
				took, cause = time.Since(start), context.Cause(ctx)
				close(done)
				return ctx.Err()
			})
			if err := runVirtual(t, peonify.Config{Workers: 1, TaskTimeout: time.Hour}, s, h, done); err != nil {
				t.Fatal(err)
			}
			if took != time.Hour || !errors.Is(cause, peonify.ErrTaskTimeout) {
				t.Errorf("the handler's context ended after %s with %v; want 1h and ErrTaskTimeout", took, cause)
			}
			// One renewal each third of the 30s lease: 360 in the hour.
			n := s.Calls(peonifytest.OpExtend)
			if n < 355 || n > 361 {
				t.Errorf("the lease was extended %d times in an hour, want about 360", n)
			}
			t.Logf("timed out after %s of virtual time, %d lease renewals", took, n)
		})
	})

	t.Run("retry backoff", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := memstream.New(memstream.Config{})
			if err := s.Enqueue(t.Context(), &peonify.Task{ID: "a", Type: "t"}); err != nil {
				t.Fatal(err)
			}
			var runs []time.Time
			done := make(chan struct{})
			h := peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
				runs = append(runs, time.Now())
				if len(runs) < 3 {
					return errors.New("not yet")
				}
				close(done)
				return nil
			})
			cfg := peonify.Config{Retry: peonify.RetryPolicy{MinBackoff: time.Minute, Jitter: -1}}
			if err := runVirtual(t, cfg, s, h, done); err != nil {
				t.Fatal(err)
			}
			// Backoff doubles from a minute; the processor polls an idle
			// stream at least every PollInterval (1s), and a memstream
			// wakes it when a delay ends.
			for i, want := range []time.Duration{time.Minute, 2 * time.Minute} {
				got := runs[i+1].Sub(runs[i])
				if got < want || got > want+time.Second {
					t.Errorf("attempt %d ran %s after attempt %d, want %s", i+2, got, i+1, want)
				}
				t.Logf("attempt %d ran %s after attempt %d", i+2, got, i+1)
			}
		})
	})

	t.Run("shutdown grace with a handler that ignores its context", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := memstream.New(memstream.Config{})
			if err := s.Enqueue(t.Context(), &peonify.Task{ID: "a", Type: "t"}); err != nil {
				t.Fatal(err)
			}
			started, release := make(chan struct{}), make(chan struct{})
			h := peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
				close(started)
				<-release // ignores its context
				return nil
			})
			stop := make(chan struct{})
			var stopped time.Time
			var err error
			done := make(chan struct{})
			go func() {
				err = runVirtual(t, peonify.Config{ShutdownGrace: 25 * time.Second}, s, h, stop)
				stopped = time.Now()
				close(done)
			}()
			<-started
			begin := time.Now()
			close(stop)
			<-done
			close(release) // let the abandoned handler end, so the bubble can
			// Grace, then 3s more for the cancelled handler (a tenth of the
			// 33s ShutdownTimeout, at most 3s), then Run gives up.
			if took := stopped.Sub(begin); took != 28*time.Second || err == nil {
				t.Errorf("Run returned %v after %s of shutdown; want an error naming the handler after 28s", err, took)
			}
			synctest.Wait()
		})
	})
}
