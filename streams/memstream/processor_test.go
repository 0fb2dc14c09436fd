package memstream_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// run runs p until stop is called, which waits for Run to return nil.
func run(t *testing.T, p *peonify.Processor) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newProcessor(t *testing.T, workers int, h peonify.Handler) *peonify.Processor {
	t.Helper()
	p, err := peonify.New(peonify.Config{
		Workers: workers,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Retry:   peonify.RetryPolicy{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Jitter: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddTaskList(peonify.TaskList{"t": h}); err != nil {
		t.Fatal(err)
	}
	return p
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func streamPolls(p *peonify.Processor) uint64 {
	var n uint64
	for _, st := range p.Stats().Streams {
		n += st.Polls
	}
	return n
}

// TestProcessorPerKeyLimits runs a processor over a stream with a PerKey
// limit: no key ever runs more than its limit, a held key runs nothing
// while the processor idles on a handful of polls, and changing the limits
// starts the held tasks at once, through Wake, not at the next poll.
func TestProcessorPerKeyLimits(t *testing.T) {
	s := memstream.New(memstream.Config{})
	var (
		mu      sync.Mutex
		running = map[string]int{}
		most    = map[string]int{}
		done    = map[string]int{}
	)
	p := newProcessor(t, 16, peonify.HandlerFunc(func(ctx context.Context, tk *peonify.Task) error {
		mu.Lock()
		running[tk.Key]++
		most[tk.Key] = max(most[tk.Key], running[tk.Key])
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		running[tk.Key]--
		done[tk.Key]++
		mu.Unlock()
		return nil
	}))
	limit := peonify.Limit{Type: "t", PerKey: true, Concurrency: 1, KeyConcurrency: map[string]int{"gold": 3, "held": 0}}
	if err := p.AddStream(s, peonify.Limits(limit)); err != nil {
		t.Fatal(err)
	}
	var tasks []*peonify.Task
	for i := range 300 {
		key := []string{"a", "b", "c", "gold", "gold"}[i%5]
		tasks = append(tasks, &peonify.Task{Type: "t", Key: key})
	}
	tasks = append(tasks, &peonify.Task{Type: "t", Key: "held"}, &peonify.Task{Type: "t", Key: "held"})
	enqueue(t, s, tasks...)
	stop := run(t, p)

	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range done {
			n += c
		}
		return n
	}
	eventually(t, 10*time.Second, "the 300 tasks not held ran", func() bool { return total() == 300 })
	mu.Lock()
	for key, n := range most {
		if lim, _ := limit.ConcurrencyFor(key); n > lim {
			t.Errorf("key %s ran %d tasks at once, limit %d", key, n, lim)
		}
	}
	if most["gold"] < 2 {
		t.Logf("key gold ran at most %d tasks at once (limit 3)", most["gold"])
	}
	mu.Unlock()

	// Every ready task is held: the processor idles, polling only as its
	// idle backoff says.
	time.Sleep(50 * time.Millisecond)
	before := streamPolls(p)
	time.Sleep(500 * time.Millisecond)
	polls := streamPolls(p) - before
	t.Logf("%d polls in 500ms while every ready task was held back", polls)
	if polls > 10 {
		t.Errorf("%d polls in 500ms while every ready task was held back: a blocked stream must not be polled in a loop", polls)
	}
	if total() != 300 {
		t.Fatalf("%d tasks ran, but key held's 2 run nothing under KeyConcurrency 0", total())
	}

	start := time.Now()
	if err := s.SetLimits([]peonify.Limit{{Type: "t", PerKey: true, Concurrency: 1}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the held tasks ran once released", func() bool { return total() == 302 })
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Errorf("the held tasks took %s to run once released: Wake should start them within milliseconds", took)
	}
	stop()
}

// TestProcessorOrdered runs ordered keys through a processor with tasks
// that fail once: each key's tasks start in enqueue order, one at a time,
// the failed ones retried in place.
func TestProcessorOrdered(t *testing.T) {
	s := memstream.New(memstream.Config{})
	var (
		mu      sync.Mutex
		starts  = map[string][]string{} // key -> task IDs in start order
		running = map[string]bool{}
		overlap []string
	)
	p := newProcessor(t, 8, peonify.HandlerFunc(func(ctx context.Context, tk *peonify.Task) error {
		mu.Lock()
		if running[tk.Key] {
			overlap = append(overlap, tk.ID)
		}
		running[tk.Key] = true
		starts[tk.Key] = append(starts[tk.Key], tk.ID)
		mu.Unlock()
		defer func() {
			mu.Lock()
			running[tk.Key] = false
			mu.Unlock()
		}()
		if tk.Attempt == 1 && tk.Payload[0] == 'f' {
			return errors.New("fails once")
		}
		return nil
	}))
	if err := p.AddStream(s, peonify.Limits(peonify.Limit{Type: "t", PerKey: true, Ordered: true})); err != nil {
		t.Fatal(err)
	}
	const keys, perKey = 10, 20
	want := map[string][]string{}
	var tasks []*peonify.Task
	for i := range keys * perKey {
		key := fmt.Sprintf("k%d", i%keys)
		id := fmt.Sprintf("%s-%03d", key, i/keys)
		payload := "ok"
		if i%7 == 0 {
			payload = "fails once"
			want[key] = append(want[key], id) // the failed attempt
		}
		want[key] = append(want[key], id)
		tasks = append(tasks, &peonify.Task{ID: id, Type: "t", Key: key, Payload: []byte(payload)})
	}
	enqueue(t, s, tasks...)
	stop := run(t, p)
	eventually(t, 10*time.Second, "every task ran", func() bool { return p.Stats().Succeeded == keys*perKey })
	stop()
	mu.Lock()
	defer mu.Unlock()
	if len(overlap) > 0 {
		t.Errorf("tasks %v started while another task of their key ran", overlap)
	}
	for key, ids := range want {
		if !slices.Equal(starts[key], ids) {
			t.Errorf("key %s started %v, want %v (enqueue order, a failed task retried in place)", key, starts[key], ids)
		}
	}
}
