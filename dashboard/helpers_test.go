package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/streams/memstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testToken is the bearer token of fixtures with token authentication.
const testToken = "test-token-0123456789abcdef"

// fixture is a dashboard over a memstream store named "mem", served by an
// httptest server.
type fixture struct {
	t     *testing.T
	mem   *memstream.Stream
	dash  *dashboard.Dashboard
	srv   *httptest.Server
	jar   http.CookieJar
	token string // sent as a bearer token when not empty
	csrf  string // sent in X-CSRF-Token when not empty
}

// newFixture serves a dashboard configured by cfg; without cfg.Stores it
// adds the memstream as "mem".
func newFixture(t *testing.T, cfg dashboard.Config) *fixture {
	t.Helper()
	f := &fixture{t: t, mem: memstream.New(memstream.Config{Name: "mem"})}
	t.Cleanup(func() { _ = f.mem.Close(context.Background()) })
	if cfg.Stores == nil {
		cfg.Stores = []dashboard.Store{{Name: "mem", Inspector: f.mem}}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	d, err := dashboard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.dash = d
	f.srv = httptest.NewServer(d)
	t.Cleanup(f.srv.Close)
	f.jar, _ = cookiejar.New(nil)
	f.token = cfg.Auth.Token
	return f
}

// request is one API call's options beyond the fixture's defaults.
type request struct {
	noAuth   bool
	basic    [2]string // user, password
	header   http.Header
	noCookie bool
}

// do sends a request with the fixture's token, CSRF token and cookies, and
// returns the response with its body read.
func (f *fixture) do(method, path string, body any, o request) (*http.Response, []byte) {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	switch {
	case o.noAuth:
	case o.basic[0] != "":
		req.SetBasicAuth(o.basic[0], o.basic[1])
	case f.token != "":
		req.Header.Set("Authorization", "Bearer "+f.token)
	}
	if f.csrf != "" {
		req.Header.Set("X-CSRF-Token", f.csrf)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range o.header {
		req.Header[k] = vs
	}
	c := &http.Client{Jar: f.jar}
	if o.noCookie {
		c.Jar = nil
	}
	res, err := c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return res, b
}

// signIn gets a CSRF token from api/session, as the page does.
func (f *fixture) signIn(o request) {
	f.t.Helper()
	res, body := f.do("GET", "/api/session", nil, o)
	if res.StatusCode != http.StatusOK {
		f.t.Fatalf("GET /api/session: %s: %s", res.Status, body)
	}
	var s dashboard.Session
	decode(f.t, body, &s)
	if s.CSRF == "" {
		f.t.Fatalf("GET /api/session gave no CSRF token: %s", body)
	}
	f.csrf = s.CSRF
}

func decode(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
}

// wantStatus fails the test unless res has the status, and with an
// APIError body, the code.
func wantStatus(t *testing.T, res *http.Response, body []byte, status int, code string) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("%s %s: got %s, want %d: %s", res.Request.Method, res.Request.URL.Path, res.Status, status, body)
	}
	if code != "" {
		var e dashboard.APIError
		decode(t, body, &e)
		if e.Code != code || e.Message == "" {
			t.Fatalf("error body %s: want code %q and a message", body, code)
		}
	}
}

// deadLetter stores a dead task in s: it enqueues t, claims it and nacks it
// dead with reason. It returns the task's ID.
func deadLetter(t *testing.T, s *memstream.Stream, task *peonify.Task, reason string) string {
	t.Helper()
	ctx := context.Background()
	if err := s.Enqueue(ctx, task); err != nil {
		t.Fatal(err)
	}
	ds, err := s.Poll(ctx, 1)
	if err != nil || len(ds) != 1 || ds[0].Task.ID != task.ID {
		t.Fatalf("claiming the task to dead-letter: %v, %d deliveries", err, len(ds))
	}
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: reason}); err != nil {
		t.Fatal(err)
	}
	return task.ID
}

// counts returns a store's task counts.
func counts(t *testing.T, insp peonify.Inspector) map[peonify.State]int {
	t.Helper()
	c, err := insp.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// netipAddrPort parses a host:port into a net.Addr.
func netipAddrPort(s string) (net.Addr, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return net.TCPAddrFromAddrPort(ap), nil
}

// runProcessor runs p until the test ends.
func runProcessor(t *testing.T, p *peonify.Processor) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
}
