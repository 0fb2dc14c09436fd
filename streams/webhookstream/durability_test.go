package webhookstream

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/intaketest"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// A store that fails makes the handler answer 503 with Retry-After and
// store nothing; the sender's retry succeeds once the store is back.
func TestStoreFailure(t *testing.T) {
	st := newStore(t)
	h := newHandler(t, st, Config{RetryAfter: 1500 * time.Millisecond})
	req := githubRequest("retry-me", []byte(`{"n":1}`))

	st.Fail(intaketest.ErrUnavailable)
	a := serve(t, h, req).want(t, http.StatusServiceUnavailable)
	if a.header.Get("Retry-After") != "2" {
		t.Fatalf("Retry-After %q, want 2 (1.5s rounded up)", a.header.Get("Retry-After"))
	}
	if strings.Contains(a.raw, "disk full") {
		t.Fatalf("the answer shows the store's error: %s", a.raw)
	}
	if n := st.stored(t); n != 0 {
		t.Fatalf("%d tasks stored by a failing store", n)
	}

	st.Fail(nil)
	a = serve(t, h, req).want(t, http.StatusAccepted)
	if got := st.get(t, a.body["task_id"]); string(got.Payload) != `{"n":1}` {
		t.Fatalf("stored payload %q", got.Payload)
	}
}

// A store that does not answer within EnqueueTimeout makes the handler
// answer 503 instead of holding the sender.
func TestStoreTimeout(t *testing.T) {
	st := newStore(t)
	h := newHandler(t, st, Config{EnqueueTimeout: 50 * time.Millisecond})
	st.Hold()
	serve(t, h, githubRequest("slow", []byte(`{}`))).want(t, http.StatusServiceUnavailable)
	st.Release()
	serve(t, h, githubRequest("slow", []byte(`{}`))).want(t, http.StatusAccepted)
}

// A client that sends its body too slowly is answered 408 when
// BodyTimeout passes, and nothing is stored.
func TestSlowBody(t *testing.T) {
	st := newStore(t)
	h := newHandler(t, st, Config{BodyTimeout: 200 * time.Millisecond})
	srv := httptest.NewServer(h)
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"n":1}`
	fmt.Fprintf(conn, "POST /github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"X-Hub-Signature-256: %s\r\nX-GitHub-Delivery: slow\r\nContent-Length: %d\r\n\r\n%s",
		signGitHub(githubSecret, []byte(body)), len(body), body[:3]) // and never the rest
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	a := decodeAnswer(t, resp.StatusCode, resp.Header, resp.Body).want(t, http.StatusRequestTimeout)
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Fatalf("answered after %s, before the body timeout", waited)
	}
	if !strings.Contains(a.body["error"], "200ms") {
		t.Fatalf("error %q does not give the timeout", a.body["error"])
	}
	if n := st.stored(t); n != 0 || st.Calls() != 0 {
		t.Fatalf("%d tasks stored; want none", n)
	}

	// The deadline does not outlive the request: a keep-alive connection
	// that idles longer than BodyTimeout before its next request works.
	client := srv.Client()
	reused := false
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }}
	for i := range 2 {
		r := githubRequest(fmt.Sprint("fast-", i), []byte(body))
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
			http.MethodPost, srv.URL+"/github", strings.NewReader(body))
		for k, v := range r.header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
		if i == 0 {
			time.Sleep(300 * time.Millisecond) // the condition under test: idle longer than BodyTimeout
		}
	}
	if !reused {
		t.Fatal("the second request did not reuse the connection; the test proves nothing")
	}
}

// A request refused before its body was read is answered at once, and its
// connection is closed within BodyTimeout even if the client never sends
// the rest: net/http drains a refused body before it closes, and the
// handler's deadline bounds that too.
func TestRefusedUnreadBody(t *testing.T) {
	st := newStore(t)
	h := newHandler(t, st, Config{BodyTimeout: 300 * time.Millisecond, MaxBodyBytes: 64})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, tc := range []struct {
		start  string
		status int
	}{
		{"POST /nowhere", http.StatusNotFound},
		{"PUT /github", http.StatusMethodNotAllowed},
		{"POST /github", http.StatusRequestEntityTooLarge}, // over MaxBodyBytes
	} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close() // on failure too, or srv.Close would wait for the server's read
		// Declare a body under the 256 KiB that net/http would drain, and
		// send only its start.
		fmt.Fprintf(conn, "%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{\"a\"", tc.start, 1000)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(conn)
		start := time.Now()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: no answer: %v", tc.start, err)
		}
		if waited := time.Since(start); waited > 250*time.Millisecond {
			t.Fatalf("%s: answered after %s; the handler waited for the body", tc.start, waited)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !resp.Close {
			t.Fatalf("%s: status %d, close %v; want %d and the connection closed", tc.start, resp.StatusCode, resp.Close, tc.status)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("%s: the server kept the connection: %v", tc.start, err)
		}
	}
}

// childEnv makes the test binary the child process of TestKillAfterAccept;
// its value is the directory holding the database, as JSON.
const childEnv = "WEBHOOKSTREAM_SERVE_CHILD"

// TestKillAfterAccept proves that 202 means durable: a child process serves
// the handler on a SQLite store; the test posts deliveries from several
// goroutines, kills the child with SIGKILL right after a 202, and finds
// every accepted task, byte for byte, in the file.
func TestKillAfterAccept(t *testing.T) {
	github := func(id string) string { return "github:" + id }
	intaketest.KillAfterAck(t, "TestServeChild", childEnv, github, func(t *testing.T, addr string) func(context.Context, string, []byte) bool {
		tr := &http.Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		return func(ctx context.Context, id string, payload []byte) bool {
			r := githubRequest(id, payload)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/github", bytes.NewReader(payload))
			for k, v := range r.header {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				return false
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode == http.StatusAccepted
		}
	})
}

// TestServeChild is the process that TestKillAfterAccept starts and
// kills. Run alone, it skips.
func TestServeChild(t *testing.T) {
	var dir string
	streamtest.Orders(t, childEnv, &dir)
	s, err := sqlitestream.Open(filepath.Join(dir, "tasks.db"), sqlitestream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(s, Config{Routes: testRoutes()})
	if err != nil {
		t.Fatal(err)
	}
	t.Fatal(Server("", h).Serve(streamtest.Listen(t))) // serves until killed
}
