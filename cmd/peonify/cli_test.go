package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/testenv"
)

// stats runs `tasks stats --json` on a store.
func stats(t *testing.T, dir string, store ...string) map[string]int {
	t.Helper()
	r := mustRun(t, dir, "", append([]string{"tasks", "stats", "--json"}, store...)...)
	var m map[string]int
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("tasks stats --json: %v\n%s", err, r)
	}
	return m
}

// compact returns JSON without insignificant space.
func compact(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

// show runs `tasks show --json` on a store.
func show(t *testing.T, dir, id string, store ...string) taskJSON {
	t.Helper()
	r := mustRun(t, dir, "", append([]string{"tasks", "show", id, "--json"}, store...)...)
	var tj taskJSON
	if err := json.Unmarshal([]byte(r.stdout), &tj); err != nil {
		t.Fatalf("tasks show --json: %v\n%s", err, r)
	}
	return tj
}

func TestDemoThenInspectRetryAndPurge(t *testing.T) {
	dir := t.TempDir()
	store := []string{"--store", filepath.Join(dir, "demo.db")}
	r := mustRun(t, dir, "", append([]string{"demo", "--tasks", "2000", "--workers", "32"}, store...)...)
	for _, want := range []string{"succeeded", "retried", "dead", "throughput", "tasks/s", "p50", "p99", "charge-card", "peonify tasks list --state dead",
		"Dashboard: http://127.0.0.1:", "/#token="} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo summary lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "progress: 2000/2000  100%") {
		t.Errorf("no final progress line on stderr (not a terminal):\n%s", r.stderr)
	}
	m := regexp.MustCompile(`(?m)^\s+dead\s+([\d,]+)`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no dead count in:\n%s", r.stdout)
	}
	dead, _ := strconv.Atoi(strings.ReplaceAll(m[1], ",", ""))
	if dead == 0 {
		t.Fatalf("the demo made no dead task; it should show the dead-letter state:\n%s", r.stdout)
	}

	if s := stats(t, dir, store...); s["dead"] != dead || s["pending"] != 0 || s["total"] != dead {
		t.Fatalf("stats %v after the demo, want %d dead and nothing else", s, dead)
	}
	r = mustRun(t, dir, "", append([]string{"tasks", "list", "--state", "dead", "--limit", "1000", "--json"}, store...)...)
	var list []taskJSON
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != dead {
		t.Fatalf("listed %d dead tasks, want %d", len(list), dead)
	}
	var charge, report string
	for _, tj := range list {
		switch tj.Type {
		case "charge-card":
			charge = tj.ID
		case "build-report":
			report = tj.ID
		}
	}
	if charge == "" || report == "" {
		t.Fatalf("want dead charge-card and build-report tasks among %d", len(list))
	}
	if tj := show(t, dir, charge, store...); tj.Attempts != 3 || !strings.Contains(tj.LastError, "out of attempts (3 of 3)") || !strings.Contains(tj.LastError, "payment gateway") {
		t.Errorf("dead charge %+v", tj)
	}
	r = mustRun(t, dir, "", append([]string{"tasks", "show", report}, store...)...)
	if !strings.Contains(r.stdout, "State:") || !strings.Contains(r.stdout, `"rows": "all of them"`) {
		t.Errorf("tasks show:\n%s", r.stdout)
	}
	r = mustRun(t, dir, "", append([]string{"tasks", "list", "--state", "dead", "--type", "build-report", "--limit", "2"}, store...)...)
	if rows := strings.Split(strings.TrimSpace(r.stdout), "\n"); !strings.HasPrefix(r.stdout, "ID ") || len(rows) != 3 ||
		!strings.Contains(rows[1], "build-report  dead") || !strings.Contains(r.stderr, "--after") {
		t.Errorf("tasks list table:\n%s", r)
	}

	r = mustRun(t, dir, "", append([]string{"tasks", "delete", report}, store...)...)
	if !strings.Contains(r.stdout, "deleted 1 task") {
		t.Errorf("tasks delete: %s", r)
	}
	r = mustRun(t, dir, "", append([]string{"tasks", "retry", "--all", "--json"}, store...)...)
	if r.stdout != fmt.Sprintf("{\n  \"retried\": %d\n}\n", dead-1) {
		t.Errorf("tasks retry --all printed %q, want %d retried", r.stdout, dead-1)
	}
	if s := stats(t, dir, store...); s["dead"] != 0 || s["pending"] != dead-1 {
		t.Errorf("stats %v after retry, want %d pending", s, dead-1)
	}
	if tj := show(t, dir, charge, store...); tj.State != "pending" || tj.Attempts != 0 {
		t.Errorf("retried task %+v, want pending with a fresh attempt count", tj)
	}
	if r := run(t, dir, "", append([]string{"tasks", "purge", "--state", "pending"}, store...)...); r.code != exitUsage || !strings.Contains(r.stderr, "--yes") {
		t.Errorf("purging pending tasks without --yes: %s", r)
	}
	r = mustRun(t, dir, "", append([]string{"tasks", "purge", "--state", "pending", "--yes"}, store...)...)
	if !strings.Contains(r.stdout, fmt.Sprintf("purged %d pending tasks", dead-1)) {
		t.Errorf("tasks purge: %s", r)
	}
}

const execConfig = `
processor:
  workers: 4
  shutdown_grace: 20s
streams:
  - kind: sqlite
    path: store.db
tasks:
  mark:
    executor: exec
    shell: 'cat > "marks/$PEONIFY_TASK_ID.json"'
  slow:
    executor: exec
    command: ["sh", "-c", "touch started; sleep 0.5; cat > \"marks/$PEONIFY_TASK_ID.json\""]
  tick:
    executor: exec
    shell: 'cat > ticks/$PEONIFY_TASK_ID'
periodic:
  # Caught up at start: the last slot, this year's, runs at once.
  - {name: yearly, spec: "0 0 1 1 *", type: tick, payload: {every: year}}
`

// A daemon runs tasks that another process enqueues into the same SQLite
// file, and drains a running task on SIGTERM.
func TestRunExecTasksFromEnqueue(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"marks", "ticks"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, dir, "peonify.yaml", execConfig)
	store := []string{"--store", "store.db"}

	// A task for later, enqueued twice before the daemon starts: the second
	// is a duplicate.
	mustRun(t, dir, "", append([]string{"enqueue", "--type", "mark", "--id", "later", "--delay", "1h"}, store...)...)
	r := mustRun(t, dir, "", append([]string{"enqueue", "--type", "mark", "--id", "later", "--delay", "1h"}, store...)...)
	if r.stdout != "later\n" || !strings.Contains(r.stderr, "task later is already enqueued") {
		t.Errorf("duplicate enqueue: %s", r)
	}

	d := startDaemon(t, dir, "peonify.yaml")
	d.waitLog("peonify: running")

	r = mustRun(t, dir, "", append([]string{"enqueue", "--type", "mark", "--id", "first", "--payload", `{"n":1}`}, store...)...)
	if r.stdout != "first\n" {
		t.Errorf("enqueue printed %q, want the ID", r.stdout)
	}
	lines := `{"type":"mark","id":"b1","payload":{"n":2}}
{"type":"mark","id":"b2","payload":[1,2,3]}

{"type":"mark","payload":"text","headers":{"tenant":"acme"},"priority":3}
`
	r = mustRun(t, dir, lines, append([]string{"enqueue", "--jsonl", "--json"}, store...)...)
	var ids []string
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var out struct {
			ID        string `json:"id"`
			Duplicate bool   `json:"duplicate"`
		}
		if err := json.Unmarshal([]byte(l), &out); err != nil || out.Duplicate {
			t.Fatalf("enqueue --jsonl --json line %q: %v", l, err)
		}
		ids = append(ids, out.ID)
	}
	if len(ids) != 3 || ids[0] != "b1" || ids[1] != "b2" {
		t.Fatalf("enqueue --jsonl printed %v", ids)
	}

	want := map[string]string{"first": `{"n":1}`, "b1": `{"n":2}`, "b2": `[1,2,3]`, ids[2]: `"text"`}
	for id, payload := range want {
		p := filepath.Join(dir, "marks", id+".json")
		waitFor(t, "the marker of task "+id, func() bool { return fileExists(p) }, d.stderr)
		waitFor(t, "the payload of task "+id, func() bool {
			b, _ := os.ReadFile(p)
			return string(b) == payload
		}, d.stderr)
	}

	var ticks []os.DirEntry
	waitFor(t, "the periodic task", func() bool {
		ticks, _ = os.ReadDir(filepath.Join(dir, "ticks"))
		return len(ticks) == 1
	}, d.stderr)
	if b, _ := os.ReadFile(filepath.Join(dir, "ticks", ticks[0].Name())); string(b) != `{"every":"year"}` {
		t.Errorf("periodic task %s got payload %q", ticks[0].Name(), b)
	}

	// SIGTERM while a task runs: it finishes, then the daemon exits 0.
	mustRun(t, dir, "", append([]string{"enqueue", "--type", "slow", "--id", "slow"}, store...)...)
	waitFor(t, "the slow task to start", func() bool { return fileExists(filepath.Join(dir, "started")) }, d.stderr)
	code, log := d.stop()
	if code != 0 {
		t.Fatalf("peonify run exited %d after SIGTERM; log:\n%s", code, log)
	}
	if !fileExists(filepath.Join(dir, "marks", "slow.json")) {
		t.Errorf("the task running at SIGTERM did not finish before exit; log:\n%s", log)
	}
	if !strings.Contains(log, "shutting down") || !strings.Contains(log, "succeeded=6") {
		t.Errorf("log lacks the graceful shutdown:\n%s", log)
	}
	if s := stats(t, dir, store...); s["scheduled"] != 1 || s["total"] != 1 {
		t.Errorf("stats %v, want only the task for later", s)
	}
}

func TestRunPostgres(t *testing.T) {
	url := testenv.URL(t, "postgres")
	t.Setenv("PEONIFY_CLI_TEST_PG", url)
	queue := fmt.Sprintf("cli_test_%d", time.Now().UnixNano())
	dir := newMarksDir(t, fmt.Sprintf(`
processor:
  workers: 4
streams:
  - name: pg
    kind: postgres
    url: ${PEONIFY_CLI_TEST_PG}
    queue: %s
tasks:
  mark:
    executor: exec
    shell: 'cat > "marks/$PEONIFY_TASK_ID.json"'
`, queue))
	mustRun(t, dir, "", "migrate", "--postgres", url)
	store := []string{"-c", "peonify.yaml", "--stream", "pg"}

	mustRun(t, dir, "", append([]string{"enqueue", "--type", "mark", "--id", "before", "--payload", `{"n":0}`}, store...)...)
	d := startDaemon(t, dir, "peonify.yaml")
	d.waitLog("peonify: running")
	mustRun(t, dir, `{"type":"mark","id":"after","payload":{"n":1}}`+"\n", append([]string{"enqueue", "--jsonl"}, store...)...)
	for _, id := range []string{"before", "after"} {
		p := filepath.Join(dir, "marks", id+".json")
		waitFor(t, "the marker of task "+id, func() bool { return fileExists(p) }, d.stderr)
	}
	if code, log := d.stop(); code != 0 {
		t.Fatalf("peonify run exited %d after SIGTERM; log:\n%s", code, log)
	}
	if s := stats(t, dir, "--postgres", url, "--queue", queue); s["total"] != 0 {
		t.Errorf("stats %v, want an empty queue", s)
	}
}

// The http executor against a real server, through the daemon: 2xx is
// done, 500 is retried, 404 is dead, 429 is retried after Retry-After.
func TestRunHTTPExecutor(t *testing.T) {
	var (
		mu   sync.Mutex
		seen = map[string]http.Header{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Idempotency-Key")
		mu.Lock()
		seen[id] = r.Header.Clone()
		mu.Unlock()
		switch id {
		case "ok":
			w.WriteHeader(http.StatusNoContent)
		case "boom":
			http.Error(w, "database is down", http.StatusInternalServerError)
		case "gone":
			http.Error(w, "no such user", http.StatusNotFound)
		case "busy":
			w.Header().Set("Retry-After", "3600")
			http.Error(w, "slow down", http.StatusTooManyRequests)
		}
	}))
	defer srv.Close()

	dir := t.TempDir()
	writeFile(t, dir, "peonify.yaml", fmt.Sprintf(`
processor:
  retry: {min_backoff: 30m, max_backoff: 30m}
streams:
  - {kind: sqlite, path: store.db}
tasks:
  notify:
    executor: http
    url: %s/hooks/notify
    headers: {Authorization: Bearer s3cret}
`, srv.URL))
	store := []string{"--store", "store.db"}
	var lines strings.Builder
	for _, id := range []string{"ok", "boom", "gone", "busy"} {
		fmt.Fprintf(&lines, `{"type":"notify","id":%q,"payload":{"user":%q}}`+"\n", id, id)
	}
	mustRun(t, dir, lines.String(), append([]string{"enqueue", "--jsonl"}, store...)...)
	d := startDaemon(t, dir, "peonify.yaml")
	waitFor(t, "every task to settle", func() bool {
		s := stats(t, dir, store...)
		return s["dead"] == 1 && s["scheduled"] == 2 && s["total"] == 3
	}, d.stderr)
	code, log := d.stop()
	if code != 0 {
		t.Fatalf("peonify run exited %d after SIGTERM; log:\n%s", code, log)
	}

	mu.Lock()
	if h := seen["ok"]; h.Get("Authorization") != "Bearer s3cret" || h.Get("Peonify-Task-Type") != "notify" {
		t.Errorf("request headers %v", h)
	}
	mu.Unlock()
	if r := run(t, dir, "", append([]string{"tasks", "show", "ok"}, store...)...); r.code != exitFailure || !strings.Contains(r.stderr, `no task "ok"`) {
		t.Errorf("the 2xx task is still in the store: %s", r)
	}
	if tj := show(t, dir, "gone", store...); tj.State != "dead" || !strings.Contains(tj.LastError, "404 Not Found: no such user") {
		t.Errorf("404 task %+v, want dead", tj)
	}
	if tj := show(t, dir, "boom", store...); tj.State != "scheduled" || tj.Attempts != 1 || !strings.Contains(tj.LastError, "500 Internal Server Error") {
		t.Errorf("500 task %+v, want scheduled for a retry", tj)
	}
	if tj := show(t, dir, "busy", store...); tj.State != "scheduled" || !strings.Contains(tj.LastError, "429 Too Many Requests") {
		t.Errorf("429 task %+v, want scheduled for a retry", tj)
	}
	// The Inspector does not tell when a retry is due; the log does.
	if !regexp.MustCompile(`task failed; will retry" task_id=busy .*retry_in=1h0m0s`).MatchString(log) {
		t.Errorf("the 429 task does not wait for its Retry-After (1h); log:\n%s", log)
	}
	if !regexp.MustCompile(`task failed; will retry" task_id=boom .*retry_in=(2[4-9]|3[0-6])m`).MatchString(log) {
		t.Errorf("the 500 task does not wait for the backoff (30m±20%%); log:\n%s", log)
	}
}

func TestBadConfigExitsWithStatus2(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "bad.yaml", `
streams:
  - kind: sqlite
    path: store.db
  - kind: postgres
    queue: emails
tasks:
  email: {executor: http, url: "http://localhost/send"}
`)
	r := run(t, dir, "", "run", "-c", "bad.yaml")
	if r.code != exitUsage || !strings.Contains(r.stderr, "bad.yaml:5:5: streams[1].url: required") {
		t.Errorf("want exit 2 naming streams[1].url: %s", r)
	}
	r = run(t, dir, "", "run", "-c", "missing.yaml")
	if r.code != exitUsage || !strings.Contains(r.stderr, "missing.yaml: no such file") {
		t.Errorf("missing file: %s", r)
	}
	writeFile(t, dir, "env.yaml", "streams:\n  - kind: sqlite\n    path: ${PEONIFY_CLI_TEST_UNSET}/x.db\ntasks: {a: {executor: http, url: 'http://x'}}\n")
	r = run(t, dir, "", "run", "-c", "env.yaml", "--check")
	if r.code != exitUsage || !strings.Contains(r.stderr, "env.yaml:3:11: streams[0].path: environment variable PEONIFY_CLI_TEST_UNSET is not set") {
		t.Errorf("unset variable: %s", r)
	}
	writeFile(t, dir, "good.yaml", "streams:\n  - kind: sqlite\n    path: x.db\ntasks: {a: {executor: http, url: 'http://x'}}\n")
	r = mustRun(t, dir, "", "run", "-c", "good.yaml", "--check")
	if !strings.Contains(r.stdout, "good.yaml is valid: streams sqlite (sqlite); task types a (http)") {
		t.Errorf("--check: %s", r)
	}
	if fileExists(filepath.Join(dir, "x.db")) {
		t.Error("--check created the store")
	}
}

func TestEnqueuePayloadsAndMistakes(t *testing.T) {
	dir := t.TempDir()
	store := []string{"--store", "s.db"}
	writeFile(t, dir, "p.json", `{"from":"file"}`)
	mustRun(t, dir, "", append([]string{"enqueue", "--type", "a", "--id", "f", "--payload", "@p.json", "--priority", "7", "--header", "tenant=acme", "--max-attempts", "2"}, store...)...)
	mustRun(t, dir, `{"from":"stdin"}`, append([]string{"enqueue", "--type", "a", "--id", "s", "--payload", "-"}, store...)...)
	mustRun(t, dir, "not json", append([]string{"enqueue", "--type", "a", "--id", "r", "--payload", "-", "--raw"}, store...)...)
	if tj := show(t, dir, "f", store...); compact(tj.Payload) != `{"from":"file"}` || tj.Priority != 7 || tj.Headers["tenant"] != "acme" || tj.MaxAttempts != 2 {
		t.Errorf("task from a file %+v", tj)
	}
	if tj := show(t, dir, "s", store...); compact(tj.Payload) != `{"from":"stdin"}` {
		t.Errorf("task from stdin %+v", tj)
	}
	if tj := show(t, dir, "r", store...); string(tj.PayloadBase64) != "not json" {
		t.Errorf("raw task %+v", tj)
	}

	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"--type", "a", "--payload", "{oops"}, "is not valid JSON"},
		{"", []string{"--payload", "{}"}, "--type is required"},
		{"", []string{"--type", "a", "--delay", "1m", "--run-at", "2030-01-02T15:04:05Z"}, "not both"},
		{"{\"type\":\"a\"}\n{\"type\":\"a\",\"retries\":3}\n", []string{"--jsonl"}, `line 2: unknown field "retries"`},
		{"{\"type\":\"a\",\"id\":\"x\"}\n{\"type\":\"a\",\"id\":\"x\"}\n", []string{"--jsonl"}, `line 2: id "x" repeats line 1`},
		{"{\"payload\":{}}\n", []string{"--jsonl"}, `line 1: "type" is required`},
		{"{\"type\":\"a\"}\n", []string{"--jsonl", "--type", "a"}, "--type cannot be used with --jsonl"},
	} {
		r := run(t, dir, tc.stdin, append(append([]string{"enqueue"}, tc.args...), store...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("enqueue %v: want exit 2 and %q: %s", tc.args, tc.want, r)
		}
	}
	if r := run(t, dir, "", "enqueue", "--type", "a"); r.code != exitUsage || !strings.Contains(r.stderr, "no store given") {
		t.Errorf("no store: %s", r)
	}
	if r := run(t, dir, "", "tasks", "stats", "--store", "nothing-here.db"); r.code != exitFailure || !strings.Contains(r.stderr, "no store at nothing-here.db") {
		t.Errorf("tasks on a missing store: %s", r)
	}
	if s := stats(t, dir, store...); s["total"] != 3 {
		t.Errorf("stats %v: a rejected enqueue stored tasks", s)
	}
}

func TestHelpAndVersion(t *testing.T) {
	dir := t.TempDir()
	r := mustRun(t, dir, "", "version")
	if !strings.HasPrefix(r.stdout, "peonify ") || !strings.Contains(r.stdout, "go1.") {
		t.Errorf("version: %s", r)
	}
	r = mustRun(t, dir, "", "--help")
	for _, cmd := range commands() {
		if !strings.Contains(r.stdout, "  "+cmd.name+" ") {
			t.Errorf("--help does not list %s:\n%s", cmd.name, r.stdout)
		}
		h := mustRun(t, dir, "", cmd.name, "--help")
		if !strings.Contains(h.stdout, "Example:\n  peonify "+cmd.name) {
			t.Errorf("peonify %s --help has no example:\n%s", cmd.name, h.stdout)
		}
	}
	for _, sub := range append(taskSubcommands(), workflowSubcommands()...) {
		h := mustRun(t, dir, "", append(strings.Fields(sub.name), "--help")...)
		if !strings.Contains(h.stdout, "Example:\n  peonify "+sub.name) || !strings.Contains(h.stdout, "-store") {
			t.Errorf("peonify %s --help:\n%s", sub.name, h.stdout)
		}
	}
	if r := run(t, dir, "", "frobnicate"); r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %s", r)
	}
	if r := run(t, dir, "", "enqueue", "--bogus"); r.code != exitUsage || !strings.Contains(r.stderr, "Run 'peonify enqueue --help'") {
		t.Errorf("unknown flag: %s", r)
	}
	if r := run(t, dir, ""); r.code != exitUsage || !strings.Contains(r.stderr, "Commands:") {
		t.Errorf("no command: %s", r)
	}
}
