package httpapi_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/httpapi"
	"github.com/peonify/peonify/streams/memstream"
)

// The tests against real stores, with every answer validated against the
// OpenAPI document, are in the module httpapi/openapitest.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "test-secret-0123456789abcdef0123456"

func newHandler(t *testing.T, mod func(*httpapi.Config)) (*httpapi.Handler, *memstream.Stream) {
	t.Helper()
	s := memstream.New(memstream.Config{})
	cfg := httpapi.Config{
		Stores: []httpapi.Store{{Name: "main", Stream: s}},
		Tokens: []httpapi.Token{{Name: "t", Secret: secret, Scopes: []httpapi.Scope{httpapi.ScopeAdmin}}},
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h, s
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	if r.Header.Get("Authorization") == "" {
		r.Header.Set("Authorization", "Bearer "+secret)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// New names the field at fault.
func TestConfigErrors(t *testing.T) {
	s := memstream.New(memstream.Config{})
	st := []httpapi.Store{{Name: "main", Stream: s}}
	tok := []httpapi.Token{{Name: "a", Secret: "x", Scopes: []httpapi.Scope{httpapi.ScopeRead}}}
	for _, tc := range []struct {
		cfg   httpapi.Config
		field string
	}{
		{httpapi.Config{Tokens: tok}, "httpapi.Config.Stores"},
		{httpapi.Config{Stores: []httpapi.Store{{Stream: s}}, Tokens: tok}, "httpapi.Config.Stores[0].Name"},
		{httpapi.Config{Stores: []httpapi.Store{{Name: "a", Stream: s}, {Name: "a", Stream: s}}, Tokens: tok}, "httpapi.Config.Stores[1].Name"},
		{httpapi.Config{Stores: []httpapi.Store{{Name: "a"}}, Tokens: tok}, "httpapi.Config.Stores[0].Stream"},
		{httpapi.Config{Stores: st}, "httpapi.Config.Tokens"},
		{httpapi.Config{Stores: st, Tokens: []httpapi.Token{{Name: "a", Scopes: tok[0].Scopes}}}, "httpapi.Config.Tokens[0].Secret"},
		{httpapi.Config{Stores: st, Tokens: []httpapi.Token{{Name: "a", Secret: "x"}}}, "httpapi.Config.Tokens[0].Scopes"},
		{httpapi.Config{Stores: st, Tokens: []httpapi.Token{{Name: "a", Secret: "x", Scopes: []httpapi.Scope{"write"}}}}, "httpapi.Config.Tokens[0].Scopes[0]"},
		{httpapi.Config{Stores: st, Tokens: append(tok, httpapi.Token{Name: "b", Secret: "x", Scopes: tok[0].Scopes})}, "httpapi.Config.Tokens[1].Secret"},
		{httpapi.Config{Stores: st, Tokens: append(tok, tok[0])}, "httpapi.Config.Tokens[1].Name"},
		{httpapi.Config{Stores: st, Anonymous: []httpapi.Scope{"all"}}, "httpapi.Config.Anonymous[0]"},
		{httpapi.Config{Stores: st, Tokens: tok, MaxBody: -1}, "httpapi.Config.MaxBody"},
		{httpapi.Config{Stores: st, Tokens: tok, MaxWait: -1}, "httpapi.Config.MaxWait"},
	} {
		_, err := httpapi.New(tc.cfg)
		var ce *peonify.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("New(%+v) = %v, want a ConfigError of %s", tc.cfg, err, tc.field)
		}
	}
	if _, err := httpapi.New(httpapi.Config{Stores: st, Anonymous: []httpapi.Scope{httpapi.ScopeRead}}); err != nil {
		t.Errorf("anonymous read only: %v", err)
	}
}

// Every route of the handler is in the OpenAPI document, and every path of
// the document is served.
func TestOpenAPIRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(httpapi.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	h, _ := newHandler(t, nil)
	n := 0
	for path, ops := range doc.Paths {
		for method := range ops {
			n++
			p := strings.NewReplacer("{id}", "x").Replace(path)
			w := serve(h, httptest.NewRequest(strings.ToUpper(method), p, nil))
			if w.Code == http.StatusNotFound && strings.Contains(w.Body.String(), "no API route") || w.Code == http.StatusMethodNotAllowed {
				t.Errorf("%s %s in the document is not served: %d %s", method, path, w.Code, w.Body)
			}
		}
	}
	if n != 11 {
		t.Errorf("the document has %d operations, want the 11 routes", n)
	}
	w := serve(h, httptest.NewRequest("GET", "/v1/nothing", nil))
	if w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "no API route") {
		t.Errorf("unknown route: %d %s", w.Code, w.Body)
	}
}

// A body without a declared length is cut at MaxBody too, and stores
// nothing.
func TestChunkedBodyTooLarge(t *testing.T) {
	h, s := newHandler(t, func(c *httpapi.Config) { c.MaxBody = 100 })
	body := io.MultiReader(strings.NewReader(`{"type": "t", "payload": "` + strings.Repeat("x", 500) + `"}`)) // no length
	r := httptest.NewRequest("POST", "/v1/tasks", body)
	if r.ContentLength != -1 {
		t.Fatalf("ContentLength %d", r.ContentLength)
	}
	w := serve(h, r)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413: %s", w.Code, w.Body)
	}
	if c, _ := s.Counts(t.Context()); len(c) != 0 {
		for _, n := range c {
			if n != 0 {
				t.Fatalf("stored: %v", c)
			}
		}
	}
}

// Concurrent requests with one Idempotency-Key store one task even on a
// store that detects no duplicates: the handler serialises them.
func TestIdempotencyWithoutDuplicateDetection(t *testing.T) {
	inner := memstream.New(memstream.Config{})
	s := &noDup{Stream: inner}
	h, err := httpapi.New(httpapi.Config{
		Stores: []httpapi.Store{{Name: "main", Stream: s}},
		Tokens: []httpapi.Token{{Name: "t", Secret: secret, Scopes: []httpapi.Scope{httpapi.ScopeEnqueue}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			r := httptest.NewRequest("POST", "/v1/tasks", strings.NewReader(`{"type": "t"}`))
			r.Header.Set("Idempotency-Key", "k")
			if w := serve(h, r); w.Code != http.StatusCreated {
				t.Errorf("status %d: %s", w.Code, w.Body)
			}
		})
	}
	wg.Wait()
	if n := s.stored.Load(); n != 1 {
		t.Fatalf("%d enqueues reached the store, want 1", n)
	}
}
