package redisstream

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
)

// The standard commands that stop and start the local test server. The
// server keeps nothing on disk, like the one CI runs.
var (
	redisStop  = []string{"redis-cli", "-p", "6379", "shutdown", "nosave"}
	redisStart = []string{"redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "no"}
)

// TestServerRestart stops the Redis server under a running processor and
// starts it again. The server keeps nothing on disk, so the restart loses
// the queue (with appendonly yes it would not: that is the operator's
// choice); the processor must notice nothing but errors meanwhile, recover
// by itself, recreate its consumer group and run every task enqueued after
// the restart, woken by its watcher as before.
func TestServerRestart(t *testing.T) {
	testenv.ServerFaults(t)
	if testing.Short() {
		t.Skip("restarts the Redis server; skipped with -short")
	}
	addr := testenv.URL(t, "redis")
	if u, err := url.Parse(addr); err != nil || u.Host != "127.0.0.1:6379" && u.Host != "localhost:6379" {
		skipOrFail(t, "restarts the local Redis server, but PEONIFY_TEST_REDIS_URL is "+addr+", not redis://127.0.0.1:6379")
	}
	for _, bin := range []string{redisStop[0], redisStart[0]} {
		if _, err := exec.LookPath(bin); err != nil {
			skipOrFail(t, "restarts the local Redis server, but "+bin+" is not installed")
		}
	}
	// Whatever happens, leave the server running.
	t.Cleanup(func() {
		if !answers() {
			if out, err := exec.Command(redisStart[0], redisStart[1:]...).CombinedOutput(); err != nil {
				t.Errorf("starting redis-server again: %v\n%s", err, out)
			}
		}
		waitAnswers(t, true)
	})

	c := testClient(t)
	s := newTestStream(t, c, Config{Lease: 2 * time.Second})
	var (
		mu       sync.Mutex
		done     = make(map[string]bool)
		progress = make(chan struct{}, 1)
	)
	p, err := peonify.New(peonify.Config{Workers: 8, Logger: streamtest.Logger(t), ShutdownGrace: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.AddTaskList(peonify.TaskList{"restart": peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
		mu.Lock()
		done[tk.ID] = true
		mu.Unlock()
		select {
		case progress <- struct{}{}:
		default:
		}
		return nil
	})})
	_ = p.AddStream(s)
	defer streamtest.Run(t, p)()

	enqueueAndWait := func(label string, n int, within time.Duration) {
		t.Helper()
		tasks := make([]*peonify.Task, n)
		for i := range tasks {
			tasks[i] = &peonify.Task{ID: label + "-" + strconv.Itoa(i), Type: "restart"}
		}
		deadline := time.Now().Add(within)
		for {
			err := s.Enqueue(streamtest.Context(t), tasks...)
			if err == nil || isDup(err) { // a lost reply after the tasks were stored
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Enqueue %s: %v", label, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for {
			mu.Lock()
			left := 0
			for _, tk := range tasks {
				if !done[tk.ID] {
					left++
				}
			}
			mu.Unlock()
			if left == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of the %d %s tasks were not run within %s", left, n, label, within)
			}
			select {
			case <-progress:
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	enqueueAndWait("before", 200, 10*time.Second)

	if out, err := exec.Command(redisStop[0], redisStop[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("stopping redis-server: %v\n%s", err, out)
	}
	waitAnswers(t, false)
	if err := s.Enqueue(streamtest.Context(t), &peonify.Task{Type: "restart"}); err == nil {
		t.Error("Enqueue succeeded while the server was down")
	}
	time.Sleep(time.Second) // the processor's polls and the watcher fail meanwhile
	restarted := time.Now()
	if out, err := exec.Command(redisStart[0], redisStart[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("starting redis-server: %v\n%s", err, out)
	}
	waitAnswers(t, true)

	enqueueAndWait("after", 200, 30*time.Second)
	t.Logf("the processor ran the tasks enqueued after the restart %s after it", time.Since(restarted).Round(time.Millisecond))

	// Idle pickup works again: the watcher reconnected.
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	enqueueAndWait("idle", 1, 10*time.Second)
	t.Logf("an idle pickup after the restart took %s", time.Since(start).Round(time.Microsecond))
}

// answers reports whether the local server accepts connections.
func answers() bool {
	conn, err := net.DialTimeout("tcp", "127.0.0.1:6379", 200*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// waitAnswers waits until the local server accepts connections, or stops
// accepting them.
func waitAnswers(t *testing.T, up bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for answers() != up {
		if time.Now().After(deadline) {
			t.Fatalf("the Redis server did not %s within 15s", map[bool]string{true: "answer", false: "stop"}[up])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// skipOrFail skips the test with why, or fails it when
// PEONIFY_REQUIRE_SERVICES=1 asks for every test to run.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("PEONIFY_REQUIRE_SERVICES") == "1" {
		t.Fatal(why + "; PEONIFY_REQUIRE_SERVICES=1 makes that an error")
	}
	t.Skip(why)
}

// TestConnectionsKilled breaks every client connection several times while
// a processor drains a backlog: reads, acks and the watcher's blocking
// read fail or are resent by go-redis mid-flight. The server keeps its
// data, so no task may be lost; only tasks in flight at a break may run
// twice.
func TestConnectionsKilled(t *testing.T) {
	c := testClient(t)
	killer := testClient(t)
	s := newTestStream(t, c, Config{Lease: 2 * time.Second, RescueInterval: 100 * time.Millisecond})
	const n = 3000
	tasks := make([]*peonify.Task, n)
	for i := range tasks {
		tasks[i] = &peonify.Task{ID: "k-" + strconv.Itoa(i), Type: "kill"}
	}
	streamtest.Enqueue(t, s, tasks...)
	var (
		mu   sync.Mutex
		runs = make(map[string]int)
		all  = make(chan struct{})
	)
	stop := runProcessor(t, s, peonify.Config{Workers: 8, QueueSize: 64}, peonify.TaskList{
		"kill": peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
			time.Sleep(2 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			if runs[tk.ID]++; runs[tk.ID] == 1 && len(runs) == n {
				close(all)
			}
			return nil
		}),
	})
	for kill := 0; kill < 5; kill++ {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		if len(runs) == n {
			mu.Unlock()
			t.Fatalf("the processor finished before break %d: make the run longer", kill+1)
		}
		mu.Unlock()
		if err := killer.Do(streamtest.Context(t), "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		mu.Lock()
		t.Fatalf("%d of %d tasks ran within 30s of the connections breaking", len(runs), n)
	}
	stop()
	dups := 0
	for _, r := range runs {
		dups += r - 1
	}
	t.Logf("%d tasks ran through 5 broken connections, %d of them twice", n, dups)
	wantCounts(t, newTestStream(t, c, Config{Prefix: s.cfg.Prefix}), map[peonify.State]int{})
}
