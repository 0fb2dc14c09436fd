package dashboard_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/streams/memstream"
)

func TestNewRefusesBadConfig(t *testing.T) {
	mem := memstream.New(memstream.Config{})
	defer mem.Close(context.Background())
	ok := []dashboard.Store{{Name: "mem", Inspector: mem}}
	for _, tc := range []struct {
		name string
		cfg  dashboard.Config
		want string
	}{
		{"nothing to show", dashboard.Config{}, "nothing to show"},
		{"short token", dashboard.Config{Stores: ok, Auth: dashboard.Auth{Token: "short"}}, "at least 16"},
		{"user without password", dashboard.Config{Stores: ok, Auth: dashboard.Auth{Username: "ada"}}, "without Auth.Password"},
		{"password without user", dashboard.Config{Stores: ok, Auth: dashboard.Auth{Password: "pw"}}, "without Auth.Username"},
		{"colon in user", dashboard.Config{Stores: ok, Auth: dashboard.Auth{Username: "a:b", Password: "pw"}}, "colon"},
		{"unnamed store", dashboard.Config{Stores: []dashboard.Store{{Inspector: mem}}}, "has no Name"},
		{"nil inspector", dashboard.Config{Stores: []dashboard.Store{{Name: "x"}}}, "nil Inspector"},
		{"duplicate store", dashboard.Config{Stores: append(ok, ok...)}, "two stores named"},
		{"negative interval", dashboard.Config{Stores: ok, Interval: -time.Second}, "positive interval"},
		{"tiny interval", dashboard.Config{Stores: ok, Interval: time.Millisecond}, "at least 50ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dashboard.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestMutationWithoutAuthIs401(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	id := deadLetter(t, f.mem, &peonify.Task{ID: "t1", Type: "email"}, "boom")
	f.signIn(request{}) // a valid CSRF token does not stand in for a credential

	for _, o := range []request{
		{noAuth: true},
		{noAuth: true, header: http.Header{"Authorization": {"Bearer wrong-token-0123456789"}}},
		{basic: [2]string{"ada", "pw"}}, // basic auth is not configured
	} {
		res, body := f.do("POST", "/api/stores/mem/retry", dashboard.Selection{IDs: []string{id}}, o)
		wantStatus(t, res, body, http.StatusUnauthorized, "unauthorized")
		if got := res.Header.Values("WWW-Authenticate"); len(got) != 1 || !strings.HasPrefix(got[0], "Bearer") {
			t.Errorf("WWW-Authenticate = %q, want one Bearer challenge", got)
		}
	}
	if c := counts(t, f.mem); c[peonify.StateDead] != 1 {
		t.Fatalf("counts after refused retries: %v, want the task still dead", c)
	}
}

func TestReadsNeedAuthWhenConfigured(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	for _, path := range []string{"/api/session", "/api/stats", "/events", "/api/stores/mem/tasks?state=dead", "/api/stores/mem/tasks/x"} {
		res, body := f.do("GET", path, nil, request{noAuth: true})
		wantStatus(t, res, body, http.StatusUnauthorized, "unauthorized")
	}
	// The page itself holds no data: it loads, then asks for the token.
	for _, path := range []string{"/", "/assets/app.js", "/assets/style.css", "/assets/favicon.svg"} {
		res, body := f.do("GET", path, nil, request{noAuth: true})
		wantStatus(t, res, body, http.StatusOK, "")
	}
}

func TestMutationWithoutCSRFTokenIs403(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	id := deadLetter(t, f.mem, &peonify.Task{ID: "t1", Type: "email"}, "boom")
	sel := dashboard.Selection{IDs: []string{id}}

	// No token at all.
	res, body := f.do("POST", "/api/stores/mem/retry", sel, request{})
	wantStatus(t, res, body, http.StatusForbidden, "csrf")

	// The header without the cookie.
	f.signIn(request{})
	res, body = f.do("POST", "/api/stores/mem/retry", sel, request{noCookie: true})
	wantStatus(t, res, body, http.StatusForbidden, "csrf")

	// The cookie without the header.
	token := f.csrf
	f.csrf = ""
	res, body = f.do("POST", "/api/stores/mem/retry", sel, request{})
	wantStatus(t, res, body, http.StatusForbidden, "csrf")

	// A header that does not match the cookie.
	f.csrf = token[:len(token)-2] + "AA"
	res, body = f.do("POST", "/api/stores/mem/retry", sel, request{})
	wantStatus(t, res, body, http.StatusForbidden, "csrf")

	// A matching pair made by another dashboard (another key): what a
	// neighbouring subdomain could plant in the cookie.
	other := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	other.signIn(request{})
	f.csrf = other.csrf
	res, body = f.do("POST", "/api/stores/mem/retry", sel,
		request{noCookie: true, header: http.Header{"Cookie": {"peonify_csrf=" + other.csrf}}})
	wantStatus(t, res, body, http.StatusForbidden, "csrf")

	if c := counts(t, f.mem); c[peonify.StateDead] != 1 {
		t.Fatalf("counts after refused retries: %v, want the task still dead", c)
	}
}

func TestCSRFTokenIsBoundToTheUser(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken, Username: "ada", Password: "lovelace"}})
	id := deadLetter(t, f.mem, &peonify.Task{ID: "t1", Type: "email"}, "boom")
	f.signIn(request{}) // as the token holder
	res, body := f.do("POST", "/api/stores/mem/retry", dashboard.Selection{IDs: []string{id}},
		request{basic: [2]string{"ada", "lovelace"}})
	wantStatus(t, res, body, http.StatusForbidden, "csrf")
}

func TestRetryDeadTaskWithAuthAndCSRF(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	id := deadLetter(t, f.mem, &peonify.Task{ID: "t1", Type: "email", Payload: []byte(`{"to":"ada"}`)}, "smtp: 550")
	deadLetter(t, f.mem, &peonify.Task{ID: "t2", Type: "email"}, "smtp: 550")
	f.signIn(request{})

	res, body := f.do("POST", "/api/stores/mem/retry", dashboard.Selection{IDs: []string{id}}, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var r dashboard.Result
	decode(t, body, &r)
	if r.Count != 1 {
		t.Fatalf("retry answered %s, want a count of 1", body)
	}
	ti, err := f.mem.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if ti.State != peonify.StatePending {
		t.Fatalf("retried task is %s, want pending", ti.State)
	}
	// It runs again, and succeeds, in a processor.
	ds, err := f.mem.Poll(context.Background(), 1)
	if err != nil || len(ds) != 1 || ds[0].Task.ID != id || ds[0].Task.Attempt != 1 {
		t.Fatalf("polling the retried task: %v, %+v", err, ds)
	}
	if err := f.mem.Ack(context.Background(), ds[0]); err != nil {
		t.Fatal(err)
	}
	if c := counts(t, f.mem); c[peonify.StateDead] != 1 || c[peonify.StatePending] != 0 {
		t.Fatalf("counts: %v, want the other task still dead", c)
	}
}

func TestRetryAndDeleteAll(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	for _, id := range []string{"a", "b", "c"} {
		deadLetter(t, f.mem, &peonify.Task{ID: id, Type: "email"}, "boom")
	}
	f.signIn(request{})
	res, body := f.do("POST", "/api/stores/mem/retry", dashboard.Selection{All: true}, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	if c := counts(t, f.mem); c[peonify.StatePending] != 3 || c[peonify.StateDead] != 0 {
		t.Fatalf("counts after retrying all: %v", c)
	}

	for _, id := range []string{"d", "e"} {
		// A higher priority, so that deadLetter claims it before the
		// pending tasks.
		deadLetter(t, f.mem, &peonify.Task{ID: id, Type: "email", Priority: 1}, "boom")
	}
	res, body = f.do("POST", "/api/stores/mem/delete", dashboard.Selection{All: true}, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var r dashboard.Result
	decode(t, body, &r)
	if c := counts(t, f.mem); r.Count != 2 || c[peonify.StateDead] != 0 || c[peonify.StatePending] != 3 {
		t.Fatalf("delete all answered %s; counts %v: want the dead deleted and the pending kept", body, c)
	}

	res, body = f.do("POST", "/api/stores/mem/delete", dashboard.Selection{IDs: []string{"a"}}, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	if c := counts(t, f.mem); c[peonify.StatePending] != 2 {
		t.Fatalf("counts after deleting one pending task: %v", c)
	}
}

func TestBadSelectionsAre400(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	f.signIn(request{})
	many := make([]string, 1001)
	for i := range many {
		many[i] = "x"
	}
	for _, body := range []any{
		nil,
		map[string]any{},
		map[string]any{"ids": []string{"a"}, "all": true},
		map[string]any{"id": "a"},
		"not an object",
		map[string]any{"ids": many},
	} {
		res, b := f.do("POST", "/api/stores/mem/retry", body, request{})
		wantStatus(t, res, b, http.StatusBadRequest, "bad_request")
	}
}

func TestBasicAuth(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Username: "ada", Password: "lovelace"}})
	id := deadLetter(t, f.mem, &peonify.Task{ID: "t1", Type: "email"}, "boom")
	good := request{basic: [2]string{"ada", "lovelace"}}

	res, body := f.do("GET", "/api/stats", nil, request{basic: [2]string{"ada", "wrong"}})
	wantStatus(t, res, body, http.StatusUnauthorized, "unauthorized")
	if got := res.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
		t.Errorf("WWW-Authenticate = %q, want a Basic challenge so that browsers ask", got)
	}
	res, body = f.do("GET", "/api/stats", nil, request{basic: [2]string{"eve", "lovelace"}})
	wantStatus(t, res, body, http.StatusUnauthorized, "unauthorized")

	f.signIn(good)
	res, body = f.do("POST", "/api/stores/mem/retry", dashboard.Selection{IDs: []string{id}}, good)
	wantStatus(t, res, body, http.StatusOK, "")
}

func TestCrossOriginMutationIs403(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	id := deadLetter(t, f.mem, &peonify.Task{ID: "t1", Type: "email"}, "boom")
	f.signIn(request{})
	for _, h := range []http.Header{
		{"Sec-Fetch-Site": {"cross-site"}},
		{"Origin": {"https://evil.example"}},
	} {
		res, body := f.do("POST", "/api/stores/mem/retry", dashboard.Selection{IDs: []string{id}}, request{header: h})
		wantStatus(t, res, body, http.StatusForbidden, "cross_origin")
	}
	// The page's own requests are same-origin.
	res, body := f.do("POST", "/api/stores/mem/retry", dashboard.Selection{IDs: []string{id}},
		request{header: http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {f.srv.URL}}})
	wantStatus(t, res, body, http.StatusOK, "")
}

func TestWithoutAuthTheDashboardIsReadOnly(t *testing.T) {
	f := newFixture(t, dashboard.Config{})
	id := deadLetter(t, f.mem, &peonify.Task{ID: "t1", Type: "email"}, "boom")

	res, body := f.do("GET", "/api/session", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var s dashboard.Session
	decode(t, body, &s)
	if s.CanMutate || s.CSRF != "" || len(s.Auth) != 0 || len(res.Cookies()) != 0 {
		t.Fatalf("session of a dashboard without auth: %s, cookies %v: want read-only, no token", body, res.Cookies())
	}
	res, body = f.do("GET", "/api/stores/mem/tasks?state=dead", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")

	res, body = f.do("POST", "/api/stores/mem/retry", dashboard.Selection{IDs: []string{id}}, request{})
	wantStatus(t, res, body, http.StatusForbidden, "read_only")
	if c := counts(t, f.mem); c[peonify.StateDead] != 1 {
		t.Fatalf("counts: %v, want the task still dead", c)
	}
}

func TestTaskDataIsJSONEscaped(t *testing.T) {
	f := newFixture(t, dashboard.Config{})
	const evil = `<script>alert("payload")</script><img src=x onerror=alert(1)>`
	id := deadLetter(t, f.mem, &peonify.Task{ID: "<b>id</b>", Type: "<i>type</i>", Payload: []byte(evil),
		Headers: map[string]string{"x": "<script>h</script>"}}, "<script>alert('error')</script>")

	for _, path := range []string{"/api/stores/mem/tasks?state=dead", "/api/stores/mem/tasks/" + url.PathEscape(id)} {
		res, body := f.do("GET", path, nil, request{})
		wantStatus(t, res, body, http.StatusOK, "")
		if ct := res.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", path, ct)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(res.Header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("%s: missing nosniff or CSP: %v", path, res.Header)
		}
		if strings.ContainsAny(string(body), "<>") {
			t.Fatalf("%s: raw < or > in the body: %s", path, body)
		}
		if !strings.Contains(string(body), `\u003cscript\u003ealert(\"payload\")\u003c/script\u003e`) {
			t.Fatalf("%s: the payload is not in the body, escaped: %s", path, body)
		}
	}
	// The events stream carries snapshots whose strings come from outside
	// too (stream names, task types, errors): the same encoder escapes them.
}

func TestHidePayload(t *testing.T) {
	f := newFixture(t, dashboard.Config{HidePayload: dashboard.HideTypes("charge")})
	deadLetter(t, f.mem, &peonify.Task{ID: "c1", Type: "charge", Payload: []byte(`{"card":"4242424242424242"}`),
		Headers: map[string]string{"tenant": "acme"}}, "declined")
	deadLetter(t, f.mem, &peonify.Task{ID: "e1", Type: "email", Payload: []byte(`{"to":"ada"}`),
		Headers: map[string]string{"tenant": "acme"}}, "bounced")

	res, body := f.do("GET", "/api/stores/mem/tasks?state=dead", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	if strings.Contains(string(body), "4242") {
		t.Fatalf("hidden payload in the list: %s", body)
	}
	var page dashboard.TaskPage
	decode(t, body, &page)
	if len(page.Tasks) != 2 || !page.Tasks[0].PayloadHidden || page.Tasks[0].PayloadSize == 0 ||
		page.Tasks[1].PayloadHidden || page.Tasks[1].Payload != `{"to":"ada"}` {
		t.Fatalf("list: %s", body)
	}

	res, body = f.do("GET", "/api/stores/mem/tasks/c1", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	if strings.Contains(string(body), "4242") || strings.Contains(string(body), "acme") {
		t.Fatalf("hidden payload or headers in the task: %s", body)
	}
	res, body = f.do("GET", "/api/stores/mem/tasks/e1", nil, request{})
	var tv dashboard.TaskView
	decode(t, body, &tv)
	if tv.Headers["tenant"] != "acme" || tv.LastError != "bounced" {
		t.Fatalf("visible task: %s", body)
	}
}

func TestPayloadPreview(t *testing.T) {
	f := newFixture(t, dashboard.Config{PreviewBytes: 10})
	// "é" is two bytes: a cut at 10 bytes falls inside the fifth one.
	long := strings.Repeat("é", 100)
	deadLetter(t, f.mem, &peonify.Task{ID: "a", Type: "t", Payload: []byte(long)}, "x")
	deadLetter(t, f.mem, &peonify.Task{ID: "b", Type: "t", Payload: []byte{0xff, 'o', 'k'}}, "x")

	res, body := f.do("GET", "/api/stores/mem/tasks?state=dead", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var page dashboard.TaskPage
	decode(t, body, &page)
	a, b := page.Tasks[0], page.Tasks[1]
	if a.Payload != strings.Repeat("é", 5) || !a.PayloadTruncated || a.PayloadSize != 200 {
		t.Errorf("preview of a long payload: %+v", a)
	}
	if b.Payload != "\uFFFDok" || !b.Binary || b.PayloadTruncated {
		t.Errorf("preview of a binary payload: %+v", b)
	}
	res, body = f.do("GET", "/api/stores/mem/tasks/a", nil, request{})
	var tv dashboard.TaskView
	decode(t, body, &tv)
	if tv.Payload != long || tv.PayloadTruncated {
		t.Errorf("one task shows its whole payload: got %d bytes, truncated %v", len(tv.Payload), tv.PayloadTruncated)
	}
}

func TestListPagingAndErrors(t *testing.T) {
	f := newFixture(t, dashboard.Config{})
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		deadLetter(t, f.mem, &peonify.Task{ID: id, Type: "t"}, "x")
	}
	var ids []string
	after := ""
	for range 3 {
		res, body := f.do("GET", "/api/stores/mem/tasks?state=dead&limit=2&after="+after, nil, request{})
		wantStatus(t, res, body, http.StatusOK, "")
		var page dashboard.TaskPage
		decode(t, body, &page)
		for _, tv := range page.Tasks {
			ids = append(ids, tv.ID)
		}
		after = page.Next
		if after == "" {
			break
		}
	}
	if strings.Join(ids, ",") != "a,b,c,d,e" {
		t.Fatalf("paged through %v", ids)
	}

	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"/api/stores/mem/tasks", http.StatusBadRequest, "bad_request"},
		{"/api/stores/mem/tasks?state=zombie", http.StatusBadRequest, "bad_request"},
		{"/api/stores/mem/tasks?state=dead&limit=0", http.StatusBadRequest, "bad_request"},
		{"/api/stores/mem/tasks?state=dead&limit=501", http.StatusBadRequest, "bad_request"},
		{"/api/stores/nope/tasks?state=dead", http.StatusNotFound, "not_found"},
		{"/api/stores/mem/tasks/nope", http.StatusNotFound, "not_found"},
	} {
		res, body := f.do("GET", tc.path, nil, request{})
		wantStatus(t, res, body, tc.status, tc.code)
	}
	res, body := f.do("DELETE", "/api/stores/mem/tasks/a", nil, request{})
	wantStatus(t, res, body, http.StatusMethodNotAllowed, "")
}

func TestPauseUnsupportedIs501(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	f.signIn(request{})
	res, body := f.do("POST", "/api/stores/mem/pause", nil, request{})
	wantStatus(t, res, body, http.StatusNotImplemented, "unsupported")
}

// countingStore counts the Counts calls of the memstream it wraps.
type countingStore struct {
	*memstream.Stream
	n atomic.Int64
}

func (c *countingStore) Counts(ctx context.Context) (map[peonify.State]int, error) {
	c.n.Add(1)
	return c.Stream.Counts(ctx)
}

func TestSnapshotsAreSharedAndRefreshedAfterChanges(t *testing.T) {
	mem := memstream.New(memstream.Config{})
	defer mem.Close(context.Background())
	cs := &countingStore{Stream: mem}
	f := newFixture(t, dashboard.Config{
		Stores:   []dashboard.Store{{Name: "mem", Inspector: cs}},
		Auth:     dashboard.Auth{Token: testToken},
		Interval: time.Minute, // a snapshot stays fresh for 30s
	})
	deadLetter(t, mem, &peonify.Task{ID: "a", Type: "t"}, "x")
	for range 10 {
		res, body := f.do("GET", "/api/stats", nil, request{})
		wantStatus(t, res, body, http.StatusOK, "")
	}
	if n := cs.n.Load(); n != 1 {
		t.Fatalf("10 reads counted the store %d times, want 1", n)
	}

	f.signIn(request{})
	res, body := f.do("POST", "/api/stores/mem/retry", dashboard.Selection{All: true}, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	res, body = f.do("GET", "/api/stats", nil, request{})
	var s dashboard.Snapshot
	decode(t, body, &s)
	if n := cs.n.Load(); n != 2 || s.Stores[0].Counts[peonify.StatePending] != 1 || s.Stores[0].Counts[peonify.StateDead] != 0 {
		t.Fatalf("after a retry: %d counts, snapshot %s: want a new snapshot showing it", n, body)
	}
}

func TestStoreErrorsAreShown(t *testing.T) {
	f := newFixture(t, dashboard.Config{})
	_ = f.mem.Close(context.Background())
	res, body := f.do("GET", "/api/stats", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var s dashboard.Snapshot
	decode(t, body, &s)
	if len(s.Stores) != 1 || !strings.Contains(s.Stores[0].Error, "closed") {
		t.Fatalf("snapshot of a closed store: %s", body)
	}
	res, body = f.do("GET", "/api/stores/mem/tasks?state=dead", nil, request{})
	wantStatus(t, res, body, http.StatusBadGateway, "store_error")
}
