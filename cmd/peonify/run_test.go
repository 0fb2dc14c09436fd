package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/periodic"
)

// A periodic scheduler that cannot run is logged and stops the daemon,
// rather than leaving it running without its periodic tasks.
func TestSchedulerThatCannotRunStopsTheDaemon(t *testing.T) {
	s, err := periodic.New(discardEnqueuer{}, periodic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add(periodic.Job{Name: "hourly", Spec: "@every 1h", Task: peonify.Task{Type: "t"}}); err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(done); err != nil { // a Scheduler runs once: Run fails from now on
		t.Fatal(err)
	}

	var logs streamtest.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	failed := make(chan error, 1)
	wg := runSchedulers(ctx, []*periodic.Scheduler{s}, log, func(err error) { failed <- err })
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "periodic tasks cannot run") || !strings.Contains(err.Error(), "Run called twice") {
			t.Errorf("the daemon stops with %q, want the scheduler's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the scheduler's error did not stop the daemon; log:\n%s", &logs)
	}
	stop()
	wg.Wait()
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "periodic tasks cannot run") {
		t.Errorf("the scheduler's error is not logged:\n%s", l)
	}
}
