package amqpstream

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a log destination for several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestConnectReturnsWhatItWouldLog checks that a failed connection
// attempt that Connect returns is not also logged, as an error that
// says "retrying" just before the caller gives up: the caller says it
// once.
func TestConnectReturnsWhatItWouldLog(t *testing.T) {
	u, err := url.Parse(testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "not-the-password")
	var logs lockedBuffer
	// The next attempt is far off: the test sees the log of the first.
	s, err := New(u.String(), Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Queue: uniqueQueue(t),
		ReconnectMin: time.Minute, ReconnectMax: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = s.Connect(ctx)
	if cerr := s.Close(ctx); cerr != nil { // waits for the attempt to be logged, if it is
		t.Fatal(cerr)
	}
	logged := logs.String()
	if err == nil || !strings.Contains(err.Error(), "refused the connection") {
		t.Fatalf("Connect = %v, want the refusal", err)
	}
	if logged != "" {
		t.Errorf("Connect returned %q, and it was logged too:\n%s", err, logged)
	}
}
