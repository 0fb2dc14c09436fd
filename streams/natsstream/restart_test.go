package natsstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	neturl "net/url"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
)

// The local server that TestServerRestart stops and starts, with the
// standard Debian commands. The JetStream store directory persists, so
// stored tasks survive the restart.
const (
	natsServerBin  = "/usr/sbin/nats-server"
	natsServerAddr = "127.0.0.1:4222"
)

var natsServerArgs = []string{"-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/var/lib/nats-server"}

// TestServerRestart stops the NATS server while a processor drains the
// stream, checks that Enqueue and Poll report the outage, starts the server
// again, and checks that the processor recovers by itself and completes
// every task. It leaves the server running, even when it fails.
func TestServerRestart(t *testing.T) {
	testenv.ServerFaults(t)
	if testing.Short() {
		t.Skip("restarts the NATS server; skipped with -short")
	}
	url := testenv.URL(t, "nats")
	if u, err := neturl.Parse(url); err != nil || u.Host != natsServerAddr {
		t.Skipf("restarts only a local server on %s; PEONIFY_TEST_NATS_URL is %s", natsServerAddr, url)
	}
	if _, err := exec.LookPath("start-stop-daemon"); err != nil {
		skipOrFail(t, "start-stop-daemon is not installed: cannot restart the NATS server")
	}
	if _, err := os.Stat(natsServerBin); err != nil {
		skipOrFail(t, natsServerBin+" is not installed: cannot restart the NATS server")
	}

	js := testJS(t)
	s, _ := newTestStream(t, js, Config{AckWait: 2 * time.Second})
	t.Cleanup(func() { ensureServer(t) }) // runs before the stream is deleted

	const n = 2000
	var tasks []*peonify.Task
	for range n {
		tasks = append(tasks, &peonify.Task{Type: "restart"})
	}
	streamtest.Enqueue(t, s, tasks...) // fills in the IDs

	var (
		mu      sync.Mutex
		done    = make(map[string]int, n)
		left    = make(map[string]bool, n) // enqueued tasks not yet done
		allDone = make(chan struct{})
	)
	for _, tk := range tasks {
		left[tk.ID] = true
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(done)
	}
	p, err := peonify.New(peonify.Config{
		Workers: 8,
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{"restart": peonify.HandlerFunc(func(ctx context.Context, tk *peonify.Task) error {
		time.Sleep(time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		done[tk.ID]++
		if left[tk.ID] {
			delete(left, tk.ID)
			if len(left) == 0 {
				close(allDone)
			}
		}
		return nil
	})})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(s); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()

	streamtest.WaitUntil(t, "a quarter of the tasks done", 30*time.Second, func() (bool, string) {
		done := count()
		return done >= n/4, fmt.Sprintf("%d of %d done", done, n)
	})
	stopServer(t)
	before := count()

	// The client buffers the publish and sends it after the reconnect, so
	// this task may be stored even though Enqueue reports the outage.
	ectx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err = s.Enqueue(ectx, &peonify.Task{Type: "restart"})
	cancel()
	if err == nil {
		t.Error("Enqueue returned nil while the server was down")
	}
	if _, err := s.Poll(context.Background(), 1); err == nil {
		t.Error("Poll returned nil while the server was down")
	}

	// The processor must notice the outage itself: its polls fail while
	// the server is down (how soon depends on when its queue runs low).
	streamtest.WaitUntil(t, "a poll error in the processor's stats", 20*time.Second, func() (bool, string) {
		st := p.Stats().Streams[0]
		return st.PollErrors > 0, fmt.Sprintf("stream stats %+v", st)
	})

	startServer(t)
	select {
	case <-allDone:
	case err := <-runErr:
		t.Fatalf("Run returned %v", err)
	case <-time.After(60 * time.Second):
		mu.Lock()
		t.Fatalf("after the restart, %d of %d tasks were still not done after 60s", len(left), n)
		mu.Unlock()
	}
	stop()
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	t.Logf("%d tasks done before the stop, %d in all; %d completions; stream stats %+v",
		before, count(), st.Succeeded, st.Streams[0])
	if st.Streams[0].PollErrors == 0 {
		t.Error("the processor saw no poll error during the outage")
	}
}

func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("PEONIFY_REQUIRE_SERVICES") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// answers reports whether the server accepts TCP connections.
func answers() bool {
	c, err := net.DialTimeout("tcp", natsServerAddr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func stopServer(t *testing.T) {
	t.Helper()
	out, err := exec.Command("start-stop-daemon", "--stop", "--exec", natsServerBin).CombinedOutput()
	if err != nil {
		t.Fatalf("stopping nats-server: %v\n%s", err, out)
	}
	streamtest.WaitUntil(t, "nats-server to stop", 20*time.Second, func() (bool, string) { return !answers(), "it still answers" })
}

func startServer(t *testing.T) {
	t.Helper()
	args := append([]string{"--start", "--oknodo", "--background", "--exec", natsServerBin, "--"}, natsServerArgs...)
	if out, err := exec.Command("start-stop-daemon", args...).CombinedOutput(); err != nil {
		t.Fatalf("starting nats-server: %v\n%s", err, out)
	}
	if err := waitJetStream(20 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// ensureServer starts the server if it does not answer, and waits until
// JetStream serves requests, so that later tests find it running.
func ensureServer(t *testing.T) {
	if !answers() {
		args := append([]string{"--start", "--oknodo", "--background", "--exec", natsServerBin, "--"}, natsServerArgs...)
		if out, err := exec.Command("start-stop-daemon", args...).CombinedOutput(); err != nil {
			t.Errorf("starting nats-server again: %v\n%s", err, out)
			return
		}
	}
	if err := waitJetStream(20 * time.Second); err != nil {
		t.Error(err)
	}
}

// waitJetStream waits until the server answers JetStream requests.
func waitJetStream(within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		if last = testenv.JetStreamReady("nats://" + natsServerAddr); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.Join(errors.New("nats-server did not serve JetStream requests in time"), last)
}
