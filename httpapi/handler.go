package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/peonify/peonify"
)

//go:embed openapi.json
var openapiDoc []byte

// OpenAPI returns the OpenAPI 3.1 document of the API, the file
// httpapi/openapi.json, which GET /v1/openapi.json serves too. The caller
// must not modify it.
func OpenAPI() []byte { return openapiDoc }

// Handler serves the API under /v1/. Create it with New; it is safe for
// concurrent use.
type Handler struct {
	cfg    Config
	log    *slog.Logger
	tokens []token
	anon   scopes
	stores map[string]*store
	order  []*store
	mux    *http.ServeMux
	idem   *idemCache
}

// store is one Config.Stores entry with its capabilities.
type store struct {
	name     string
	kind     string
	stream   peonify.Stream
	enq      peonify.Enqueuer      // nil if it cannot enqueue
	insp     peonify.Inspector     // nil if it cannot be inspected
	tracker  peonify.Tracker       // nil if it keeps no state
	workflow peonify.WorkflowStore // nil if it runs no workflows
}

// New returns a Handler configured by cfg, or a *peonify.ConfigError
// naming the field to fix.
func New(cfg Config) (*Handler, error) {
	toks, anon, err := cfg.check()
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, tokens: toks, anon: anon, stores: make(map[string]*store, len(cfg.Stores))}
	h.idem = newIdemCache(cfg.IdempotencyWindow)
	for _, s := range cfg.Stores {
		st := &store{name: s.Name, stream: s.Stream, kind: kindOf(s.Stream)}
		st.enq, _ = peonify.As[peonify.Enqueuer](s.Stream)
		st.insp, _ = peonify.As[peonify.Inspector](s.Stream)
		st.tracker, _ = peonify.As[peonify.Tracker](s.Stream)
		st.workflow, _ = peonify.As[peonify.WorkflowStore](s.Stream)
		h.stores[s.Name] = st
		h.order = append(h.order, st)
	}
	h.routes()
	return h, nil
}

// kindOf names the package of the innermost stream of s, such as
// "sqlitestream".
func kindOf(s peonify.Stream) string {
	for {
		w, ok := s.(interface{ Unwrap() peonify.Stream })
		if !ok || w.Unwrap() == nil {
			break
		}
		s = w.Unwrap()
	}
	t := reflect.TypeOf(s)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	p := t.PkgPath()
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	if p == "" {
		return t.String()
	}
	return p
}

func (h *Handler) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /v1/openapi.json", serveOpenAPI)
	m.HandleFunc("POST /v1/tasks", h.auth(ScopeEnqueue, h.serveEnqueue))
	m.HandleFunc("POST /v1/tasks/batch", h.auth(ScopeEnqueue, h.serveBatch))
	m.HandleFunc("GET /v1/tasks/{id}", h.auth(ScopeRead, h.serveGet))
	m.HandleFunc("POST /v1/tasks/{id}/cancel", h.auth(ScopeAdmin, h.serveCancel))
	m.HandleFunc("POST /v1/tasks/{id}/retry", h.auth(ScopeAdmin, h.serveRetry))
	m.HandleFunc("DELETE /v1/tasks/{id}", h.auth(ScopeAdmin, h.serveDelete))
	m.HandleFunc("GET /v1/stores", h.auth(ScopeRead, h.serveStores))
	m.HandleFunc("POST /v1/workflows", h.auth(ScopeEnqueue, h.serveEnqueueWorkflow))
	m.HandleFunc("GET /v1/workflows/{id}", h.auth(ScopeRead, h.serveGetWorkflow))
	m.HandleFunc("POST /v1/workflows/{id}/cancel", h.auth(ScopeAdmin, h.serveCancelWorkflow))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no API route "+r.Method+" "+r.URL.Path+": see GET /v1/openapi.json for the routes", "")
	})
	h.mux = m
}

// ServeHTTP serves the /v1/ paths. Mount the Handler at "/v1/" of a mux
// (mux.Handle("/v1/", h)) without stripping the prefix.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h.mux.ServeHTTP(w, r)
}

var _ http.Handler = (*Handler)(nil)

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openapiDoc)
}

// caller is who sent a request.
type caller struct {
	name   string // the token's name; "" for anonymous
	scopes scopes
}

type callerKey struct{}

// auth wraps a route that needs scope.
func (h *Handler) auth(scope Scope, next func(http.ResponseWriter, *http.Request, caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		authz, present := r.Header["Authorization"]
		if !present {
			if !h.anon.has(scope) {
				h.unauthorized(w, r, fmt.Sprintf("authentication required: send \"Authorization: Bearer <token>\" with a token that has the %q scope", scope))
				return
			}
			next(w, r, caller{scopes: h.anon})
			return
		}
		c, ok := h.authenticate(strings.Join(authz, ","))
		if !ok {
			h.unauthorized(w, r, "unknown token: send \"Authorization: Bearer <token>\" with a token from the API configuration")
			return
		}
		if !c.scopes.has(scope) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("token %q lacks the %q scope this request needs", c.name, scope), "")
			return
		}
		next(w, r, c)
	}
}

// authenticate finds the token of an Authorization header. It compares
// the hash of the secret with every token's, always all of them, in
// constant time.
func (h *Handler) authenticate(authz string) (caller, bool) {
	scheme, secret, ok := strings.Cut(strings.TrimSpace(authz), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return caller{}, false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(secret)))
	found := -1
	for i := range h.tokens {
		if subtle.ConstantTimeCompare(sum[:], h.tokens[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return caller{}, false
	}
	return caller{name: h.tokens[found].name, scopes: h.tokens[found].scopes}, true
}

func (h *Handler) unauthorized(w http.ResponseWriter, r *http.Request, msg string) {
	h.log.LogAttrs(r.Context(), slog.LevelDebug, "httpapi: refused: "+msg, slog.String("path", r.URL.Path), slog.String("remote", r.RemoteAddr))
	w.Header().Set("WWW-Authenticate", `Bearer realm="peonify"`)
	writeError(w, http.StatusUnauthorized, msg, "")
}

// Error is the body of every error answer.
type Error struct {
	// Error says what is wrong and how to fix it.
	Error string `json:"error"`
	// Field is the JSON path of the request field at fault, such as
	// "tasks[2].delay", when there is one.
	Field string `json:"field,omitempty"`
}

// apiError is an error answer in the making.
type apiError struct {
	status int
	msg    string
	field  string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, field, format string, args ...any) *apiError {
	return &apiError{status: status, field: field, msg: fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, status int, msg, field string) {
	writeJSON(w, status, Error{Error: msg, Field: field})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	writeRaw(w, status, append(b, '\n'))
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// fail answers with err: an *apiError as it says, a store error as 503
// (or 404, 409, 422, 501 where the store's error means that).
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, st *store, doing string, err error) {
	var ae *apiError
	var inv *peonify.InvalidTaskError
	switch {
	case errors.As(err, &ae):
		writeError(w, ae.status, ae.msg, ae.field)
	case errors.As(err, &inv):
		writeError(w, http.StatusUnprocessableEntity, inv.Error(), "")
	case errors.Is(err, peonify.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("store %q: %s: %v", st.name, doing, err), "")
	case errors.Is(err, errors.ErrUnsupported):
		writeError(w, http.StatusNotImplemented, fmt.Sprintf("store %q (%s) cannot do this: %s: %v", st.name, st.kind, doing, err), "")
	default:
		h.log.LogAttrs(r.Context(), slog.LevelError, "httpapi: store call failed", slog.String("store", st.name),
			slog.String("doing", doing), slog.String("path", r.URL.Path), slog.Any("err", err))
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("store %q is unavailable (%s: %v): retry later; a write may or may not have been applied before the failure, so retry an enqueue with the same Idempotency-Key (or task id), which makes that safe", st.name, doing, err), "")
	}
}

// retryAfter is the Retry-After, in seconds, of a 503.
const retryAfter = 1

// storeCtx bounds a store call.
func (h *Handler) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, h.cfg.StoreTimeout)
}

// pickStore returns the named store, or the default one for "".
func (h *Handler) pickStore(name, field string) (*store, error) {
	if name == "" {
		return h.order[0], nil
	}
	st := h.stores[name]
	if st == nil {
		names := make([]string, len(h.order))
		for i, s := range h.order {
			names[i] = s.name
		}
		return nil, errorf(http.StatusNotFound, field, "no store named %q; the stores are: %s", name, strings.Join(names, ", "))
	}
	return st, nil
}

// taskURL is the state URL of a task.
func taskURL(st *store, id string) string {
	return "/v1/tasks/" + url.PathEscape(id) + "?store=" + url.QueryEscape(st.name)
}

// workflowURL is the state URL of a workflow.
func workflowURL(st *store, id string) string {
	return "/v1/workflows/" + url.PathEscape(id) + "?store=" + url.QueryEscape(st.name)
}

// idemCache remembers the answers to requests with an Idempotency-Key for
// a window, in memory.
type idemCache struct {
	window time.Duration
	mu     sync.Mutex
	locks  map[string]*idemLock
	done   map[string]idemAnswer
	order  []idemOrder // oldest first
	bytes  int
}

type idemLock struct {
	mu   sync.Mutex
	refs int
}

type idemAnswer struct {
	reqHash string
	status  int
	body    []byte
	at      time.Time
}

type idemOrder struct {
	id string
	at time.Time
}

// maxIdemBytes bounds the memory of remembered answers; the oldest are
// forgotten first (the store then still recognises their tasks).
const maxIdemBytes = 64 << 20

func newIdemCache(window time.Duration) *idemCache {
	return &idemCache{window: window, locks: make(map[string]*idemLock), done: make(map[string]idemAnswer)}
}

// lock serialises the requests with the same idempotency ID in this
// Handler, so that concurrent retries store one task even on a store that
// detects no duplicates.
func (c *idemCache) lock(id string) func() {
	c.mu.Lock()
	l := c.locks[id]
	if l == nil {
		l = &idemLock{}
		c.locks[id] = l
	}
	l.refs++
	c.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		c.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(c.locks, id)
		}
		c.mu.Unlock()
	}
}

// get returns the remembered answer for id.
func (c *idemCache) get(id string) (idemAnswer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(time.Now())
	a, ok := c.done[id]
	return a, ok
}

// put remembers an answer.
func (c *idemCache) put(id string, a idemAnswer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a.at = time.Now()
	if old, ok := c.done[id]; ok {
		c.bytes -= len(old.body)
	}
	c.done[id] = a
	c.bytes += len(a.body)
	c.order = append(c.order, idemOrder{id: id, at: a.at})
	c.expire(a.at)
}

func (c *idemCache) expire(now time.Time) {
	cut := now.Add(-c.window)
	for len(c.order) > 0 && (c.order[0].at.Before(cut) || c.bytes > maxIdemBytes) {
		o := c.order[0]
		c.order = c.order[1:]
		if a, ok := c.done[o.id]; ok && a.at.Equal(o.at) {
			c.bytes -= len(a.body)
			delete(c.done, o.id)
		}
	}
}
