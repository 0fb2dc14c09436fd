package redisstream

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// runProcessor runs a processor over s until the returned stop is called.
func runProcessor(t *testing.T, s *Stream, cfg peonify.Config, tl peonify.TaskList) (stop func()) {
	t.Helper()
	// Dead tasks are expected: log only errors.
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	p := streamtest.Processor(t, cfg, s, tl)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitCounts polls the Inspector until its counts are want.
func waitCounts(t *testing.T, s *Stream, want map[peonify.State]int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := s.Counts(streamtest.Context(t))
		if err != nil {
			t.Fatal(err)
		}
		same := true
		for _, st := range peonify.States {
			same = same && got[st] == want[st]
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Counts() = %v after %s, want %v", got, within, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProcessorRetriesAndDeadLetters runs a processor over tasks that
// succeed, fail once, always fail, fail permanently or have no handler,
// and checks where each ends up and with how many attempts.
func TestProcessorRetriesAndDeadLetters(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{Lease: 5 * time.Second})
	var (
		mu   sync.Mutex
		runs = make(map[string][]int) // task ID -> attempts seen
	)
	record := func(tk *peonify.Task) {
		mu.Lock()
		runs[tk.ID] = append(runs[tk.ID], tk.Attempt)
		mu.Unlock()
	}
	var tasks []*peonify.Task
	add := func(typ string, n int) {
		for i := range n {
			tasks = append(tasks, &peonify.Task{ID: typ + "-" + strconv.Itoa(i), Type: typ})
		}
	}
	add("ok", 50)
	add("flaky", 20)
	add("poison", 5)
	add("skip", 5)
	add("unknown", 2)
	streamtest.Enqueue(t, s, tasks...)

	runProcessor(t, s, peonify.Config{
		Workers:         8,
		PollInterval:    50 * time.Millisecond,
		MinPollInterval: time.Millisecond,
		Retry:           peonify.RetryPolicy{MaxAttempts: 3, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Jitter: -1},
	}, peonify.TaskList{
		"ok": peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error { record(tk); return nil }),
		"flaky": peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
			record(tk)
			if tk.Attempt == 1 {
				return errors.New("first attempt fails")
			}
			return nil
		}),
		"poison": peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
			record(tk)
			return errors.New("always fails")
		}),
		"skip": peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
			record(tk)
			return peonify.SkipRetry(errors.New("malformed"))
		}),
	})
	waitCounts(t, s, map[peonify.State]int{peonify.StateDead: 12}, 20*time.Second)

	mu.Lock()
	defer mu.Unlock()
	for _, tk := range tasks {
		got := runs[tk.ID]
		var want []int
		switch tk.Type {
		case "ok", "skip":
			want = []int{1}
		case "flaky":
			want = []int{1, 2}
		case "poison":
			want = []int{1, 2, 3}
		}
		if !slices.Equal(got, want) {
			t.Errorf("task %s ran as attempts %v, want %v", tk.ID, got, want)
		}
	}
	dead, err := s.List(streamtest.Context(t), peonify.ListOptions{State: peonify.StateDead})
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range dead {
		want := map[string]int{"poison": 3, "skip": 1, "unknown": 1}[info.Task.Type]
		if info.Attempts != want || info.LastError == "" {
			t.Errorf("dead task %s: %d attempts, last error %q; want %d attempts and an error", info.Task.ID, info.Attempts, info.LastError, want)
		}
	}
}

// TestProcessorShutdownReleases stops a processor while one task runs and
// others wait in its local queue: the waiting ones are handed back without
// counting an attempt, and the running one finishes and is acked.
func TestProcessorShutdownReleases(t *testing.T) {
	c := testClient(t)
	s := newTestStream(t, c, Config{Lease: 5 * time.Second})
	tasks := streamtest.Tasks(10, "slow")
	streamtest.Enqueue(t, s, tasks...)
	started := make(chan string, 10)
	release := make(chan struct{})
	stop := runProcessor(t, s, peonify.Config{Workers: 1, QueueSize: 20, LowWatermark: 10}, peonify.TaskList{
		"slow": peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
			started <- tk.ID
			<-release
			return nil
		}),
	})
	first := <-started
	go func() {
		time.Sleep(100 * time.Millisecond) // well into the shutdown
		close(release)
	}()
	stop()
	if len(started) != 0 {
		t.Fatalf("%d more tasks started after shutdown began", len(started))
	}
	next := newTestStream(t, c, Config{Prefix: s.cfg.Prefix}) // Run closed s
	wantCounts(t, next, map[peonify.State]int{peonify.StatePending: 9})
	if _, err := next.Get(streamtest.Context(t), first); !errors.Is(err, peonify.ErrNotFound) {
		t.Errorf("the task that ran during shutdown is still there: %v", err)
	}
	ds := streamtest.Poll(t, next, 20)
	if len(ds) != 9 {
		t.Fatalf("a new processor got %d tasks, want the 9 released ones", len(ds))
	}
	for _, d := range ds {
		if d.Task.Attempt != 1 {
			t.Errorf("released task %s came back as attempt %d, want 1", d.Task.ID, d.Task.Attempt)
		}
	}
	if err := next.Ack(streamtest.Context(t), ds...); err != nil {
		t.Fatal(err)
	}
}
