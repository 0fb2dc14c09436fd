package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
	"go.opentelemetry.io/otel/propagation"
)

// traceContext writes the W3C traceparent and tracestate of the attempt's
// span into the request.
var traceContext = propagation.TraceContext{}

// FieldError reports an invalid field of an executor's config, named as in
// the peonify.yaml file.
type FieldError struct {
	Field  string // e.g. "url"
	Reason string
}

// Error names the field and what is wrong with it.
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// HTTPConfig configures an HTTP executor. Only URL is required.
type HTTPConfig struct {
	// URL receives one request per task attempt. Required; http or https.
	URL string `yaml:"url"`

	// Method is the request method. Defaults to POST.
	Method string `yaml:"method"`

	// Headers are added to every request, before the task's own headers.
	Headers map[string]string `yaml:"headers"`

	// ContentType is the Content-Type of the payload. Defaults to
	// application/json.
	ContentType string `yaml:"content_type"`

	// Timeout bounds one request. Defaults to 0: only the processor's task
	// timeout bounds it.
	Timeout time.Duration `yaml:"timeout"`

	// DiscardResult drops the body of 2xx answers instead of keeping it as
	// the task's result. Defaults to false: a non-empty body of at most
	// peonify.MaxResultLen bytes is the task's result (see
	// peonify.SetResult), and a larger one fails the task.
	DiscardResult bool `yaml:"discard_result"`

	// Client sends the requests. Defaults to a client with its own
	// connection pool that does not follow redirects.
	Client *http.Client `yaml:"-"`
}

// The request headers that carry the task's identity. Idempotency-Key is
// the task ID: the same on every attempt, so that the receiver can discard
// a duplicate delivery.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderTaskID         = "Peonify-Task-Id"
	HeaderTaskType       = "Peonify-Task-Type"
	HeaderTaskAttempt    = "Peonify-Task-Attempt"
)

// HTTP is a peonify.Handler that delivers each task to a URL.
//
// The request carries the payload as its body, HTTPConfig.Headers, the
// task's Headers (those that are valid HTTP header names and do not clash
// with HTTPConfig.Headers or the ones the executor sets), and the task's
// identity in
// Idempotency-Key, Peonify-Task-Id, Peonify-Task-Type and
// Peonify-Task-Attempt. When ctx holds a span (the attempt's span of
// peonifyotel.Middleware), the request carries its W3C trace context
// (traceparent, tracestate) in place of the task's own, so the endpoint's
// spans are children of the attempt. The answer decides the outcome:
//
//   - 2xx: the task is done. A non-empty response body is the task's
//     result (peonify.SetResult), kept by stores that keep results (a
//     peonify.Tracker) and read with Tracker.Wait, Inspector.Get or
//     peonify tasks get; a body longer than peonify.MaxResultLen fails the
//     task for good (peonify.SkipRetry) rather than keep a truncated
//     result. HTTPConfig.DiscardResult turns this off; on a store that
//     does not keep results the body is dropped, whatever its size.
//   - 408, 429 and 5xx, and network errors and timeouts: the attempt failed
//     and is retried, after the delay of a Retry-After header when the
//     answer has one, else after the processor's backoff.
//   - any other status (a 4xx, or a redirect, which is not followed): the
//     task is dead at once (peonify.SkipRetry), since sending it again
//     cannot help.
type HTTP struct {
	url         string
	shown       string // url without credentials or query, for errors
	method      string
	headers     http.Header
	contentType string
	timeout     time.Duration
	discard     bool // HTTPConfig.DiscardResult
	client      *http.Client
	own         *http.Transport // closed by Close when the client is ours
}

var _ peonify.Handler = (*HTTP)(nil)

// NewHTTP returns an HTTP executor, or a *FieldError naming what is wrong
// with cfg.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	if cfg.URL == "" {
		return nil, &FieldError{"url", "required: the address that receives each task"}
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &FieldError{"url", fmt.Sprintf("%q is not an http:// or https:// URL", redact(cfg.URL))}
	}
	h := &HTTP{
		url:         cfg.URL,
		shown:       u.Scheme + "://" + u.Host + u.Path,
		method:      strings.ToUpper(cfg.Method),
		headers:     make(http.Header, len(cfg.Headers)),
		contentType: cfg.ContentType,
		timeout:     cfg.Timeout,
		discard:     cfg.DiscardResult,
		client:      cfg.Client,
	}
	if h.method == "" {
		h.method = http.MethodPost
	}
	if !validToken(h.method) {
		return nil, &FieldError{"method", fmt.Sprintf("%q is not an HTTP method", cfg.Method)}
	}
	if h.contentType == "" {
		h.contentType = "application/json"
	}
	if cfg.Timeout < 0 {
		return nil, &FieldError{"timeout", "must not be negative (0 means no limit but the task timeout)"}
	}
	for k, v := range cfg.Headers {
		if !validToken(k) {
			return nil, &FieldError{"headers", fmt.Sprintf("%q is not a valid header name", k)}
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, &FieldError{"headers." + k, "contains a line break or NUL"}
		}
		h.headers.Set(k, v)
	}
	if h.client == nil {
		h.own = http.DefaultTransport.(*http.Transport).Clone()
		h.own.MaxIdleConnsPerHost = 64
		h.client = &http.Client{
			Transport: h.own,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return h, nil
}

// Close closes the idle connections of the executor's own client. It does
// nothing to a Client passed in HTTPConfig.
func (h *HTTP) Close() {
	if h.own != nil {
		h.own.CloseIdleConnections()
	}
}

// reserved are the headers a task cannot set: the transport's, and the
// ones that carry the task's identity.
var reserved = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Content-Type": true, "Te": true, "Trailer": true, "Upgrade": true, "Keep-Alive": true,
	"Proxy-Connection": true, HeaderIdempotencyKey: true, HeaderTaskID: true, HeaderTaskType: true,
	HeaderTaskAttempt: true,
}

// Execute sends one request for t and turns the answer into the task's
// outcome.
func (h *HTTP) Execute(ctx context.Context, t *peonify.Task) error {
	if h.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, h.method, h.url, bytes.NewReader(t.Payload))
	if err != nil {
		return peonify.SkipRetry(fmt.Errorf("http executor: build request: %w", err))
	}
	for k, v := range t.Headers {
		ck := http.CanonicalHeaderKey(k)
		if validToken(k) && !reserved[ck] && !strings.HasPrefix(ck, "Peonify-") && !strings.ContainsAny(v, "\r\n\x00") {
			req.Header.Set(ck, v)
		}
	}
	for k, vs := range h.headers { // the operator's headers win over a producer's
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", h.contentType)
	req.Header.Set(HeaderIdempotencyKey, t.ID)
	req.Header.Set(HeaderTaskID, t.ID)
	req.Header.Set(HeaderTaskType, t.Type)
	req.Header.Set(HeaderTaskAttempt, strconv.Itoa(t.Attempt))
	// The attempt's span (the daemon's tracing middleware) is the parent
	// of the endpoint's work; it replaces a producer's traceparent that
	// the task's headers carried. Without a span ctx adds nothing.
	traceContext.Inject(ctx, propagation.HeaderCarrier(req.Header))

	resp, err := h.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its message repeats the whole URL
		}
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			err = cause
		}
		return fmt.Errorf("%s %s: %w", h.method, h.shown, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if h.discard {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection can be reused
			return nil
		}
		return h.keepResult(ctx, resp)
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection can be reused

	serr := &StatusError{Method: h.method, URL: h.shown, Code: resp.StatusCode, Status: resp.Status, Body: cleanSnippet(snippet)}
	if resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return peonify.RetryAfter(d, serr)
		}
		return serr
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		serr.Location = resp.Header.Get("Location")
	}
	return peonify.SkipRetry(serr)
}

// keepResult reads the body of a 2xx answer and sets it as the task's
// result: an empty body sets none, and one longer than
// peonify.MaxResultLen fails the task for good, on a store that keeps
// results; elsewhere the body is dropped.
func (h *HTTP) keepResult(ctx context.Context, resp *http.Response) error {
	var body []byte
	if resp.ContentLength <= peonify.MaxResultLen {
		var err error
		body, err = io.ReadAll(io.LimitReader(resp.Body, peonify.MaxResultLen+1))
		if err != nil {
			// The work is done but its result is lost: the retry asks
			// again, and the receiver, keyed by Idempotency-Key, answers
			// without doing it twice.
			return fmt.Errorf("%s %s: %s, but reading the response body (the task's result) failed: %w", h.method, h.shown, resp.Status, err)
		}
		if len(body) <= peonify.MaxResultLen {
			if len(body) > 0 {
				// Without a store that keeps results (errors.ErrUnsupported),
				// or outside a processor, there is nothing to keep it.
				_ = peonify.SetResult(ctx, body)
			}
			return nil
		}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection can be reused
	// Only a store that keeps results refuses the task for its size:
	// setting an empty result tells if it is one (the failed attempt's
	// result is discarded anyway).
	if peonify.SetResult(ctx, []byte{}) != nil {
		return nil
	}
	size := "more than " + strconv.Itoa(peonify.MaxResultLen)
	if resp.ContentLength > 0 {
		size = strconv.FormatInt(resp.ContentLength, 10)
	}
	return peonify.SkipRetry(fmt.Errorf("%s %s: %s with a body of %s bytes, larger than a task result can be (peonify.MaxResultLen, %d bytes): "+
		"answer with a reference to the data instead, or set discard_result: true",
		h.method, h.shown, resp.Status, size, peonify.MaxResultLen))
}

// StatusError is the error of an HTTP task answered with a status other
// than 2xx.
type StatusError struct {
	Method   string
	URL      string // without credentials or query
	Code     int    // e.g. 503
	Status   string // e.g. "503 Service Unavailable"
	Body     string // the start of the response body, if it is text
	Location string // for a redirect: where it points
}

// Error gives the request, the status and what the response said.
func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s", e.Method, e.URL, e.Status)
	if e.Location != "" {
		fmt.Fprintf(&b, " to %s (redirects are not followed: set url to the final address)", redact(e.Location))
	}
	if e.Body != "" {
		b.WriteString(": ")
		b.WriteString(e.Body)
	}
	return b.String()
}

// parseRetryAfter reads a Retry-After header: a number of seconds or an
// HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(min(secs, int64(365*24*time.Hour/time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// cleanSnippet keeps the start of a response body for an error message if
// it is text, on one line.
func cleanSnippet(b []byte) string {
	if !utf8.Valid(b) {
		// The 512-byte cut may split a rune; drop the partial tail.
		for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.Valid(b); i++ {
			b = b[:len(b)-1]
		}
		if !utf8.Valid(b) {
			return ""
		}
	}
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return s
}

// redact hides a URL's password and query, which may hold secrets.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.RawQuery, u.Fragment = "", ""
	return u.Redacted()
}

// validToken reports whether s is an HTTP token (a method or header name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
