package intaketest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// KillAfterAck proves that an acknowledgement means the task is durable,
// across a crash of the intake's process: child serves the intake over the
// SQLite store in the file db; send, called from several goroutines at
// once, sends one task to it and reports whether the sender was told the
// task is accepted (false for any other answer, or an error, quietly: the
// kill breaks the calls in flight). Once enough tasks are accepted the
// child is killed with SIGKILL, at once, and every accepted task must be
// in the store, byte for byte. taskID maps a sent ID to the stored one
// (nil: the same).
func KillAfterAck(t *testing.T, child *streamtest.Child, db string, taskID func(string) string,
	send func(ctx context.Context, id string, payload []byte) bool) {
	t.Helper()
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
