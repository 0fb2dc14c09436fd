package amqpstream

import (
	"context"
	"fmt"
	"github.com/peonify/peonify/internal/testenv"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// rabbitmqctl returns the path of the broker's control tool, or skips the
// test (fails it under PEONIFY_REQUIRE_SERVICES=1) if it is missing.
func rabbitmqctl(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		msg := "needs rabbitmqctl on PATH to stop and start the local broker"
		if os.Getenv("PEONIFY_REQUIRE_SERVICES") == "1" {
			t.Fatal(msg + "; PEONIFY_REQUIRE_SERVICES=1 makes a missing tool an error")
		}
		t.Skip(msg)
	}
	return path
}

// brokerAddr returns host:port of the test broker.
func brokerAddr(t *testing.T) string {
	t.Helper()
	u, err := amqp.ParseURI(testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(u.Host, fmt.Sprint(u.Port))
}

// answers reports whether an AMQP connection can be opened.
func answers(rawURL string) bool {
	conn, err := amqp.DialConfig(rawURL, amqp.Config{Dial: amqp.DefaultDial(time.Second)})
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// TestBrokerRestart stops the broker's application (rabbitmqctl stop_app)
// while a processor drains a queue and a producer enqueues, then starts it
// again: the stream reconnects by itself, and every task whose Enqueue
// returned nil is completed. The broker is started again in any case.
func TestBrokerRestart(t *testing.T) {
	testenv.ServerFaults(t)
	ctl := rabbitmqctl(t)
	rawURL := testURL(t)
	if u, _ := url.Parse(rawURL); u == nil || (u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost") {
		t.Skipf("the broker at %s is not local: not restarting it", brokerAddr(t))
	}
	run := func(args ...string) error {
		out, err := exec.Command(ctl, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("rabbitmqctl %v: %v\n%s", args, err, out)
		}
		return nil
	}
	s := newTestStream(t, Config{ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond})
	producer := newTestStream(t, Config{Queue: s.Queue(), ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond})
	t.Cleanup(func() {
		// Leave the broker running, whatever happened. Registered after
		// the streams, so it runs before their cleanups.
		if err := run("start_app"); err != nil {
			t.Error(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for !answers(rawURL) {
			if time.Now().After(deadline) {
				t.Error("the broker does not answer 60s after start_app")
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	var (
		mu     sync.Mutex
		done   = make(map[string]int)  // completions per task ID
		stored = make(map[string]bool) // tasks whose Enqueue returned nil
	)
	backlog := make([]*peonify.Task, 2000)
	for i := range backlog {
		backlog[i] = &peonify.Task{ID: fmt.Sprintf("backlog-%04d", i), Type: "restart"}
		stored[backlog[i].ID] = true
	}
	streamtest.Enqueue(t, producer, backlog...)

	// A producer that goes on through the outage: a task every 2ms, each
	// counted as stored only when Enqueue returned nil.
	produce, stopProducing := context.WithCancel(context.Background())
	defer stopProducing()
	var wg sync.WaitGroup
	failedEnqueues := 0
	wg.Go(func() {
		for i := 0; produce.Err() == nil; i++ {
			tk := &peonify.Task{ID: fmt.Sprintf("live-%05d", i), Type: "restart"}
			ctx, cancel := context.WithTimeout(produce, 2*time.Second)
			err := producer.Enqueue(ctx, tk)
			cancel()
			mu.Lock()
			if err == nil {
				stored[tk.ID] = true
			} else {
				failedEnqueues++
			}
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	})

	p, err := peonify.New(peonify.Config{
		Workers:      8,
		PollInterval: 100 * time.Millisecond,
		Logger:       slog.New(slog.DiscardHandler),
		OnEvent: func(e peonify.Event) {
			if e.Kind == peonify.EventSucceeded {
				mu.Lock()
				done[e.Task.ID]++
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.AddTaskList(peonify.TaskList{"restart": peonify.HandlerFunc(func(context.Context, *peonify.Task) error {
		time.Sleep(2 * time.Millisecond) // so that the outage comes mid-run
		return nil
	})})
	_ = p.AddStream(s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()

	count := func() (completed, pending int) {
		mu.Lock()
		defer mu.Unlock()
		for id := range stored {
			if done[id] == 0 {
				pending++
			}
		}
		return len(done), pending
	}
	waitUntil := func(what string, limit time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for !cond() {
			if time.Now().After(deadline) {
				c, pend := count()
				t.Fatalf("waited %s for %s (%d tasks completed, %d stored tasks not yet)", limit, what, c, pend)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitUntil("300 completions", 20*time.Second, func() bool { c, _ := count(); return c >= 300 })
	before, _ := count()
	if err := run("stop_app"); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	waitUntil("the stream to notice the outage", 20*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.cur == nil
	})
	if err := run("start_app"); err != nil {
		t.Fatal(err)
	}
	waitUntil("the broker to answer after start_app", 60*time.Second, func() bool { return answers(rawURL) })
	outage := time.Since(stopped)
	waitUntil("the stream to reconnect", 30*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.cur != nil && !s.cur.dead()
	})
	reconnected := time.Since(stopped)
	// Let the producer store some tasks after the restart, then stop it.
	mu.Lock()
	mark := len(stored)
	mu.Unlock()
	waitUntil("the producer to enqueue again", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(stored) >= mark+100
	})
	stopProducing()
	wg.Wait()
	waitUntil("every stored task to complete", 60*time.Second, func() bool { _, pend := count(); return pend == 0 })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	completed, _ := count()
	mu.Lock()
	runs := 0
	for _, c := range done {
		runs += c
	}
	t.Logf("%d tasks completed before the broker stopped; outage %s, reconnected %s after stop_app; "+
		"%d stored tasks all completed (%d ran twice); %d enqueues failed during the outage",
		before, outage.Round(time.Millisecond), reconnected.Round(time.Millisecond), len(stored), runs-completed, failedEnqueues)
	mu.Unlock()
}
