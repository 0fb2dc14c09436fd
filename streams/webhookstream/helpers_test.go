package webhookstream

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/memstream"
)

// The secrets of the tests' senders.
const (
	githubSecret   = "It's a Secret to Everybody"
	stripeSecret   = "whsec_test_secret_for_stripe"
	standardSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	hmacSecret     = "generic-shared-secret"
	slackSecret    = "8f742231b10e8888abcd99yyyzzz85a5"
	shopifySecret  = "shpss_5c1f3e1b2a9d4e8f"
)

// signGitHub computes X-Hub-Signature-256 as GitHub documents it: "sha256="
// and the hex HMAC-SHA256 of the body under the webhook secret.
func signGitHub(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// stripeV1 computes a v1 signature as Stripe documents it: the hex
// HMAC-SHA256 of "<t>.<body>" under the endpoint secret.
func stripeV1(secret string, t int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(t, 10) + "." + string(body)))
	return hex.EncodeToString(m.Sum(nil))
}

// signStripe builds a Stripe-Signature header for one secret.
func signStripe(secret string, t int64, body []byte) string {
	return "t=" + strconv.FormatInt(t, 10) + ",v1=" + stripeV1(secret, t, body)
}

// signStandard computes one webhook-signature entry as the Standard Webhooks
// specification documents it: "v1," and the base64 HMAC-SHA256 of
// "<id>.<timestamp>.<body>" under the base64-decoded secret.
func signStandard(secret, id string, ts int64, body []byte) string {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		panic(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "." + string(body)))
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// signSlack computes X-Slack-Signature as Slack documents it: "v0=" and
// the hex HMAC-SHA256 of "v0:<timestamp>:<body>" under the signing secret.
func signSlack(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("v0:" + strconv.FormatInt(ts, 10) + ":" + string(body)))
	return "v0=" + hex.EncodeToString(m.Sum(nil))
}

// signShopify computes X-Shopify-Hmac-Sha256 as Shopify documents it: the
// base64 HMAC-SHA256 of the body under the client secret.
func signShopify(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func secrets(s ...string) []Secret {
	out := make([]Secret, len(s))
	for i, x := range s {
		out[i] = NewSecret(x)
	}
	return out
}

// testRoutes has one route per preset plus an unsigned one.
func testRoutes() map[string]Route {
	return map[string]Route{
		"/github":   {Type: "github", Verifier: GitHub{Secrets: secrets(githubSecret)}, JSON: true},
		"/stripe":   {Type: "stripe", Verifier: Stripe{Secrets: secrets(stripeSecret)}, JSON: true},
		"/standard": {Type: "standard", Verifier: StandardWebhooks{Secrets: secrets(standardSecret)}, JSON: true},
		"/hmac": {Type: "hmac", Verifier: HMAC{Header: "X-Signature", Prefix: "sha256=", Encoding: Base64,
			Secrets: secrets(hmacSecret), IDHeader: "X-Delivery", EventHeader: "X-Event"}},
		"/slack":   {Type: "slack", Verifier: Slack{Secrets: secrets(slackSecret)}},
		"/shopify": {Type: "shopify", Verifier: Shopify{Secrets: secrets(shopifySecret)}, JSON: true},
		"/open":    {Type: "open", AllowUnsigned: true},
	}
}

// store is a real in-memory store behind a FaultStore, which counts its
// Enqueue calls and can be made to fail or stall.
type store struct {
	*intaketest.FaultStore
	mem *memstream.Stream
}

func newStore(t *testing.T) *store {
	mem := intaketest.NewMem(t)
	return &store{FaultStore: &intaketest.FaultStore{Enqueuer: mem}, mem: mem}
}

// stored returns how many tasks the store holds, in any state.
func (s *store) stored(t *testing.T) int { return intaketest.Total(t, s.mem) }

// get returns a stored task.
func (s *store) get(t *testing.T, id string) peonify.Task {
	t.Helper()
	task := intaketest.Stored(t, s.mem, id)
	if task == nil {
		t.Fatalf("task %q is not stored", id)
	}
	return *task
}

// newHandler returns a Handler on st with cfg (Routes default to
// testRoutes) whose logs go to the test's output.
func newHandler(t *testing.T, st peonify.Enqueuer, cfg Config) *Handler {
	t.Helper()
	if cfg.Routes == nil {
		cfg.Routes = testRoutes()
	}
	if cfg.Logger == nil {
		cfg.Logger = intaketest.Logger(t)
	}
	h, err := New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// request is a webhook request to send in a test.
type request struct {
	method string // defaults to POST
	path   string
	body   []byte
	header map[string]string
}

// answer is what the handler responded.
type answer struct {
	status int
	header http.Header
	body   map[string]string // the JSON answer, if it was one
	raw    string
}

// serve sends req to h through an httptest.ResponseRecorder.
func serve(t *testing.T, h http.Handler, req request) answer {
	t.Helper()
	if req.method == "" {
		req.method = http.MethodPost
	}
	r := httptest.NewRequest(req.method, req.path, strings.NewReader(string(req.body)))
	for k, v := range req.header {
		r.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return decodeAnswer(t, rec.Code, rec.Header(), rec.Body)
}

func decodeAnswer(t *testing.T, status int, h http.Header, body io.Reader) answer {
	t.Helper()
	raw, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: status, header: h, raw: string(raw)}
	if strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &a.body); err != nil {
			t.Fatalf("answer %d is not a JSON object of strings: %v\n%s", status, err, raw)
		}
	}
	return a
}

// want fails the test unless the answer has the status.
func (a answer) want(t *testing.T, status int) answer {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d; body: %s", a.status, status, a.raw)
	}
	return a
}

// githubRequest is a correctly signed GitHub delivery.
func githubRequest(delivery string, body []byte) request {
	return request{path: "/github", body: body, header: map[string]string{
		"Content-Type":        "application/json",
		"X-GitHub-Event":      "push",
		"X-GitHub-Delivery":   delivery,
		"X-Hub-Signature-256": signGitHub(githubSecret, body),
	}}
}

// stripeRequest is a Stripe delivery of the event with this id, signed at
// time at.
func stripeRequest(id string, at time.Time) request {
	body := []byte(`{"id":"` + id + `","object":"event","type":"invoice.paid","data":{"object":{}}}`)
	return request{path: "/stripe", body: body, header: map[string]string{
		"Content-Type":     "application/json; charset=utf-8",
		"Stripe-Signature": signStripe(stripeSecret, at.Unix(), body),
	}}
}

// standardRequest is a Standard Webhooks delivery signed at time at.
func standardRequest(id string, at time.Time, body []byte) request {
	return request{path: "/standard", body: body, header: map[string]string{
		"Content-Type":      "application/json",
		"webhook-id":        id,
		"webhook-timestamp": strconv.FormatInt(at.Unix(), 10),
		"webhook-signature": signStandard(standardSecret, id, at.Unix(), body),
	}}
}

// hmacRequest is a delivery signed with the generic HMAC scheme.
func hmacRequest(id string, body []byte) request {
	m := hmac.New(sha256.New, []byte(hmacSecret))
	m.Write(body)
	return request{path: "/hmac", body: body, header: map[string]string{
		"X-Signature": "sha256=" + base64.StdEncoding.EncodeToString(m.Sum(nil)),
		"X-Delivery":  id,
		"X-Event":     "thing.created",
	}}
}

// slackEvent is the body of a Slack Events API callback with this event_id.
func slackEvent(eventID string) []byte {
	return []byte(`{"token":"z26uFbvR1xHJEdHE1OQiO6t8","team_id":"T061EG9RZ","api_app_id":"A0FFV41KK",` +
		`"event":{"type":"app_mention","user":"U061F7AUR","text":"<@U0LAN0Z89> is it everything?","ts":"1515449522.000016","channel":"C0LAN2Q65"},` +
		`"type":"event_callback","event_id":"` + eventID + `","event_time":1515449522}`)
}

// slackCommand is the body of a slash command, as in Slack's documented
// example but for the command.
const slackCommand = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V" +
	"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fdeploy&text=prod" +
	"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN" +
	"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"

// slackRequest is a request from Slack signed at time at.
func slackRequest(at time.Time, body []byte) request {
	ct := "application/x-www-form-urlencoded"
	if len(body) > 0 && body[0] == '{' {
		ct = "application/json"
	}
	return request{path: "/slack", body: body, header: map[string]string{
		"Content-Type":              ct,
		"X-Slack-Request-Timestamp": strconv.FormatInt(at.Unix(), 10),
		"X-Slack-Signature":         signSlack(slackSecret, at.Unix(), body),
	}}
}

// slackSignatureID is the delivery ID the Slack preset gives a request
// without an event_id, computed here from its definition: the timestamp,
// "-", and the first 16 bytes of the SHA-256 of the signature, in hex.
func slackSignatureID(r request) string {
	sig, err := hex.DecodeString(strings.TrimPrefix(r.header["X-Slack-Signature"], "v0="))
	if err != nil {
		panic(err)
	}
	d := sha256.Sum256(sig)
	return r.header["X-Slack-Request-Timestamp"] + "-" + hex.EncodeToString(d[:16])
}

// shopifyRequest is a Shopify delivery with this webhook ID.
func shopifyRequest(id string, body []byte) request {
	return request{path: "/shopify", body: body, header: map[string]string{
		"Content-Type":          "application/json",
		"X-Shopify-Topic":       "orders/create",
		"X-Shopify-Webhook-Id":  id,
		"X-Shopify-Event-Id":    "98880550-7158-44d4-b7cd-2c97c8a091b5",
		"X-Shopify-Hmac-Sha256": signShopify(shopifySecret, body),
	}}
}

// recorder collects what a task handler ran.
type recorder struct {
	mu   sync.Mutex
	runs []*peonify.Task
	ch   chan *peonify.Task
}

func newRecorder() *recorder { return &recorder{ch: make(chan *peonify.Task, 100)} }

func (r *recorder) handler() peonify.Handler {
	return peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
		r.mu.Lock()
		r.runs = append(r.runs, t.Clone())
		r.mu.Unlock()
		r.ch <- t.Clone()
		return nil
	})
}

// next waits for the next task run.
func (r *recorder) next(t *testing.T) *peonify.Task {
	t.Helper()
	select {
	case task := <-r.ch:
		return task
	case <-time.After(10 * time.Second):
		t.Fatal("no task ran within 10s")
		return nil
	}
}

// runProcessor runs a processor with the task list and middleware on s
// until the test ends.
func runProcessor(t *testing.T, s peonify.Stream, tl peonify.TaskList, mw ...peonify.Middleware) {
	t.Helper()
	p := streamtest.Processor(t, peonify.Config{Workers: 2, Middleware: mw, ShutdownGrace: time.Second,
		Logger: intaketest.Logger(t)}, s, tl)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}
