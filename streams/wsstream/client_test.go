package wsstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
)

func TestSendStoresTaskExactly(t *testing.T) {
	store := intaketest.NewMem(t)
	_, url := serve(t, store, Config{})
	c := dial(t, url, DialOptions{})

	tasks := []*peonify.Task{
		{ID: "json", Type: "t", Payload: []byte(`{"a": [1, 2], "b": "<&>"}`), Headers: map[string]string{"tenant": "acme"}},
		{ID: "binary", Type: "t", Payload: []byte{0, 1, 0xff, '\n'}},
		{ID: "spaced", Type: "t", Payload: []byte(" {\"a\":1}\n")},
		{ID: "empty", Type: "t"},
		{ID: "all", Type: "t", Payload: []byte("1"), Priority: -2, MaxAttempts: 7, UniqueKey: "k", Key: "tenant-7",
			RunAt: time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC)},
	}
	for _, tk := range tasks {
		if err := c.Send(context.Background(), tk); err != nil {
			t.Fatalf("send %s: %v", tk.ID, err)
		}
	}
	for _, want := range tasks {
		got := intaketest.Stored(t, store, want.ID)
		switch {
		case got == nil:
			t.Fatalf("%s not stored", want.ID)
		case string(got.Payload) != string(want.Payload) || fmt.Sprint(got.Headers) != fmt.Sprint(want.Headers) ||
			got.Priority != want.Priority || got.MaxAttempts != want.MaxAttempts || got.UniqueKey != want.UniqueKey ||
			got.Key != want.Key || !got.RunAt.Equal(want.RunAt):
			t.Errorf("%s stored as %+v, want %+v", want.ID, got, want)
		}
	}
	// A task without an ID gets one.
	tk := &peonify.Task{Type: "t"}
	if err := c.Send(context.Background(), tk); err != nil || tk.ID == "" || intaketest.Stored(t, store, tk.ID) == nil {
		t.Fatalf("send without ID: err %v, ID %q", err, tk.ID)
	}
	if n := c.Pending(); n != 0 {
		t.Fatalf("%d tasks still pending", n)
	}
}

func TestSendRefusesBadTasksLocally(t *testing.T) {
	_, url := serve(t, intaketest.NewMem(t), Config{})
	c := dial(t, url, DialOptions{MaxMessageSize: 100})
	var ie *peonify.InvalidTaskError
	for _, tk := range []*peonify.Task{
		nil,
		{ID: "x"},
		{ID: "x", Type: "t", Payload: make([]byte, 200)},
		{ID: "x", Type: "t", Headers: map[string]string{"k": "\xff"}},
		{ID: "x", Type: "t", Key: strings.Repeat("k", peonify.MaxKeyLen+1)},
		{ID: "x", Type: "t", Key: "acme", Headers: map[string]string{"Peonify-Key": "globex"}},
	} {
		if err := c.Send(context.Background(), tk); !errors.As(err, &ie) {
			t.Errorf("Send(%+v) = %v, want an InvalidTaskError", tk, err)
		}
	}
}

func TestSendRetriesWhileStoreRefuses(t *testing.T) {
	mem := intaketest.NewMem(t)
	store := &intaketest.FaultStore{Enqueuer: mem}
	store.Refuse(3, nil)
	_, url := serve(t, store, Config{})
	c := dial(t, url, DialOptions{})

	if err := c.Send(context.Background(), &peonify.Task{ID: "r1", Type: "t"}); err != nil {
		t.Fatal(err)
	}
	if calls := store.Calls(); calls != 4 {
		t.Fatalf("store saw %d enqueues, want 3 refused and 1 accepted", calls)
	}
	if intaketest.Stored(t, mem, "r1") == nil {
		t.Fatal("task not stored")
	}

	// While the store keeps refusing, Send gives up with ctx and says why.
	store.Refuse(1<<30, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := c.Send(ctx, &peonify.Task{ID: "r2", Type: "t"})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "send it again later") {
		t.Fatalf("Send = %v, want the deadline error naming the store problem", err)
	}
	if n := c.Pending(); n != 0 {
		t.Fatalf("%d tasks pending after Send gave up", n)
	}
}

func TestSendReturnsNackError(t *testing.T) {
	store := &intaketest.FaultStore{Enqueuer: intaketest.NewMem(t)}
	store.Refuse(1, &peonify.InvalidTaskError{ID: "p1", Reason: "payload too large for this store"})
	_, url := serve(t, store, Config{})
	c := dial(t, url, DialOptions{})
	err := c.Send(context.Background(), &peonify.Task{ID: "p1", Type: "t"})
	var ne *NackError
	if !errors.As(err, &ne) || ne.ID != "p1" || !strings.Contains(ne.Reason, "too large") {
		t.Fatalf("Send = %v, want a NackError for p1", err)
	}
}

// A connection cut after the server read a task, and before its ack
// arrived, is made again and the task is resent; the server acks it as
// already stored.
func TestReconnectResendsUnacknowledged(t *testing.T) {
	mem := intaketest.NewMem(t)
	store := intaketest.Holding(mem)
	// The window off: the resend reaches the store, which shows it came.
	_, url := serve(t, store, Config{ResendWindow: -1})
	p := newProxy(t, strings.TrimPrefix(url, "ws://"))
	c := dial(t, "ws://"+p.ln.Addr().String(), DialOptions{})

	sent := make(chan error, 1)
	go func() { sent <- c.Send(context.Background(), &peonify.Task{ID: "x1", Type: "t"}) }()
	store.Held(t) // the server is storing x1
	p.cut()
	store.Release() // stored, but its ack cannot reach the client
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if calls := store.Calls(); calls < 2 {
		t.Fatalf("store saw %d enqueues; the task was not resent", calls)
	}
	if n := intaketest.Total(t, mem); n != 1 {
		t.Fatalf("store holds %d tasks, want 1", n)
	}

	// Sends made while the connection is down go out after it is back.
	p.cut()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if err := c.Send(context.Background(), &peonify.Task{ID: fmt.Sprint("y", i), Type: "t"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := intaketest.Total(t, mem); n != 21 {
		t.Fatalf("store holds %d tasks, want 21", n)
	}
}

// A task in flight when its server stops is sent again to the server
// that takes its place.
func TestServerRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	first := intaketest.Holding(intaketest.NewMem(t))
	h1, err := New(first, Config{Logger: intaketest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv1 := httptest.NewUnstartedServer(h1)
	srv1.Listener = ln
	srv1.Start()
	c := dial(t, "ws://"+addr, DialOptions{})

	sent := make(chan error, 1)
	go func() { sent <- c.Send(context.Background(), &peonify.Task{ID: "z1", Type: "t"}) }()
	first.Held(t) // never stored: the first server is stopped meanwhile
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := h1.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown: %v", err)
	}
	srv1.Close()

	second := intaketest.NewMem(t)
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := New(second, Config{Logger: intaketest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewUnstartedServer(h2)
	srv2.Listener = ln2
	srv2.Start()
	defer srv2.Close()
	defer func() { _ = h2.Shutdown(context.Background()) }()

	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if intaketest.Stored(t, second, "z1") == nil {
		t.Fatal("z1 is not in the second server's store")
	}
}

func TestCloseEndsWaitingSends(t *testing.T) {
	store := intaketest.Holding(intaketest.NewMem(t))
	_, url := serve(t, store, Config{})
	t.Cleanup(func() { store.Release() })
	c, err := Dial(context.Background(), url, DialOptions{Logger: intaketest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- c.Send(context.Background(), &peonify.Task{ID: "c1", Type: "t"}) }()
	store.Held(t)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; !errors.Is(err, ErrClientClosed) {
		t.Fatalf("Send = %v, want ErrClientClosed", err)
	}
	if err := c.Send(context.Background(), &peonify.Task{Type: "t"}); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("Send after Close = %v, want ErrClientClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestDialErrors(t *testing.T) {
	if _, err := Dial(context.Background(), "ws://127.0.0.1:1/", DialOptions{}); err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	_, err := Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), DialOptions{})
	var he *HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusNotFound {
		t.Fatalf("Dial to a non-WebSocket path: %v, want a 404 HandshakeError", err)
	}
}
