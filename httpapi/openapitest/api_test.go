package openapitest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/httpapi"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/internal/testqueue"
	"github.com/peonify/peonify/streams/pgstream"
	"github.com/peonify/peonify/streams/redisstream"
)

// The document served is the one committed, and it is valid OpenAPI 3.1.
func TestOpenAPIDocument(t *testing.T) {
	c := newAPI(t, httpapi.Config{Stores: []httpapi.Store{{Name: "main", Stream: backends[0].open(t)}}})
	a := c.do("GET", "/v1/openapi.json", "", "").want(t, http.StatusOK)
	if string(a.body) != string(httpapi.OpenAPI()) {
		t.Fatal("GET /v1/openapi.json is not httpapi.OpenAPI()")
	}
}

// A task enqueued through the API runs on a real processor, and its
// result comes back through GET ?wait.
func TestEnqueueRunResult(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) peonify.Stream) {
		s := open(t)
		c := newAPI(t, httpapi.Config{Stores: []httpapi.Store{{Name: "main", Stream: s}}})
		type args struct{ A, B int }
		p := streamtest.Processor(t, peonify.Config{Logger: streamtest.Logger(t)}, s, peonify.TaskList{
			"add": peonify.JSONResult(func(ctx context.Context, a args) (map[string]int, error) {
				return map[string]int{"sum": a.A + a.B}, nil
			}),
		})
		var created httpapi.Created
		a := c.do("POST", "/v1/tasks", enqueueSecret, `{"type": "add", "payload": {"A": 2, "B": 3}, "priority": 5, "headers": {"tenant": "t1"}}`).
			want(t, http.StatusCreated)
		a.json(t, &created)
		if loc := a.header.Get("Location"); loc != created.URL || !strings.HasPrefix(loc, "/v1/tasks/") {
			t.Fatalf("Location %q, url %q", loc, created.URL)
		}
		var pending httpapi.TaskView
		c.do("GET", created.URL, readSecret, "").want(t, http.StatusOK).json(t, &pending)
		if pending.State != peonify.StatePending || pending.Type != "add" || string(pending.Payload) != `{"A":2,"B":3}` || pending.Headers["tenant"] != "t1" {
			t.Fatalf("before the run: %+v", pending)
		}

		stop := streamtest.Run(t, p)
		defer stop()
		var done httpapi.TaskView
		start := time.Now()
		c.do("GET", created.URL+"&wait=20s", readSecret, "").want(t, http.StatusOK).json(t, &done)
		if done.State != peonify.StateDone || string(done.Result) != `{"sum":5}` || done.Attempts != 1 {
			t.Fatalf("after the run (%s): %+v", time.Since(start), done)
		}
	})
}

// Ten concurrent requests with the same Idempotency-Key store one task,
// and all get the first answer; the key with another body is refused;
// a new Handler on the same store (a restarted daemon) still recognises
// the key.
func TestIdempotencyKey(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) peonify.Stream) {
		s := open(t)
		cfg := httpapi.Config{Stores: []httpapi.Store{{Name: "main", Stream: s}}}
		c := newAPI(t, cfg)
		body := `{"type": "charge", "payload": {"cents": 100}}`
		answers := make([]answer, 10)
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() { answers[i] = c.do("POST", "/v1/tasks", enqueueSecret, body, "Idempotency-Key", "charge-1") })
		}
		wg.Wait()
		replays := 0
		for _, a := range answers {
			a.want(t, http.StatusCreated)
			if string(a.body) != string(answers[0].body) {
				t.Fatalf("answers differ: %s and %s", a.body, answers[0].body)
			}
			if a.header.Get("Idempotent-Replayed") == "true" {
				replays++
			}
		}
		if replays != 9 {
			t.Fatalf("%d replayed answers, want 9", replays)
		}
		if n := total(c.counts(t)); n != 1 {
			t.Fatalf("%d tasks stored, want 1", n)
		}

		a := c.do("POST", "/v1/tasks", enqueueSecret, `{"type": "charge", "payload": {"cents": 999}}`, "Idempotency-Key", "charge-1").
			want(t, http.StatusUnprocessableEntity)
		a.errorField(t)

		// The same key from another token is another request.
		c.do("POST", "/v1/tasks", adminSecret, body, "Idempotency-Key", "charge-1").want(t, http.StatusCreated)

		// A restarted daemon: a new Handler, with no memory of the key.
		c2 := newAPI(t, cfg)
		r := c2.do("POST", "/v1/tasks", enqueueSecret, body, "Idempotency-Key", "charge-1").want(t, http.StatusCreated)
		if r.header.Get("Idempotent-Replayed") != "true" || string(r.body) != string(answers[0].body) {
			t.Fatalf("after a restart: %s %v", r.body, r.header)
		}
		c2.do("POST", "/v1/tasks", enqueueSecret, `{"type": "charge"}`, "Idempotency-Key", "charge-1").want(t, http.StatusUnprocessableEntity)
		if n := total(c.counts(t)); n != 2 {
			t.Fatalf("%d tasks stored, want 2", n)
		}

		// Batches and workflows too.
		batch := `{"tasks": [{"type": "a"}, {"type": "b"}]}`
		b1 := c.do("POST", "/v1/tasks/batch", enqueueSecret, batch, "Idempotency-Key", "batch-1").want(t, http.StatusCreated)
		b2 := c2.do("POST", "/v1/tasks/batch", enqueueSecret, batch, "Idempotency-Key", "batch-1").want(t, http.StatusCreated)
		if string(b1.body) != string(b2.body) || b2.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("batch retry: %s, then %s", b1.body, b2.body)
		}
		c2.do("POST", "/v1/tasks/batch", enqueueSecret, `{"tasks": [{"type": "a"}, {"type": "c"}]}`, "Idempotency-Key", "batch-1").
			want(t, http.StatusUnprocessableEntity)
		if n := total(c.counts(t)); n != 4 {
			t.Fatalf("%d tasks stored, want 4", n)
		}
		wf := `{"tasks": [{"id": "w-a", "type": "a"}, {"id": "w-b", "type": "b", "parents": ["w-a"]}]}`
		w1 := c.do("POST", "/v1/workflows", enqueueSecret, wf, "Idempotency-Key", "wf-1").want(t, http.StatusCreated)
		w2 := c2.do("POST", "/v1/workflows", enqueueSecret, wf, "Idempotency-Key", "wf-1").want(t, http.StatusCreated)
		if string(w1.body) != string(w2.body) || w2.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("workflow retry: %s, then %s", w1.body, w2.body)
		}
		if n := total(c.counts(t)); n != 6 {
			t.Fatalf("%d tasks stored, want 6", n)
		}
	})
}

// Scopes: an enqueue-only token cannot read, cancel, retry or delete; a
// request without a token, or with an unknown one, gets 401.
func TestAuth(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) peonify.Stream) {
		c := newAPI(t, httpapi.Config{Stores: []httpapi.Store{{Name: "main", Stream: open(t)}}})
		var created httpapi.Created
		c.do("POST", "/v1/tasks", enqueueSecret, `{"type": "t"}`).want(t, http.StatusCreated).json(t, &created)
		id := created.ID
		for _, r := range [][2]string{
			{"GET", "/v1/tasks/" + id}, {"POST", "/v1/tasks/" + id + "/cancel"}, {"POST", "/v1/tasks/" + id + "/retry"},
			{"DELETE", "/v1/tasks/" + id}, {"GET", "/v1/stores"},
		} {
			c.do(r[0], r[1], enqueueSecret, "").want(t, http.StatusForbidden).errorField(t)
		}
		c.do("POST", "/v1/tasks/"+id+"/cancel", readSecret, "").want(t, http.StatusForbidden)
		c.do("POST", "/v1/tasks", readSecret, `{"type": "t"}`).want(t, http.StatusForbidden)
		for _, secret := range []string{"", "not-a-token"} {
			a := c.do("POST", "/v1/tasks", secret, `{"type": "t"}`).want(t, http.StatusUnauthorized)
			if !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without a Bearer challenge: %v", a.header)
			}
			c.do("GET", "/v1/tasks/"+id, secret, "").want(t, http.StatusUnauthorized)
		}
		if n := total(c.counts(t)); n != 1 {
			t.Fatalf("%d tasks stored, want 1", n)
		}
		// The admin token may do it all.
		var ch httpapi.Changed
		c.do("POST", "/v1/tasks/"+id+"/cancel", adminSecret, "").want(t, http.StatusOK).json(t, &ch)
		if ch.State != peonify.StateCancelled {
			t.Fatalf("after cancel: %+v", ch)
		}
	})
}

// Anonymous scopes apply to requests without a token only.
func TestAnonymous(t *testing.T) {
	c := newAPI(t, httpapi.Config{Stores: []httpapi.Store{{Name: "main", Stream: backends[0].open(t)}}, Anonymous: []httpapi.Scope{httpapi.ScopeRead}})
	c.do("GET", "/v1/stores", "", "").want(t, http.StatusOK)
	c.do("POST", "/v1/tasks", "", `{"type": "t"}`).want(t, http.StatusUnauthorized)
	c.do("GET", "/v1/stores", "wrong", "").want(t, http.StatusUnauthorized)
}

// Bad requests are refused with the field at fault, and store nothing.
func TestBadRequests(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) peonify.Stream) {
		c := newAPI(t, httpapi.Config{Stores: []httpapi.Store{{Name: "main", Stream: open(t)}}, MaxBody: 4096})
		for _, tc := range []struct {
			path, body string
			status     int
			field      string
		}{
			{"/v1/tasks", `{"type": "t"`, 400, ""},
			{"/v1/tasks", `{"type": "t", "payload": {"a": }}`, 400, "payload.a"},
			{"/v1/tasks/batch", `{"tasks": [{"type": "a"}, {"type": "b", "priority": nul}]}`, 400, "tasks[1].priority"},
			{"/v1/tasks", `[1]`, 400, ""},
			{"/v1/tasks", `{"type": 5}`, 400, "type"},
			{"/v1/tasks", `{"payload": {}}`, 400, "type"},
			{"/v1/tasks", `{"type": "t", "priority": "high"}`, 400, "priority"},
			{"/v1/tasks", `{"type": "t", "delay": "soon"}`, 400, "delay"},
			{"/v1/tasks", `{"type": "t", "delay": -5}`, 422, "delay"},
			{"/v1/tasks", `{"type": "t", "run_at": "2026-01-01T00:00:00Z", "delay": "1s"}`, 422, "delay"},
			{"/v1/tasks", `{"type": "t", "payload_base64": "%%%"}`, 400, "payload_base64"},
			{"/v1/tasks", `{"type": "t", "headers": {"a": 1}}`, 400, "headers"},
			{"/v1/tasks", `{"type": "t", "headers": {"peonify-request-hash": "x"}}`, 422, "headers.peonify-request-hash"},
			{"/v1/tasks", `{"type": "t", "colour": "red"}`, 400, "colour"},
			{"/v1/tasks", `{"type": "t", "parents": ["a"]}`, 400, "parents"},
			{"/v1/tasks", `{"type": "t", "max_attempts": -1}`, 422, "max_attempts"},
			{"/v1/tasks", `{"type": "t", "store": "elsewhere"}`, 404, "store"},
			{"/v1/tasks", `{"type": "t", "payload": "` + strings.Repeat("x", 5000) + `"}`, 413, ""},
			{"/v1/tasks/batch", `{"tasks": [{"type": "a"}, {"type": "b", "priority": 1.5}]}`, 400, "tasks[1].priority"},
			{"/v1/tasks/batch", `{"tasks": [{"type": "a", "id": "x"}, {"type": "b", "id": "x"}]}`, 422, "tasks[1].id"},
			{"/v1/tasks/batch", `{"tasks": []}`, 422, "tasks"},
			{"/v1/tasks/batch", `{"tasks": [{"type": "a"}, {}]}`, 400, "tasks[1].type"},
			{"/v1/workflows", `{"tasks": [{"id": "a", "type": "a", "parents": ["nope"]}]}`, 422, "tasks[0]"},
			{"/v1/workflows", `{"tasks": [{"id": "a", "type": "a", "parents": ["b"]}, {"id": "b", "type": "b", "parents": ["a"]}]}`, 422, ""},
		} {
			a := c.do("POST", tc.path, adminSecret, tc.body)
			if a.status != tc.status {
				t.Errorf("%s %.80s: status %d, want %d: %s", tc.path, tc.body, a.status, tc.status, a.body)
				continue
			}
			if f := a.errorField(t); tc.field != "" && f != tc.field {
				t.Errorf("%s %.80s: field %q, want %q: %s", tc.path, tc.body, f, tc.field, a.body)
			}
		}
		// A body sent in chunks, without a length, is cut at the limit too.
		c.do("GET", "/v1/tasks/none", adminSecret, "").want(t, http.StatusNotFound)
		if n := total(c.counts(t)); n != 0 {
			t.Fatalf("%d tasks stored by refused requests", n)
		}
	})
}

// Batches, cancel, retry, delete, stores and workflows.
func TestOperations(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) peonify.Stream) {
		c := newAPI(t, httpapi.Config{Stores: []httpapi.Store{{Name: "main", Stream: open(t)}}})
		var b httpapi.BatchCreated
		c.do("POST", "/v1/tasks/batch", enqueueSecret, `{"tasks": [{"id": "b1", "type": "a", "delay": 3600}, {"id": "b2", "type": "a", "payload_base64": "AP8="}, {"type": "a", "run_at": "2030-01-01T00:00:00Z"}]}`).
			want(t, http.StatusCreated).json(t, &b)
		if len(b.Tasks) != 3 || b.Tasks[0].ID != "b1" {
			t.Fatalf("batch: %+v", b)
		}
		var v httpapi.TaskView
		c.do("GET", "/v1/tasks/b2", readSecret, "").want(t, http.StatusOK).json(t, &v)
		if v.PayloadBase64 != "AP8=" || v.State != peonify.StatePending {
			t.Fatalf("b2: %+v", v)
		}
		c.do("GET", "/v1/tasks/b1?wait=100ms", readSecret, "").want(t, http.StatusOK).json(t, &v)
		if v.State != peonify.StateScheduled {
			t.Fatalf("b1: %+v", v)
		}
		// A batch with a task already stored stores the others.
		c.do("POST", "/v1/tasks/batch", enqueueSecret, `{"tasks": [{"id": "b1", "type": "a"}, {"id": "b4", "type": "a"}]}`).
			want(t, http.StatusCreated).json(t, &b)
		if !b.Tasks[0].Duplicate || b.Tasks[1].Duplicate {
			t.Fatalf("batch with a duplicate: %+v", b)
		}
		c.do("POST", "/v1/tasks", enqueueSecret, `{"id": "b1", "type": "a"}`).want(t, http.StatusConflict)

		c.do("POST", "/v1/tasks/b1/retry", adminSecret, "").want(t, http.StatusConflict)
		c.do("POST", "/v1/tasks/b1/cancel", adminSecret, "").want(t, http.StatusOK)
		c.do("POST", "/v1/tasks/b1/cancel", adminSecret, "").want(t, http.StatusConflict)
		c.do("POST", "/v1/tasks/none/cancel", adminSecret, "").want(t, http.StatusNotFound)
		c.do("DELETE", "/v1/tasks/b2", adminSecret, "").want(t, http.StatusOK)
		c.do("DELETE", "/v1/tasks/b2", adminSecret, "").want(t, http.StatusNotFound)
		c.do("GET", "/v1/tasks/b2", readSecret, "").want(t, http.StatusNotFound)
		counts := c.counts(t)
		if counts[peonify.StateCancelled] != 1 || total(counts) != 3 {
			t.Fatalf("counts: %v", counts)
		}

		var wf httpapi.WorkflowCreated
		c.do("POST", "/v1/workflows", enqueueSecret, `{"id": "wf1", "tasks": [{"id": "wa", "type": "a"}, {"id": "wb", "type": "b", "parents": ["wa"], "allow_failed_parents": true}]}`).
			want(t, http.StatusCreated).json(t, &wf)
		if wf.ID != "wf1" || len(wf.Tasks) != 2 {
			t.Fatalf("workflow: %+v", wf)
		}
		c.do("POST", "/v1/workflows", enqueueSecret, `{"id": "wf1", "tasks": [{"id": "wc", "type": "a"}]}`).want(t, http.StatusConflict)
		var wv httpapi.WorkflowView
		c.do("GET", wf.URL, readSecret, "").want(t, http.StatusOK).json(t, &wv)
		if wv.State != peonify.WorkflowRunning || len(wv.Tasks) != 2 || wv.Counts[peonify.StateWaiting] != 1 {
			t.Fatalf("workflow view: %+v", wv)
		}
		c.do("GET", "/v1/tasks/wb", readSecret, "").want(t, http.StatusOK).json(t, &v)
		if v.State != peonify.StateWaiting || v.Workflow != "wf1" || len(v.Parents) != 1 || !v.AllowFailedParents {
			t.Fatalf("wb: %+v", v)
		}
		var wc httpapi.WorkflowCancelled
		c.do("POST", "/v1/workflows/wf1/cancel", adminSecret, "").want(t, http.StatusOK).json(t, &wc)
		if wc.Cancelled < 1 {
			t.Fatalf("workflow cancel: %+v", wc)
		}
		c.do("GET", "/v1/workflows/nope", readSecret, "").want(t, http.StatusNotFound)
		c.do("GET", "/v1/tasks/x?store=nope", readSecret, "").want(t, http.StatusNotFound)
	})
}

// A store that is down answers 503 with Retry-After, and nothing is
// stored.
func TestStoreDown(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		c := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1, DialTimeout: time.Second})
		t.Cleanup(func() { _ = c.Close() })
		s, err := redisstream.New(c, redisstream.Config{Prefix: "httpapi-down-" + streamtest.RandHex(4)})
		if err != nil {
			t.Fatal(err)
		}
		streamtest.CloseAtEnd(t, s)
		checkDown(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		pool, err := pgxpool.New(context.Background(), fmt.Sprintf("postgres://postgres@%s/test?sslmode=disable&connect_timeout=2", closedAddr(t)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		s, err := pgstream.New(pool, pgstream.Config{Queue: "down", Schema: pgSchema, NoListen: true})
		if err != nil {
			t.Fatal(err)
		}
		streamtest.CloseAtEnd(t, s)
		checkDown(t, s)
	})
	t.Run("memstream", func(t *testing.T) {
		s := backends[0].open(t)
		if err := s.Close(context.Background()); err != nil { // a closed store fails every call
			t.Fatal(err)
		}
		checkDown(t, s)
	})
}

func checkDown(t *testing.T, s peonify.Stream) {
	c := newAPI(t, httpapi.Config{Stores: []httpapi.Store{{Name: "main", Stream: s}}, StoreTimeout: 5 * time.Second})
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/v1/tasks", `{"type": "t"}`},
		{"POST", "/v1/tasks/batch", `{"tasks": [{"type": "t"}, {"type": "u"}]}`},
		{"POST", "/v1/workflows", `{"tasks": [{"id": "a", "type": "t"}]}`},
		{"GET", "/v1/tasks/x", ``},
		{"POST", "/v1/tasks/x/cancel", ``},
	} {
		a := c.do(r.method, r.path, adminSecret, r.body, "Idempotency-Key", "down-1"+r.path)
		a.want(t, http.StatusServiceUnavailable).errorField(t)
		if a.header.Get("Retry-After") == "" {
			t.Fatalf("%s %s: 503 without Retry-After", r.method, r.path)
		}
	}
	var v httpapi.StoresView
	c.do("GET", "/v1/stores", adminSecret, "").want(t, http.StatusOK).json(t, &v)
	if v.Stores[0].Error == "" || v.Stores[0].Counts != nil {
		t.Fatalf("stores of a store that is down: %+v", v)
	}
}

// Two handlers on one store (two daemons) racing with one
// Idempotency-Key store one task: the store detects the duplicate ID.
func TestIdempotencyAcrossHandlers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) peonify.Stream) {
		s := open(t)
		cfg := httpapi.Config{Stores: []httpapi.Store{{Name: "main", Stream: s}}}
		cs := []*api{newAPI(t, cfg), newAPI(t, cfg)}
		answers := make([]answer, 10)
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() {
				answers[i] = cs[i%2].do("POST", "/v1/tasks", enqueueSecret, `{"type": "t", "payload": [1, 2]}`, "Idempotency-Key", "k-2")
			})
		}
		wg.Wait()
		for _, a := range answers {
			a.want(t, http.StatusCreated)
			if string(a.body) != string(answers[0].body) {
				t.Fatalf("answers differ: %s and %s", a.body, answers[0].body)
			}
		}
		if n := total(cs[0].counts(t)); n != 1 {
			t.Fatalf("%d tasks stored, want 1", n)
		}
	})
}

// GET ?wait answers when the task is cancelled or goes dead, not only
// when it is done, and within the wait when the task stays pending.
func TestWaitUntilFinished(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(testing.TB) peonify.Stream) {
		s := open(t)
		c := newAPI(t, httpapi.Config{Stores: []httpapi.Store{{Name: "main", Stream: s}}})

		// Pending for the whole wait: the task as it is when the wait ends.
		c.do("POST", "/v1/tasks", enqueueSecret, `{"id": "w-pending", "type": "t", "delay": "1h"}`).want(t, http.StatusCreated)
		var v httpapi.TaskView
		c.do("GET", "/v1/tasks/w-pending?wait=200ms", readSecret, "").want(t, http.StatusOK).json(t, &v)
		if v.State != peonify.StateScheduled {
			t.Fatalf("after a wait that ended: %+v", v)
		}

		// Cancelled while a GET waits.
		got := make(chan answer, 1)
		go func() { got <- c.do("GET", "/v1/tasks/w-pending?wait=30s", readSecret, "") }()
		c.do("POST", "/v1/tasks/w-pending/cancel", adminSecret, "").want(t, http.StatusOK)
		(<-got).want(t, http.StatusOK).json(t, &v)
		if v.State != peonify.StateCancelled {
			t.Fatalf("a wait ended by a cancel: %+v", v)
		}

		// Dead while a GET waits.
		c.do("POST", "/v1/tasks", enqueueSecret, `{"id": "w-dead", "type": "fail", "max_attempts": 1}`).want(t, http.StatusCreated)
		go func() { got <- c.do("GET", "/v1/tasks/w-dead?wait=30s", readSecret, "") }()
		p := streamtest.Processor(t, peonify.Config{Logger: streamtest.Logger(t)}, s, peonify.TaskList{
			"fail": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return errors.New("it fails") }),
		})
		stop := streamtest.Run(t, p)
		defer stop()
		(<-got).want(t, http.StatusOK).json(t, &v)
		if v.State != peonify.StateDead || v.Attempts != 1 || !strings.Contains(v.LastError, "it fails") {
			t.Fatalf("a wait ended by the task going dead: %+v", v)
		}
	})
}

// A store that goes down while the API serves it: every write is
// answered 503 with Retry-After and stores nothing; once the store is
// back, the same requests retried with their Idempotency-Keys store each
// task once.
func TestStoreGoesDown(t *testing.T) {
	url := testenv.URL(t, "redis")
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, opts.Addr)
	opts.Addr, opts.MaxRetries, opts.DialTimeout = p.addr, -1, time.Second
	client := redis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	prefix := "httpapi-down-" + streamtest.RandHex(6)
	testqueue.Redis(t, url, prefix)
	s, err := redisstream.New(client, redisstream.Config{Prefix: prefix, Logger: streamtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	streamtest.CloseAtEnd(t, s)
	c := newAPI(t, httpapi.Config{Stores: []httpapi.Store{{Name: "main", Stream: s}}, StoreTimeout: 5 * time.Second})
	c.do("POST", "/v1/tasks", enqueueSecret, `{"type": "before"}`).want(t, http.StatusCreated)

	writes := []struct{ path, body, key string }{
		{"/v1/tasks", `{"type": "t"}`, "down-task"},
		{"/v1/tasks/batch", `{"tasks": [{"type": "t"}, {"type": "u"}]}`, "down-batch"},
		{"/v1/workflows", `{"tasks": [{"id": "down-a", "type": "t"}, {"id": "down-b", "type": "u", "parents": ["down-a"]}]}`, "down-workflow"},
	}
	p.stop()
	for _, w := range writes {
		a := c.do("POST", w.path, enqueueSecret, w.body, "Idempotency-Key", w.key)
		a.want(t, http.StatusServiceUnavailable).errorField(t)
		if a.header.Get("Retry-After") == "" {
			t.Fatalf("POST %s: 503 without Retry-After", w.path)
		}
	}
	var v httpapi.StoresView
	c.do("GET", "/v1/stores", readSecret, "").want(t, http.StatusOK).json(t, &v)
	if v.Stores[0].Error == "" {
		t.Fatalf("stores while the store is down: %+v", v)
	}

	p.start(t)
	eventually(t, 10*time.Second, func() bool {
		_, err := client.Ping(context.Background()).Result()
		return err == nil
	})
	if n := total(c.counts(t)); n != 1 {
		t.Fatalf("%d tasks stored after the 503s, want the 1 from before", n)
	}
	for range 2 { // the retry, and a retry of the retry
		for _, w := range writes {
			c.do("POST", w.path, enqueueSecret, w.body, "Idempotency-Key", w.key).want(t, http.StatusCreated)
		}
	}
	if n := total(c.counts(t)); n != 1+1+2+2 {
		t.Fatalf("%d tasks stored after the retries, want 6", n)
	}
}

// proxy forwards TCP connections on a loopback address to target, and can
// be stopped (its listener and every connection closed) and started again
// on the same address.
type proxy struct {
	target, addr string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]bool
	wg           sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	p := &proxy{target: target, addr: "127.0.0.1:0", conns: map[net.Conn]bool{}}
	p.start(t)
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) start(t *testing.T) {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns[in], p.conns[out] = true, true
			p.mu.Unlock()
			for _, pair := range [][2]net.Conn{{in, out}, {out, in}} {
				p.wg.Go(func() {
					_, _ = io.Copy(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				})
			}
		}
	})
}

// stop closes the listener and every connection, and waits for the
// copies to end.
func (p *proxy) stop() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
	p.wg.Wait()
}
