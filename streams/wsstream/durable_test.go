package wsstream

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// crashEnv makes the test binary the server of TestKillAfterAck; its value
// is the directory of the store, as JSON.
const crashEnv = "WSSTREAM_CRASH_CHILD"

// TestKillAfterAck runs the server in a child process over a SQLite store,
// sends it tasks from several goroutines, and kills it with SIGKILL right
// after an ack arrives. Every task that was acknowledged must be in the
// store afterwards: an ack means the task is durable.
func TestKillAfterAck(t *testing.T) {
	intaketest.KillAfterAck(t, "TestCrashServer", crashEnv, nil, func(t *testing.T, addr string) func(context.Context, string, []byte) bool {
		c, err := Dial(context.Background(), "ws://"+addr, DialOptions{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return func(ctx context.Context, id string, payload []byte) bool {
			return c.Send(ctx, &peonify.Task{ID: id, Type: "crash", Payload: payload}) == nil
		}
	})
}

// TestCrashServer is the server process that TestKillAfterAck kills. Run
// alone, it skips.
func TestCrashServer(t *testing.T) {
	var dir string
	streamtest.Orders(t, crashEnv, &dir)
	store, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(store, Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	_ = http.Serve(streamtest.Listen(t), h) // until killed
}

// Tasks sent by a client run on a Processor reading the same store, with
// their payloads byte-exact.
func TestProcessorEndToEnd(t *testing.T) {
	store, err := sqlitestream.Open(filepath.Join(t.TempDir(), "tasks.db"), sqlitestream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	h, url := serve(t, store, Config{})

	const n = 60
	var (
		mu   sync.Mutex
		got  = make(map[string][]byte)
		done = make(chan struct{})
	)
	p := streamtest.Processor(t, peonify.Config{Workers: 4, Logger: intaketest.Logger(t)}, store, peonify.TaskList{
		"echo": peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
			mu.Lock()
			defer mu.Unlock()
			got[tk.ID] = tk.Payload
			if len(got) == n {
				close(done)
			}
			return nil
		}),
	})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()

	c := dial(t, url, DialOptions{})
	want := make(map[string][]byte)
	var wg sync.WaitGroup
	for i := range n {
		id := fmt.Sprint("e", i)
		payload := []byte(fmt.Sprintf(`{"i": %d}`, i))
		if i%3 == 0 {
			payload = []byte{byte(i), 0xff, 0}
		}
		want[id] = payload
		wg.Go(func() {
			if err := c.Send(context.Background(), &peonify.Task{ID: id, Type: "echo", Payload: payload}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the processor did not run every task within 20s")
	}
	if err := h.Shutdown(context.Background()); err != nil { // stop the intake before the store closes
		t.Fatal(err)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, p := range want {
		if !bytes.Equal(got[id], p) {
			t.Errorf("task %s ran with payload %q, want %q", id, got[id], p)
		}
	}
}
