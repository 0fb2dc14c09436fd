package webhookstream

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intake"
)

// Config configures a Handler. Routes is required; every other field's zero
// value says what it means. Negative sizes and durations are errors.
type Config struct {
	// Routes maps URL paths, such as "/hooks/github", to what the handler
	// does with a POST there. The path is matched exactly against the
	// request's URL path, so a Handler mounted under a prefix of the user's
	// own mux is configured with the full paths. Required.
	Routes map[string]Route

	// MaxBodyBytes bounds a request body; a larger one is refused with 413
	// Request Entity Too Large. Route.MaxBodyBytes overrides it. Defaults
	// to 1 MiB. (GitHub sends payloads of up to 25 MB; raise it for large
	// push events.)
	MaxBodyBytes int64

	// BodyTimeout bounds how long reading a request body may take, so that
	// slow clients cannot hold connections open; a body not read in time
	// is refused with 408 Request Timeout. It needs a server whose
	// connections support read deadlines, as net/http's do. Defaults to
	// 10s.
	BodyTimeout time.Duration

	// EnqueueTimeout bounds the durable Enqueue. A store that fails or does
	// not answer in time makes the request fail with 503 Service
	// Unavailable, so that the sender retries. Defaults to 5s.
	EnqueueTimeout time.Duration

	// RetryAfter is the delay suggested in the Retry-After header of a 503
	// answer. Defaults to 10s.
	RetryAfter time.Duration

	// Results receives task results for synchronous routes (Route.Sync).
	// Required when a route is synchronous; see Results for the wiring.
	Results *Results

	// Logger receives a line for each refused request and each store
	// failure. Secrets are never logged. Defaults to slog.Default().
	Logger *slog.Logger
}

// Route says what a POST to one path becomes.
type Route struct {
	// Type is the task type of the requests accepted here: the name of a
	// handler in the processor's TaskList. Required.
	Type string

	// Verifier authenticates each request from the raw body before
	// anything parses it: GitHub, Stripe, StandardWebhooks, Slack,
	// Shopify, HMAC or a custom one. Required unless AllowUnsigned is set.
	Verifier Verifier

	// AllowUnsigned accepts requests without a Verifier: anyone who can
	// reach the endpoint can enqueue tasks. Set it only when something in
	// front of the handler authenticates the sender.
	AllowUnsigned bool

	// JSON refuses bodies that are not valid JSON with 400 Bad Request.
	JSON bool

	// Headers names request headers to copy to Task.Headers, under their
	// lower-case names, in addition to those always copied (see the
	// package documentation).
	Headers []string

	// IDPrefix is put before the sender's delivery ID to make the task ID,
	// so that the same delivery ID sent to two routes does not collide in a
	// shared store. Defaults to Type followed by ":".
	IDPrefix string

	// Sync makes the handler wait for the task's first attempt and answer
	// with its result (see Results and Respond) rather than at once with
	// 202 Accepted. Requires Config.Results.
	Sync bool

	// SyncTimeout bounds the wait of a synchronous route; a task not done
	// in time is answered 202 Accepted, and runs on. Defaults to 10s.
	SyncTimeout time.Duration

	// MaxBodyBytes overrides Config.MaxBodyBytes for this route.
	MaxBodyBytes int64

	// MaxAttempts and Priority are copied to each task (see peonify.Task).
	MaxAttempts int
	Priority    int

	// KeyHeader names the request header whose value is the task's Key,
	// what it belongs to for flow control: the sender's own tenant
	// header, such as X-Shopify-Shop-Domain. Defaults to Peonify-Key
	// (peonify.KeyHeader). A value longer than peonify.MaxKeyLen is
	// refused with 400 Bad Request.
	KeyHeader string
}

// The Task.Headers keys the handler sets on every task, in addition to the
// lower-cased names of Route.Headers.
const (
	HeaderContentType = "content-type" // the request's Content-Type, when it has one
	HeaderDeliveryID  = "delivery-id"  // the sender's delivery ID, when the Verifier found one
	HeaderEvent       = "event"        // the event type, when the Verifier found one
)

// The response headers the handler sets on accepted requests.
const (
	// ResponseTaskID holds the ID of the task a request was stored as.
	ResponseTaskID = "Peonify-Task-Id"
	// ResponseDuplicate is "true" when the task was already stored: the
	// request was a redelivery and was not enqueued again.
	ResponseDuplicate = "Peonify-Duplicate"
)

func (c Config) validate() error {
	switch {
	case len(c.Routes) == 0:
		return &peonify.ConfigError{Field: "webhookstream.Config.Routes", Reason: "is empty: map at least one path to a Route"}
	case c.MaxBodyBytes < 0:
		return &peonify.ConfigError{Field: "webhookstream.Config.MaxBodyBytes", Reason: "must not be negative (0 means the default, 1 MiB)"}
	case c.BodyTimeout < 0:
		return &peonify.ConfigError{Field: "webhookstream.Config.BodyTimeout", Reason: "must not be negative (0 means the default, 10s)"}
	case c.EnqueueTimeout < 0:
		return &peonify.ConfigError{Field: "webhookstream.Config.EnqueueTimeout", Reason: "must not be negative (0 means the default, 5s)"}
	case c.RetryAfter < 0:
		return &peonify.ConfigError{Field: "webhookstream.Config.RetryAfter", Reason: "must not be negative (0 means the default, 10s)"}
	}
	for path, r := range c.Routes {
		field := fmt.Sprintf("webhookstream.Config.Routes[%q]", path)
		if err := r.validate(path, c.Results != nil); err != nil {
			var ce *peonify.ConfigError
			if errors.As(err, &ce) { // a field of the route or of its Verifier
				return &peonify.ConfigError{Field: field + "." + ce.Field, Reason: ce.Reason}
			}
			return &peonify.ConfigError{Field: field, Reason: err.Error()}
		}
	}
	return nil
}

func (r Route) validate(path string, haveResults bool) error {
	bad := func(field, reason string) error { return &peonify.ConfigError{Field: field, Reason: reason} }
	t := peonify.Task{Type: r.Type, MaxAttempts: r.MaxAttempts}
	switch {
	case !strings.HasPrefix(path, "/"):
		return errors.New("path must start with \"/\"")
	case r.Type == "":
		return bad("Type", "is empty: name the task type that handles these webhooks")
	case t.Validate() != nil:
		return t.Validate()
	case r.Verifier == nil && !r.AllowUnsigned:
		return errors.New("Verifier is nil: set GitHub, Stripe, StandardWebhooks, Slack, Shopify or HMAC (or AllowUnsigned if something in front authenticates senders)")
	case r.Verifier != nil && r.AllowUnsigned:
		return errors.New("AllowUnsigned is set with a Verifier: choose one")
	case r.Sync && !haveResults:
		return bad("Sync", "needs Config.Results, wired into the processor with Results.Middleware")
	case r.SyncTimeout < 0:
		return bad("SyncTimeout", "must not be negative (0 means the default, 10s)")
	case r.MaxBodyBytes < 0:
		return bad("MaxBodyBytes", "must not be negative (0 means Config.MaxBodyBytes)")
	case len(r.IDPrefix) > 128:
		return bad("IDPrefix", "is longer than 128 bytes")
	}
	for i, h := range r.Headers {
		if h == "" || strings.ContainsAny(h, " \t\r\n:") {
			return bad(fmt.Sprintf("Headers[%d]", i), fmt.Sprintf("%q is not a header name", h))
		}
	}
	if strings.ContainsAny(r.KeyHeader, " \t\r\n:") {
		return bad("KeyHeader", fmt.Sprintf("%q is not a header name", r.KeyHeader))
	}
	if c, ok := r.Verifier.(checker); ok {
		if err := c.check(); err != nil {
			var ce *peonify.ConfigError
			if errors.As(err, &ce) {
				return &peonify.ConfigError{Field: "Verifier." + ce.Field, Reason: ce.Reason}
			}
			return err
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.BodyTimeout == 0 {
		c.BodyTimeout = 10 * time.Second
	}
	if c.EnqueueTimeout == 0 {
		c.EnqueueTimeout = 5 * time.Second
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Handler is the http.Handler of a webhook intake: it turns each
// authenticated POST into a task, stores it with the store's Enqueue, and
// answers only after that returned. It is safe for concurrent use.
type Handler struct {
	store   peonify.Enqueuer
	cfg     Config
	routes  map[string]*route
	log     *slog.Logger
	results *Results
	now     func() time.Time
}

// route is a Route with its defaults applied.
type route struct {
	Route
	path      string
	headers   []string // canonical header names to copy
	keyHeader string   // canonical name of the header that holds the task's key
}

// New returns a Handler that stores the tasks it accepts in store, a
// durable stream such as sqlitestream or pgstream (the processor then runs
// them from there), configured by cfg. It reports a *peonify.ConfigError
// naming the field if cfg is invalid.
func New(store peonify.Enqueuer, cfg Config) (*Handler, error) {
	if store == nil {
		return nil, &peonify.ConfigError{Field: "webhookstream.New", Reason: "store is nil: pass a durable stream that implements peonify.Enqueuer"}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	h := &Handler{store: store, cfg: cfg, log: cfg.Logger, results: cfg.Results, now: time.Now,
		routes: make(map[string]*route, len(cfg.Routes))}
	for path, r := range cfg.Routes {
		rt := &route{Route: r, path: path}
		if rt.IDPrefix == "" {
			rt.IDPrefix = r.Type + ":"
		}
		if rt.SyncTimeout == 0 {
			rt.SyncTimeout = 10 * time.Second
		}
		if rt.MaxBodyBytes == 0 {
			rt.MaxBodyBytes = cfg.MaxBodyBytes
		}
		for _, name := range r.Headers {
			rt.headers = append(rt.headers, http.CanonicalHeaderKey(name))
		}
		rt.keyHeader = http.CanonicalHeaderKey(cmp.Or(r.KeyHeader, peonify.KeyHeader))
		h.routes[path] = rt
	}
	return h, nil
}

// ServeHTTP handles one webhook delivery. In order, it:
//
//  1. finds the route by path (404) and requires POST (405);
//  2. reads the raw body within the size limit (413) and BodyTimeout (408);
//  3. verifies the signature over the raw bytes (401);
//  4. checks the body is JSON if the route says so (400);
//  5. enqueues the task durably, answering 503 with Retry-After if the
//     store fails or is too slow;
//  6. answers 202 Accepted with the task ID, or 200 OK if the task was
//     already stored (a redelivery), or the task's reply for a synchronous
//     route.
//
// Every answer has a JSON body: {"task_id": "...", "status": "accepted"}
// (or "duplicate", "done"), or {"error": "..."} saying what is wrong.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		// Bound every read of the body: the handler's own, and the one
		// net/http makes after an early answer to drain what is left.
		// net/http lifts the deadline once the body is read to its end.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.cfg.BodyTimeout))
	}
	rt := h.routes[r.URL.Path]
	if rt == nil {
		closeUnread(w, r)
		h.fail(w, r, nil, http.StatusNotFound, "no webhook route at "+r.URL.Path, nil)
		return
	}
	if r.Method != http.MethodPost {
		closeUnread(w, r)
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, r, rt, http.StatusMethodNotAllowed, "webhooks must be sent with POST, not "+r.Method, nil)
		return
	}
	body, status, err := h.readBody(w, r, rt)
	if err != nil {
		closeUnread(w, r)
		h.fail(w, r, rt, status, err.Error(), nil)
		return
	}

	var v Verified
	if rt.Verifier != nil {
		v, err = rt.Verifier.Verify(r.Header, body, h.now())
		if err != nil {
			msg := "signature verification failed"
			if errors.Is(err, ErrNoSignature) || errors.Is(err, ErrBadSignature) || errors.Is(err, ErrTimestamp) {
				msg = err.Error()
			}
			h.fail(w, r, rt, http.StatusUnauthorized, msg, err)
			return
		}
	}
	if rt.JSON && !json.Valid(body) {
		h.fail(w, r, rt, http.StatusBadRequest, "the body is not valid JSON", nil)
		return
	}
	task, err := h.task(r, rt, v, body)
	if err != nil {
		h.fail(w, r, rt, http.StatusBadRequest, err.Error(), nil)
		return
	}

	var (
		result <-chan outcome
		cancel = func() {}
	)
	if rt.Sync {
		result, cancel = h.results.wait(task.ID) // before Enqueue: the task may finish before Enqueue returns
	}
	defer cancel()
	dup, err := h.enqueue(r.Context(), task)
	var invalid *peonify.InvalidTaskError
	switch {
	case errors.As(err, &invalid):
		h.fail(w, r, rt, http.StatusBadRequest, invalid.Reason, err)
		return
	case err != nil:
		w.Header().Set("Retry-After", strconv.Itoa(int((h.cfg.RetryAfter+time.Second-1)/time.Second)))
		h.fail(w, r, rt, http.StatusServiceUnavailable, "the task store is unavailable; retry later", err)
		return
	}

	w.Header().Set(ResponseTaskID, task.ID)
	if dup {
		w.Header().Set(ResponseDuplicate, "true")
		writeJSON(w, http.StatusOK, map[string]string{"task_id": task.ID, "status": "duplicate"})
		return
	}
	if rt.Sync {
		h.answerSync(w, r, rt, task.ID, result)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"task_id": task.ID, "status": "accepted"})
}

// closeUnread makes an answer given before the body was read in full close
// the connection rather than keep it for another request.
func closeUnread(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
}

// readBody reads the whole raw body within the route's size limit and the
// body timeout. On failure it returns the status to answer with.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, rt *route) ([]byte, int, error) {
	limit := rt.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge,
			fmt.Errorf("the body is %d bytes, more than the %d bytes this endpoint accepts", r.ContentLength, limit)
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return buf.Bytes(), 0, nil
	case errors.As(err, &tooLarge):
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("the body is more than the %d bytes this endpoint accepts", limit)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, http.StatusRequestTimeout, fmt.Errorf("the body was not received within %s", h.cfg.BodyTimeout)
	default:
		return nil, http.StatusBadRequest, fmt.Errorf("reading the body: %v", err)
	}
}

// task builds the task for an accepted request.
func (h *Handler) task(r *http.Request, rt *route, v Verified, body []byte) (*peonify.Task, error) {
	t := &peonify.Task{Type: rt.Type, Payload: body, MaxAttempts: rt.MaxAttempts, Priority: rt.Priority,
		Headers: make(map[string]string, 3+len(rt.headers))}
	set := func(key, value, from string) error {
		if value == "" {
			return nil
		}
		if !utf8.ValidString(value) {
			return fmt.Errorf("%s is not valid UTF-8", from)
		}
		t.Headers[key] = value
		return nil
	}
	if err := set(HeaderContentType, r.Header.Get("Content-Type"), "the Content-Type header"); err != nil {
		return nil, err
	}
	if err := set(HeaderEvent, v.Event, "the event type"); err != nil {
		return nil, err
	}
	for _, name := range rt.headers {
		if err := set(strings.ToLower(name), r.Header.Get(name), "the "+name+" header"); err != nil {
			return nil, err
		}
	}
	key, err := intake.Key(r.Header.Get(rt.keyHeader), nil)
	if err != nil {
		return nil, fmt.Errorf("the %s header: %w", rt.keyHeader, err)
	}
	t.Key = key
	delete(t.Headers, strings.ToLower(peonify.KeyHeader)) // the key is not also a header
	if v.ID == "" {
		t.ID = peonify.NewID() // known before Enqueue, so a synchronous request can wait for it
		return t, nil
	}
	if err := set(HeaderDeliveryID, v.ID, "the delivery ID"); err != nil {
		return nil, err
	}
	t.ID = rt.IDPrefix + v.ID
	if len(t.ID) > peonify.MaxIDLen {
		return nil, fmt.Errorf("the delivery ID is longer than %d bytes", peonify.MaxIDLen-len(rt.IDPrefix))
	}
	for _, c := range v.ID {
		if c < ' ' || c == 0x7f {
			return nil, errors.New("the delivery ID holds control characters")
		}
	}
	return t, nil
}

// enqueue stores t, reporting whether it was already stored. A client that
// hangs up does not cancel a write in progress: the task may be stored
// anyway, and a redelivery then finds it as a duplicate.
func (h *Handler) enqueue(ctx context.Context, t *peonify.Task) (dup bool, err error) {
	found, err := intake.Enqueue(context.WithoutCancel(ctx), h.store, h.cfg.EnqueueTimeout, t)
	return found != nil, err
}

// answerSync waits for the task's first attempt and answers with its
// result, or 202 Accepted if it failed or did not finish in time.
func (h *Handler) answerSync(w http.ResponseWriter, r *http.Request, rt *route, id string, result <-chan outcome) {
	timer := time.NewTimer(rt.SyncTimeout)
	defer timer.Stop()
	select {
	case o := <-result:
		if o.err != nil {
			h.log.Info("webhook task failed its first attempt; it will be retried",
				"path", rt.path, "type", rt.Type, "task_id", id, "err", o.err)
			break
		}
		if o.reply == nil {
			writeJSON(w, http.StatusOK, map[string]string{"task_id": id, "status": "done"})
			return
		}
		status := o.reply.Status
		if status < 200 || status > 599 {
			status = http.StatusOK
		}
		if o.reply.ContentType != "" {
			w.Header().Set("Content-Type", o.reply.ContentType)
		}
		w.WriteHeader(status)
		_, _ = w.Write(o.reply.Body)
		return
	case <-timer.C:
	case <-r.Context().Done():
		return // the client hung up; the task is stored and runs on
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"task_id": id, "status": "accepted"})
}

// fail answers with an error status and logs why. Refusals of the sender's
// request are logged at debug level, except failed verifications (info: a
// wrong secret is the usual cause); store failures are errors.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, rt *route, status int, msg string, err error) {
	level := slog.LevelDebug
	switch {
	case status >= 500:
		level = slog.LevelError
	case status == http.StatusUnauthorized:
		level = slog.LevelInfo
	}
	if h.log.Enabled(r.Context(), level) {
		attrs := []slog.Attr{slog.Int("status", status), slog.String("path", r.URL.Path), slog.String("remote", r.RemoteAddr)}
		if rt != nil {
			attrs = append(attrs, slog.String("type", rt.Type))
		}
		if err != nil {
			attrs = append(attrs, slog.Any("err", err))
		}
		h.log.LogAttrs(r.Context(), level, "webhook refused: "+msg, attrs...)
	}
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v map[string]string) {
	b, _ := json.Marshal(v) // a map of strings always encodes
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// Server returns an *http.Server that serves h on addr with timeouts fit
// for an endpoint open to the internet: 10s to read request headers, at
// most 64 KiB of them, 1 minute to handle a request and write the answer
// (above the Handler's default body, enqueue and synchronous timeouts
// together; raise WriteTimeout if you raise those), and 2 minutes for an
// idle keep-alive connection. The Handler bounds the body read itself with
// Config.BodyTimeout. Serve it with ListenAndServe (behind a TLS
// terminator) or ListenAndServeTLS, and stop it with Shutdown before the
// processor drains.
func Server(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

var _ http.Handler = (*Handler)(nil)
