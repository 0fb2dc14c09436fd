package openapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	validationerrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/httpapi"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/internal/testqueue"
	"github.com/peonify/peonify/streams/memstream"
	"github.com/peonify/peonify/streams/pgstream"
	"github.com/peonify/peonify/streams/redisstream"
	"github.com/peonify/peonify/streams/sqlitestream"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// pgx closes a cancelled connection in the background; it ends on its own.
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgconn.(*PgConn).asyncClose.func1"))
}

// Tokens of the tests.
const (
	adminSecret   = "admin-secret-0123456789abcdef0123"
	enqueueSecret = "enqueue-secret-0123456789abcdef01"
	readSecret    = "read-secret-0123456789abcdef012345"
)

var tokens = []httpapi.Token{
	{Name: "admin", Secret: adminSecret, Scopes: []httpapi.Scope{httpapi.ScopeAdmin}},
	{Name: "producer", Secret: enqueueSecret, Scopes: []httpapi.Scope{httpapi.ScopeEnqueue}},
	{Name: "reader", Secret: readSecret, Scopes: []httpapi.Scope{httpapi.ScopeRead}},
}

var (
	validatorOnce sync.Once
	theValidator  validator.Validator
	validatorErr  error
	validatorMu   sync.Mutex // the validator's caches are not documented as safe for concurrent use
)

// openapiValidator returns the validator of httpapi.OpenAPI(), after
// checking that the document itself is valid OpenAPI 3.1.
func openapiValidator(t testing.TB) validator.Validator {
	t.Helper()
	validatorOnce.Do(func() {
		doc, err := libopenapi.NewDocument(httpapi.OpenAPI())
		if err != nil {
			validatorErr = err
			return
		}
		v, errs := validator.NewValidator(doc, config.WithFormatAssertions())
		if len(errs) > 0 {
			validatorErr = errs[0]
			return
		}
		if ok, verrs := v.ValidateDocument(); !ok {
			var b strings.Builder
			for _, e := range verrs {
				b.WriteString(e.Error() + "; ")
			}
			validatorErr = &docError{b.String()}
			return
		}
		theValidator = v
	})
	if validatorErr != nil {
		t.Fatalf("openapi.json: %v", validatorErr)
	}
	return theValidator
}

type docError struct{ msg string }

func (e *docError) Error() string { return "invalid OpenAPI document: " + e.msg }

// api is a client of an httpapi.Handler served by httptest that validates
// every answer against the OpenAPI document.
type api struct {
	t   testing.TB
	srv *httptest.Server
	h   *httpapi.Handler
}

// answer is one response.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into v.
func (a answer) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("answer %d %s: %v", a.status, a.body, err)
	}
}

// errorField returns the body's field, for an error answer.
func (a answer) errorField(t testing.TB) string {
	var e httpapi.Error
	a.json(t, &e)
	if e.Error == "" {
		t.Fatalf("error answer %d without an error message: %s", a.status, a.body)
	}
	return e.Field
}

func (a answer) want(t testing.TB, status int) answer {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.body)
	}
	return a
}

// newAPI serves a Handler with cfg (Tokens defaulted to the tests').
func newAPI(t testing.TB, cfg httpapi.Config) *api {
	t.Helper()
	if cfg.Tokens == nil {
		cfg.Tokens = tokens
	}
	if cfg.Logger == nil {
		cfg.Logger = streamtest.Logger(t)
	}
	h, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	openapiValidator(t)
	return &api{t: t, srv: srv, h: h}
}

// do sends a request with the secret (none if "") and validates the answer.
func (c *api) do(method, path, secret, body string, header ...string) answer {
	c.t.Helper()
	req, err := http.NewRequest(method, c.srv.URL+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	c.validate(method, path, body, secret, resp, b)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// validate checks an answer against the OpenAPI document, and the
// request too when it succeeded: a request the API accepts must be one
// the document allows.
func (c *api) validate(method, path, body, secret string, resp *http.Response, b []byte) {
	c.t.Helper()
	req, _ := http.NewRequest(method, "http://example.test"+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	r := &http.Response{StatusCode: resp.StatusCode, Header: resp.Header.Clone(), Body: io.NopCloser(bytes.NewReader(b)), Request: req}
	validatorMu.Lock()
	var ok bool
	var errs []*validationerrors.ValidationError
	if resp.StatusCode < 300 {
		ok, errs = openapiValidator(c.t).ValidateHttpRequestResponse(req, r)
	} else {
		ok, errs = openapiValidator(c.t).ValidateHttpResponse(req, r)
	}
	validatorMu.Unlock()
	if !ok {
		var msg strings.Builder
		for _, e := range errs {
			msg.WriteString("\n  " + e.Error())
			for _, se := range e.SchemaValidationErrors {
				msg.WriteString("\n    " + se.Reason + " at " + se.FieldPath + " (" + se.KeywordLocation + ")")
			}
		}
		c.t.Errorf("%s %s answered %d %s, which the OpenAPI document does not allow:%s", method, path, resp.StatusCode, b, msg.String())
	}
}

// backend is a store of the tests.
type backend struct {
	name string
	open func(t testing.TB) peonify.Stream // a fresh, empty store closed when the test ends
}

var backends = []backend{
	{"memstream", func(t testing.TB) peonify.Stream {
		s := memstream.New(memstream.Config{})
		streamtest.CloseAtEnd(t, s)
		return s
	}},
	{"sqlite", func(t testing.TB) peonify.Stream {
		s, err := sqlitestream.Open(filepath.Join(t.TempDir(), "tasks.db"), sqlitestream.Config{Logger: streamtest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		streamtest.CloseAtEnd(t, s)
		return s
	}},
	{"postgres", openPostgres},
	{"redis", openRedis},
}

// pgSchema is the Postgres schema of these tests; its name carries the
// schema version, as pgstream's tests do.
const pgSchema = "httpapi_test_v3"

var pgMigrate sync.Once

func openPostgres(t testing.TB) peonify.Stream {
	url := testenv.URL(t, "postgres")
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var merr error
	pgMigrate.Do(func() { merr = pgstream.MigrateSchema(context.Background(), pool, pgSchema) })
	if merr != nil {
		t.Fatal(merr)
	}
	queue := streamtest.Name(t, 60)
	s, err := pgstream.New(pool, pgstream.Config{Queue: queue, Schema: pgSchema, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close(context.Background())
		for _, table := range []string{"peonify_tasks", "peonify_queues", "peonify_buckets", "peonify_edges"} {
			q := "DELETE FROM " + pgx.Identifier{pgSchema, table}.Sanitize() + " WHERE queue = $1"
			if _, err := pool.Exec(context.Background(), q, queue); err != nil {
				t.Logf("cleaning up queue %s: %v", queue, err)
			}
		}
	})
	return s
}

func openRedis(t testing.TB) peonify.Stream {
	url := testenv.URL(t, "redis")
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	prefix := "httpapi-" + streamtest.RandHex(6)
	testqueue.Redis(t, url, prefix)
	s, err := redisstream.New(c, redisstream.Config{Prefix: prefix, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	streamtest.CloseAtEnd(t, s)
	return s
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// forEachBackend runs fn as a subtest on each backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, open func(testing.TB) peonify.Stream)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b.open) })
	}
}

// counts returns the store's task counts, through the API.
func (c *api) counts(t testing.TB) map[peonify.State]int {
	t.Helper()
	var v httpapi.StoresView
	c.do("GET", "/v1/stores", readSecret, "").want(t, http.StatusOK).json(t, &v)
	if len(v.Stores) == 0 || v.Stores[0].Counts == nil {
		t.Fatalf("no counts: %+v", v)
	}
	return v.Stores[0].Counts
}

func total(m map[peonify.State]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// eventually waits for cond.
func eventually(t testing.TB, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
