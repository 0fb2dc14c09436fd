package webhookstream

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// openSQLite opens a store in a new file, closed when the test ends unless
// a processor closes it first.
func openSQLite(t *testing.T, cfg sqlitestream.Config) *sqlitestream.Stream {
	t.Helper()
	return intaketest.OpenSQLiteWith(t, filepath.Join(t.TempDir(), "tasks.db"), cfg)
}

// post sends req to the server at base over the network.
func post(t *testing.T, client *http.Client, base string, req request) answer {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, base+req.path, bytes.NewReader(req.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range req.header {
		r.Header.Set(k, v)
	}
	resp, err := client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return decodeAnswer(t, resp.StatusCode, resp.Header, resp.Body)
}

// A processor on the same SQLite store runs what the webhook accepted, with
// the body byte for byte; a redelivery after the task finished is still a
// duplicate while the store keeps finished tasks.
func TestEndToEnd(t *testing.T) {
	s := openSQLite(t, sqlitestream.Config{KeepDone: time.Hour})
	h := newHandler(t, s, Config{})
	srv := httptest.NewServer(h)
	defer srv.Close()

	rec := newRecorder()
	runProcessor(t, s, peonify.TaskList{"github": rec.handler(), "stripe": rec.handler()})

	body := []byte("{\"action\":\"opened\",\n \"number\": 1347}")
	a := post(t, srv.Client(), srv.URL, githubRequest("e2e-1", body)).want(t, http.StatusAccepted)
	task := rec.next(t)
	if task.ID != a.body["task_id"] || !bytes.Equal(task.Payload, body) || task.Headers[HeaderEvent] != "push" {
		t.Fatalf("ran %+v, want task %s with the body", task, a.body["task_id"])
	}

	// Wait until the task is recorded as done, then redeliver.
	waitState(t, s, task.ID, peonify.StateDone)
	post(t, srv.Client(), srv.URL, githubRequest("e2e-1", body)).want(t, http.StatusOK)

	a = post(t, srv.Client(), srv.URL, stripeRequest("evt_e2e", time.Now())).want(t, http.StatusAccepted)
	if task := rec.next(t); task.ID != "stripe:evt_e2e" || task.Headers[HeaderEvent] != "invoice.paid" {
		t.Fatalf("ran %+v", task)
	}
	select {
	case extra := <-rec.ch:
		t.Fatalf("task %s ran again", extra.ID)
	default:
	}
}

// waitState polls the store until the task reaches state.
func waitState(t *testing.T, s peonify.Inspector, id string, state peonify.State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := s.Get(context.Background(), id)
		if err == nil && info.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s is %v (%v), not %s, after 10s", id, info.State, err, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A synchronous route answers with the reply its task's handler set.
func TestSync(t *testing.T) {
	s := openSQLite(t, sqlitestream.Config{})
	results := NewResults()
	routes := map[string]Route{
		"/cmd":   {Type: "cmd", Verifier: HMAC{Header: "X-Signature", Secrets: secrets(hmacSecret)}, Sync: true},
		"/plain": {Type: "plain", AllowUnsigned: true, Sync: true, Headers: []string{"X-Sync"}},
		"/fail":  {Type: "fail", AllowUnsigned: true, Sync: true},
		"/slow":  {Type: "slow", AllowUnsigned: true, Sync: true, SyncTimeout: 100 * time.Millisecond},
		"/async": {Type: "plain", AllowUnsigned: true},
	}
	h := newHandler(t, s, Config{Routes: routes, Results: results})
	srv := httptest.NewServer(h)
	defer srv.Close()

	release := make(chan struct{})
	ran := make(chan string, 10)
	runProcessor(t, s, peonify.TaskList{
		"cmd": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			Respond(ctx, Reply{Status: http.StatusCreated, ContentType: "text/plain", Body: []byte("first")})
			Respond(ctx, Reply{Status: http.StatusCreated, ContentType: "text/plain", Body: append([]byte("echo: "), t.Payload...)})
			return nil
		}),
		"plain": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			ran <- t.ID
			if _, waits := ctx.Value(replyKey{}).(*replySlot); waits != (t.Headers["x-sync"] == "yes") {
				return errors.New("the middleware did not tell whether a request waits")
			}
			return nil
		}),
		"fail": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			Respond(ctx, Reply{Body: []byte("not used")})
			return peonify.SkipRetry(errors.New("no"))
		}),
		"slow": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			ran <- t.ID
			return nil
		}),
	}, results.Middleware())

	// The reply of the handler, last Respond winning.
	m := hmacRequest("", []byte("hi"))
	m.path = "/cmd"
	m.header["X-Signature"] = strings.TrimPrefix(signGitHub(hmacSecret, m.body), "sha256=")
	a := post(t, srv.Client(), srv.URL, m).want(t, http.StatusCreated)
	if a.raw != "echo: hi" || a.header.Get("Content-Type") != "text/plain" || a.header.Get(ResponseTaskID) == "" {
		t.Fatalf("answer %q %v", a.raw, a.header)
	}

	// No reply set: 200 with the task ID.
	a = post(t, srv.Client(), srv.URL, request{path: "/plain", body: []byte("x"), header: map[string]string{"X-Sync": "yes"}}).want(t, http.StatusOK)
	if a.body["status"] != "done" || a.body["task_id"] != <-ran {
		t.Fatalf("answer %v", a.body)
	}

	// A failed first attempt: 202, the task stays in the store.
	a = post(t, srv.Client(), srv.URL, request{path: "/fail", body: []byte("x")}).want(t, http.StatusAccepted)
	waitState(t, s, a.body["task_id"], peonify.StateDead)

	// Not done in time: 202, and the task runs on.
	a = post(t, srv.Client(), srv.URL, request{path: "/slow", body: []byte("x")}).want(t, http.StatusAccepted)
	close(release)
	if id := <-ran; id != a.body["task_id"] {
		t.Fatalf("ran %s, want %s", id, a.body["task_id"])
	}

	// An asynchronous route's task has no one waiting.
	post(t, srv.Client(), srv.URL, request{path: "/async", body: []byte("x")}).want(t, http.StatusAccepted)
	<-ran
	results.mu.Lock()
	left := len(results.waiting)
	results.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d waits left in the registry", left)
	}
}

// Without a processor reporting to Results, a synchronous route answers
// 202 after its timeout: the task is safe in the store.
func TestSyncWithoutProcessor(t *testing.T) {
	st := newStore(t)
	h := newHandler(t, st, Config{Results: NewResults(),
		Routes: map[string]Route{"/s": {Type: "s", AllowUnsigned: true, Sync: true, SyncTimeout: 20 * time.Millisecond}}})
	a := serve(t, h, request{path: "/s", body: []byte("x")}).want(t, http.StatusAccepted)
	st.get(t, a.body["task_id"])
}

// A handler that panics reports a failure to the waiting request, and the
// panic goes on to the processor, which recovers it.
func TestSyncPanic(t *testing.T) {
	results := NewResults()
	ch, cancel := results.wait("p1")
	defer cancel()
	mw := results.Middleware()(peonify.HandlerFunc(func(context.Context, *peonify.Task) error { panic("boom") }))
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the middleware swallowed the panic")
			}
		}()
		_ = mw.Execute(context.Background(), &peonify.Task{ID: "p1"})
	}()
	select {
	case o := <-ch:
		if o.err == nil {
			t.Fatal("a panic reported success")
		}
	default:
		t.Fatal("the panic was not reported")
	}
}

// The body deadline ends with the body: a synchronous wait longer than
// BodyTimeout still gets its answer.
func TestSyncOutlivesBodyTimeout(t *testing.T) {
	st := newStore(t)
	results := NewResults()
	h := newHandler(t, st, Config{BodyTimeout: 50 * time.Millisecond, Results: results,
		Routes: map[string]Route{"/s": {Type: "s", AllowUnsigned: true, Sync: true}}})
	srv := httptest.NewServer(h)
	defer srv.Close()
	runProcessor(t, st.mem, peonify.TaskList{"s": peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
		select {
		case <-time.After(200 * time.Millisecond): // longer than BodyTimeout
		case <-ctx.Done():
		}
		Respond(ctx, Reply{Body: []byte("late but fine")})
		return nil
	})}, results.Middleware())
	a := post(t, srv.Client(), srv.URL, request{path: "/s", body: []byte("x")}).want(t, http.StatusOK)
	if a.raw != "late but fine" {
		t.Fatalf("answer %q", a.raw)
	}
}
