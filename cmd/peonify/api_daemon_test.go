package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/testenv"
)

// apiDaemonConfig runs, on the store of the entry %[1]s, exec tasks that
// print their results and http tasks answered by the server at %[2]s,
// with the HTTP API on its http listener.
const apiDaemonConfig = quickStop + `streams:
  - %[1]s
tasks:
  resize: {executor: exec, command: [cat], stdout: result}
  notify: {executor: http, url: "%[2]s/notify"}
http:
  listen: 127.0.0.1:0
  dashboard: {enabled: false}
api:
  tokens:
    - {name: app, secret: "${PEONIFY_TEST_API_TOKEN}", scopes: [enqueue, read]}
`

const apiTestToken = "api-test-token-0123456789abcdef"

// apiCall sends a JSON request to the daemon's API with token (none when
// empty) and returns the status and the decoded body.
func apiCall(t *testing.T, client *http.Client, method, u, token string, body any, header ...string) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 && json.Unmarshal(b, &out) != nil {
		t.Fatalf("%s %s: %d, not JSON: %q", method, u, resp.StatusCode, b)
	}
	return resp.StatusCode, out
}

// Tasks enqueued through the API of `peonify run` run with the daemon's
// executors, and GET ?wait returns their results; without a token or with
// an unknown one the API answers 401; on each store that keeps results.
func TestAPIDaemonEndToEnd(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { apiEndToEnd(t, "{kind: sqlite, name: main, path: store.db}") })
	t.Run("postgres", func(t *testing.T) {
		url := testenv.URL(t, "postgres")
		t.Setenv("PEONIFY_CLI_TEST_PG", url)
		queue := fmt.Sprintf("cli_api_%d", time.Now().UnixNano())
		apiEndToEnd(t, "{kind: postgres, name: main, url: '${PEONIFY_CLI_TEST_PG}', queue: "+queue+", migrate: true}")
	})
	t.Run("redis", func(t *testing.T) {
		url := testenv.URL(t, "redis")
		t.Setenv("PEONIFY_CLI_TEST_REDIS", url)
		queue := fmt.Sprintf("peonify-cli-api-%d", time.Now().UnixNano())
		t.Cleanup(func() { deleteRedisQueue(url, queue) })
		apiEndToEnd(t, "{kind: redis, name: main, url: '${PEONIFY_CLI_TEST_REDIS}', queue: "+queue+"}")
	})
}

func apiEndToEnd(t *testing.T, entry string) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"sent":true}`)
	}))
	defer srv.Close()
	dir := t.TempDir()
	writeFile(t, dir, "peonify.yaml", fmt.Sprintf(apiDaemonConfig, entry, srv.URL))
	if r := run(t, dir, "", "run", "-c", "peonify.yaml", "--check"); r.code != 2 || !strings.Contains(r.stderr, "api.tokens[0].secret: environment variable PEONIFY_TEST_API_TOKEN is not set") {
		t.Errorf("run --check without the token's variable: %s", r)
	}
	d := startDaemon(t, dir, "peonify.yaml", "PEONIFY_TEST_API_TOKEN="+apiTestToken)
	base := d.listenAddr("serving metrics and health checks") + "/v1"
	d.waitLog("peonify: running")
	c := &http.Client{Timeout: 90 * time.Second}
	p := fmt.Sprintf("r%d-", time.Now().UnixNano())

	// No token, an unknown one: 401, and nothing stored.
	for _, tok := range []string{"", "not-" + apiTestToken} {
		code, body := apiCall(t, c, "POST", base+"/tasks", tok, map[string]any{"type": "notify", "id": p + "unauth"})
		if code != http.StatusUnauthorized || body["error"] == nil {
			t.Errorf("POST /v1/tasks with token %q: %d %v, want 401 with an error", tok, code, body)
		}
	}
	if code, _ := apiCall(t, c, "GET", base+"/tasks/"+p+"unauth", apiTestToken, nil); code != http.StatusNotFound {
		t.Errorf("GET of the task refused with 401: %d, want 404 (never stored)", code)
	}

	// exec: the payload comes back as the result.
	code, body := apiCall(t, c, "POST", base+"/tasks", apiTestToken, map[string]any{"type": "resize", "id": p + "resize", "payload": map[string]any{"size": 64}})
	if code != http.StatusCreated || body["id"] != p+"resize" {
		t.Fatalf("POST /v1/tasks: %d %v\nlog:\n%s", code, body, d.stderr)
	}
	url, _ := body["url"].(string)
	if !strings.HasPrefix(url, "/v1/tasks/"+p+"resize") {
		t.Errorf("the task's url is %q", url)
	}
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	code, task := apiCall(t, c, "GET", strings.TrimSuffix(base, "/v1")+url+sep+"wait=30s", apiTestToken, nil)
	if code != http.StatusOK || task["state"] != "done" || fmt.Sprint(task["result"]) != "map[size:64]" {
		t.Errorf("GET %s?wait=30s: %d %v\nlog:\n%s", url, code, task, d.stderr)
	}

	// http: the response body is the result; an Idempotency-Key retry is
	// the same task.
	var first string
	for range 2 {
		code, body = apiCall(t, c, "POST", base+"/tasks", apiTestToken, map[string]any{"type": "notify", "payload": "hi"}, "Idempotency-Key", p+"notify")
		if code != http.StatusCreated {
			t.Fatalf("POST /v1/tasks with Idempotency-Key: %d %v", code, body)
		}
		id, _ := body["id"].(string)
		if first == "" {
			first = id
		} else if id != first {
			t.Errorf("the retry with the same Idempotency-Key stored task %s, want %s", id, first)
		}
	}
	code, task = apiCall(t, c, "GET", base+"/tasks/"+first+"?wait=30s", apiTestToken, nil)
	if code != http.StatusOK || task["state"] != "done" || fmt.Sprint(task["result"]) != "map[sent:true]" {
		t.Errorf("GET the http task ?wait=30s: %d %v\nlog:\n%s", code, task, d.stderr)
	}
	if code, _ := apiCall(t, c, "GET", base+"/openapi.json", "", nil); code != http.StatusOK {
		t.Errorf("GET /v1/openapi.json without a token: %d, want 200", code)
	}
	if code, log := d.stop(); code != 0 {
		t.Errorf("exit status %d after SIGTERM; log:\n%s", code, log)
	}
}

// The API is served over HTTPS when the http listener has tls_cert;
// anonymous scopes work on a loopback listener when the file grants them;
// api.max_body and the order of api.stores reach the API.
func TestAPIDaemonTLSAndAnonymous(t *testing.T) {
	d, addr, c := startHTTPSDaemon(t, `
streams:
  - {kind: sqlite, name: main, path: store.db}
  - {kind: sqlite, name: other, path: other.db}
tasks:
  resize: {executor: exec, command: [cat], stdout: result}
api:
  anonymous: [enqueue, read]
  max_body: 1KiB
  stores: [other, main]
`, 90*time.Second)
	code, body := apiCall(t, c, "POST", addr+"/v1/tasks", "", map[string]any{"type": "resize", "id": "anon-1", "payload": []int{1, 2}})
	if code != http.StatusCreated {
		t.Fatalf("anonymous POST over HTTPS: %d %v\nlog:\n%s", code, body, d.stderr)
	}
	if body["store"] != "other" {
		t.Errorf("the task went to store %v, want other, the first of api.stores", body["store"])
	}
	code, task := apiCall(t, c, "GET", addr+"/v1/tasks/anon-1?store=other&wait=30s", "", nil)
	if code != http.StatusOK || task["state"] != "done" || fmt.Sprint(task["result"]) != "[1 2]" {
		t.Errorf("anonymous GET ?wait over HTTPS: %d %v", code, task)
	}
	// api.max_body: a body over 1KiB is refused, and nothing is stored.
	code, body = apiCall(t, c, "POST", addr+"/v1/tasks", "", map[string]any{"type": "resize", "id": "big-1", "store": "main", "payload": strings.Repeat("x", 2048)})
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 2KiB body with max_body 1KiB: %d %v, want 413", code, body)
	}
	if code, _ := apiCall(t, c, "GET", addr+"/v1/tasks/big-1?store=main", "", nil); code != http.StatusNotFound {
		t.Errorf("GET the refused task: %d, want 404", code)
	}
	// Anonymous requests have only the scopes granted: no cancel.
	if code, _ := apiCall(t, c, "POST", addr+"/v1/tasks/anon-1/cancel", "", nil); code != http.StatusUnauthorized && code != http.StatusForbidden {
		t.Errorf("anonymous cancel: %d, want 401 or 403", code)
	}
	if code, log := d.stop(); code != 0 {
		t.Errorf("exit status %d after SIGTERM; log:\n%s", code, log)
	}
}
