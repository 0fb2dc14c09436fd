package executor

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// recorded is what a test server saw of one request.
type recorded struct {
	method string
	header http.Header
	body   string
}

// server answers every request with answer and records it.
func server(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, <-chan recorded) {
	t.Helper()
	seen := make(chan recorded, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- recorded{r.Method, r.Header.Clone(), string(b)}
		answer(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, seen
}

func newHTTP(t *testing.T, cfg HTTPConfig) *HTTP {
	t.Helper()
	h, err := NewHTTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func status(code int, headers ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(code)
		io.WriteString(w, "body of "+http.StatusText(code))
	}
}

func TestHTTPSuccessSendsPayloadAndIdentity(t *testing.T) {
	srv, seen := server(t, status(http.StatusAccepted))
	h := newHTTP(t, HTTPConfig{URL: srv.URL + "/hook", Headers: map[string]string{"Authorization": "Bearer s3cret"}})
	task := &peonify.Task{ID: "task-1", Type: "notify", Payload: []byte(`{"to":"ada"}`),
		Headers: map[string]string{"traceparent": "00-abc-def-01", "Idempotency-Key": "forged", "Bad Name": "x", "authorization": "Bearer forged"}}

	e := outcome(t, h, task)
	if e.Kind != peonify.EventSucceeded {
		t.Fatalf("outcome %s (%v), want succeeded", e.Kind, e.Err)
	}
	r := <-seen
	want := map[string]string{
		"Authorization":   "Bearer s3cret",
		"Content-Type":    "application/json",
		"Idempotency-Key": "task-1",
		"Peonify-Task-Id": "task-1", "Peonify-Task-Type": "notify", "Peonify-Task-Attempt": "1",
		"Traceparent": "00-abc-def-01",
	}
	for k, v := range want {
		if got := r.header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if r.method != http.MethodPost || r.body != `{"to":"ada"}` {
		t.Errorf("request %s %q, want POST with the payload", r.method, r.body)
	}
}

func TestHTTPOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answer    func(http.ResponseWriter, *http.Request)
		kind      peonify.EventKind
		delay     time.Duration // for retried: the delay asked for, if not the backoff
		errSubstr string
	}{
		{"500 is retried", status(500), peonify.EventRetried, time.Hour, "500 Internal Server Error: body of Internal Server Error"},
		{"503 with Retry-After seconds", status(503, "Retry-After", "7"), peonify.EventRetried, 7 * time.Second, "503"},
		{"429 with Retry-After", status(429, "Retry-After", "3"), peonify.EventRetried, 3 * time.Second, "429 Too Many Requests"},
		{"408 is retried", status(408), peonify.EventRetried, time.Hour, "408"},
		{"404 is dead", status(404), peonify.EventDead, 0, "404 Not Found: body of Not Found"},
		{"400 is dead", status(400), peonify.EventDead, 0, "400 Bad Request"},
		{"redirect is dead", status(302, "Location", "https://elsewhere.example/x?token=1"), peonify.EventDead, 0,
			"302 Found to https://elsewhere.example/x (redirects are not followed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := server(t, tc.answer)
			e := outcome(t, newHTTP(t, HTTPConfig{URL: srv.URL}), &peonify.Task{Type: "hook"})
			if e.Kind != tc.kind {
				t.Fatalf("outcome %s (%v), want %s", e.Kind, e.Err, tc.kind)
			}
			if e.Err == nil || !strings.Contains(e.Err.Error(), tc.errSubstr) {
				t.Errorf("error %q, want it to contain %q", e.Err, tc.errSubstr)
			}
			// The backoff (1h) has jitter whatever the policy says; a
			// Retry-After delay is exact.
			if tc.kind == peonify.EventRetried && (e.Delay < tc.delay*3/4 || e.Delay > tc.delay*5/4 ||
				tc.delay < time.Hour && e.Delay != tc.delay) {
				t.Errorf("retry delay %s, want %s", e.Delay, tc.delay)
			}
			var se *StatusError
			if !errors.As(e.Err, &se) {
				t.Errorf("error %T does not wrap a *StatusError", e.Err)
			}
		})
	}
}

func TestHTTPTimeoutAndNetworkErrorsAreRetried(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		e := outcome(t, newHTTP(t, HTTPConfig{URL: srv.URL, Timeout: 50 * time.Millisecond}), &peonify.Task{Type: "hook"})
		if e.Kind != peonify.EventRetried || !strings.Contains(e.Err.Error(), "deadline exceeded") {
			t.Fatalf("outcome %s (%v), want retried after a deadline", e.Kind, e.Err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		e := outcome(t, newHTTP(t, HTTPConfig{URL: "http://user:pw@" + addr + "/x?key=secret"}), &peonify.Task{Type: "hook"})
		if e.Kind != peonify.EventRetried {
			t.Fatalf("outcome %s (%v), want retried", e.Kind, e.Err)
		}
		if msg := e.Err.Error(); strings.Contains(msg, "secret") || strings.Contains(msg, "pw") {
			t.Errorf("error %q shows the URL's credentials or query", msg)
		}
	})
}

func TestNewHTTPRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg   HTTPConfig
		field string
	}{
		{HTTPConfig{}, "url"},
		{HTTPConfig{URL: "ftp://example.com"}, "url"},
		{HTTPConfig{URL: "example.com/hook"}, "url"},
		{HTTPConfig{URL: "http://example.com", Method: "GE T"}, "method"},
		{HTTPConfig{URL: "http://example.com", Headers: map[string]string{"a b": "c"}}, "headers"},
		{HTTPConfig{URL: "http://example.com", Headers: map[string]string{"X": "a\r\nb"}}, "headers.X"},
		{HTTPConfig{URL: "http://example.com", Timeout: -1}, "timeout"},
	} {
		_, err := NewHTTP(tc.cfg)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("NewHTTP(%+v) = %v, want a FieldError for %s", tc.cfg, err, tc.field)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"120", 2 * time.Minute, true},
		{"0", 0, true},
		{"-5", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// A 2xx body is the task's result on a store that keeps results; an empty
// body sets none, discard_result drops it, and a body larger than a result
// can be kills the task there, but not on a store that keeps no results.
func TestHTTPResult(t *testing.T) {
	big := strings.Repeat("x", peonify.MaxResultLen+1)
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/json":
			io.WriteString(w, `{"sent":true}`)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/max":
			io.WriteString(w, big[1:])
		case "/big":
			io.WriteString(w, big)
		case "/big-chunked":
			w.(http.Flusher).Flush() // no Content-Length
			io.WriteString(w, big)
		}
	})
	task := func() *peonify.Task { return &peonify.Task{Type: "notify"} }

	if e, res := run(t, newHTTP(t, HTTPConfig{URL: srv.URL + "/json"}), task(), false); e.Kind != peonify.EventSucceeded || string(res) != `{"sent":true}` {
		t.Errorf("200 with a body: %s (%v), result %q", e.Kind, e.Err, res)
	}
	if e, res := run(t, newHTTP(t, HTTPConfig{URL: srv.URL + "/empty"}), task(), false); e.Kind != peonify.EventSucceeded || res != nil {
		t.Errorf("204: %s (%v), result %q, want none", e.Kind, e.Err, res)
	}
	if e, res := run(t, newHTTP(t, HTTPConfig{URL: srv.URL + "/json", DiscardResult: true}), task(), false); e.Kind != peonify.EventSucceeded || res != nil {
		t.Errorf("discard_result: %s (%v), result %q, want none", e.Kind, e.Err, res)
	}
	if e, res := run(t, newHTTP(t, HTTPConfig{URL: srv.URL + "/max"}), task(), false); e.Kind != peonify.EventSucceeded || len(res) != peonify.MaxResultLen {
		t.Errorf("a body of MaxResultLen: %s (%v), result of %d bytes", e.Kind, e.Err, len(res))
	}
	for _, path := range []string{"/big", "/big-chunked"} {
		e, _ := run(t, newHTTP(t, HTTPConfig{URL: srv.URL + path}), task(), false)
		if e.Kind != peonify.EventDead || !strings.Contains(e.Err.Error(), "larger than a task result can be (peonify.MaxResultLen") {
			t.Errorf("%s: %s (%v), want dead with the reason", path, e.Kind, e.Err)
		}
		if e, _ := run(t, newHTTP(t, HTTPConfig{URL: srv.URL + path}), task(), true); e.Kind != peonify.EventSucceeded {
			t.Errorf("%s on a store without results: %s (%v), want succeeded", path, e.Kind, e.Err)
		}
	}
	if e, _ := run(t, newHTTP(t, HTTPConfig{URL: srv.URL + "/big", DiscardResult: true}), task(), false); e.Kind != peonify.EventSucceeded {
		t.Errorf("a large body with discard_result: %s (%v), want succeeded", e.Kind, e.Err)
	}
}
