package intaketest

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// KillAfterAck proves that an acknowledgement means the task is durable,
// across a crash of the intake's process. It starts the test function
// named test as a child (streamtest.StartChild with env), whose orders are
// a directory as a string: the child serves the intake, on
// streamtest.Listen, over a SQLite store in the file tasks.db of that
// directory. connect returns a sender to the child's address, which the
// test's goroutines call at once to send one task each and learn whether
// it was accepted (false for any other answer, or an error, quietly: the
// kill breaks the calls in flight). Once enough tasks are accepted the
// child is killed with SIGKILL, at once, and every accepted task must be
// in the store, byte for byte. taskID maps a sent ID to the stored one
// (nil: the same).
func KillAfterAck(t *testing.T, test, env string, taskID func(string) string,
	connect func(t *testing.T, addr string) func(ctx context.Context, id string, payload []byte) bool) {
	t.Helper()
	if testing.Short() {
		t.Skip("kills a child process; skipped with -short")
	}
	dir := t.TempDir()
	child := streamtest.StartChild(t, test, env, dir)
	send := connect(t, child.Addr(t, 30*time.Second))
	db := filepath.Join(dir, "tasks.db")
	const senders, enough = 8, 300
	if taskID == nil {
		taskID = func(id string) string { return id }
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu      sync.Mutex
		acked   = make(map[string][]byte)
		reached = make(chan struct{})
		once    sync.Once
		wg      sync.WaitGroup
	)
	for g := range senders {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				id := fmt.Sprintf("kill-%d-%d", g, i)
				payload := fmt.Appendf(nil, `{"g":%d,"i":%d,"pad":%q}`, g, i, strings.Repeat("x", i%97))
				if !send(ctx, id, payload) {
					continue
				}
				mu.Lock()
				acked[id] = payload
				n := len(acked)
				mu.Unlock()
				if n >= enough {
					once.Do(func() { close(reached) })
				}
			}
		})
	}
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		cancel()
		wg.Wait()
		t.Fatalf("%d tasks were not acknowledged within 30s", enough)
	}
	child.Kill(t)
	cancel()
	wg.Wait()

	s, err := sqlitestream.Open(db, sqlitestream.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	var lost []string
	for id, payload := range acked {
		if got := Stored(t, s, taskID(id)); got == nil || string(got.Payload) != string(payload) {
			lost = append(lost, fmt.Sprintf("%s stored as %+v", id, got))
		}
	}
	streamtest.SomeErrors(t, fmt.Sprintf("of %d acknowledged tasks are not in the store as sent after SIGKILL", len(acked)), lost)
	t.Logf("%d acknowledged tasks, all in the store after SIGKILL", len(acked))
}
