package amqpstream

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
)

// testURL returns the broker of the tests, or skips the test.
func testURL(t testing.TB) string {
	t.Helper()
	return testenv.URL(t, "amqp")
}

// uniqueQueue returns a queue name that no other test uses, and deletes the
// queue, its dead-letter queue and its delay queues when the test ends.
func uniqueQueue(t testing.TB) string {
	t.Helper()
	q := "t." + streamtest.Name(t, 60)
	url := testURL(t)
	t.Cleanup(func() { deleteQueues(t, url, q) })
	return q
}

// deleteQueues removes every queue of a stream on queue q.
func deleteQueues(t testing.TB, url, q string) {
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Errorf("deleting the test's queues: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("deleting the test's queues: %v", err)
		return
	}
	for _, name := range append([]string{q, deadQueue(q)}, allDelayQueues(q)...) {
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			t.Errorf("deleting queue %s: %v", name, err)
			return
		}
	}
}

// newTestStream returns a stream on a fresh queue (unless cfg.Queue is
// set), closed when the test ends.
func newTestStream(t testing.TB, cfg Config) *Stream {
	t.Helper()
	if cfg.Queue == "" {
		cfg.Queue = uniqueQueue(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = streamtest.Logger(t)
	}
	s, err := New(testURL(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	streamtest.CloseAtEnd(t, s)
	return s
}

// pollN polls until it has n deliveries, failing the test after within.
func pollN(t testing.TB, s *Stream, n int, within time.Duration) []peonify.Delivery {
	t.Helper()
	deadline := time.Now().Add(within)
	var got []peonify.Delivery
	for len(got) < n {
		ds, err := s.Poll(streamtest.Context(t), n-len(got))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ds...)
		if len(ds) > 0 {
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d of %d deliveries within %s", len(got), n, within)
		}
		select {
		case <-s.Wake():
		case <-time.After(5 * time.Millisecond):
		}
	}
	return got
}

// nothingFor polls for d and fails the test if anything is delivered.
func nothingFor(t testing.TB, s *Stream, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		ds, err := s.Poll(streamtest.Context(t), 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) > 0 {
			t.Fatalf("Poll returned %d tasks, want none (first: %s)", len(ds), ds[0].Task.ID)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func task(typ string) *peonify.Task {
	return &peonify.Task{Type: typ, Payload: []byte(`{"n":1}`)}
}

// rawChannel returns a channel on a plain connection of its own, closed
// when the test ends.
func rawChannel(t testing.TB) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}
