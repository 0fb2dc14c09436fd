package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/streams/pgstream"
	"github.com/peonify/peonify/streams/redisstream"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// The stores that the tests below run end to end keep the state of their
// tasks and run workflows.
var (
	_ peonify.Tracker       = (*sqlitestream.Stream)(nil)
	_ peonify.WorkflowStore = (*sqlitestream.Stream)(nil)
	_ peonify.Tracker       = (*pgstream.Stream)(nil)
	_ peonify.WorkflowStore = (*pgstream.Stream)(nil)
	_ peonify.Tracker       = (*redisstream.Stream)(nil)
	_ peonify.WorkflowStore = (*redisstream.Stream)(nil)
)

// trackConfig runs, on the store of the entry %[1]s, exec tasks that print
// their results and http tasks answered by the server at %[2]s.
const trackConfig = quickStop + `streams:
  - %[1]s
tasks:
  fetch: {executor: exec, shell: 'printf "{\"bytes\":1234}"', stdout: result}
  resize: {executor: exec, command: [cat], stdout: result}
  notify: {executor: http, url: "%[2]s/notify"}
  big: {executor: http, url: "%[2]s/big"}
  slow: {executor: exec, shell: 'trap "touch stopped; exit 143" TERM; touch started; sleep 30 & wait'}
  later: {executor: exec, shell: 'true'}
http:
  listen: 127.0.0.1:0
`

// A workflow enqueued from a file runs with the daemon; tasks get shows
// results, parents and workflow, tasks wait prints a result, workflows
// get shows the workflow, and tasks cancel and workflows cancel stop what
// has not finished; on each store that keeps the state of its tasks.
func TestWorkflowResultsWaitAndCancel(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { trackEndToEnd(t, "{kind: sqlite, path: store.db, lease: 3s}", "sqlite") })
	t.Run("postgres", func(t *testing.T) {
		url := testenv.URL(t, "postgres")
		t.Setenv("PEONIFY_CLI_TEST_PG", url)
		mustRun(t, t.TempDir(), "", "migrate", "--postgres", url)
		queue := fmt.Sprintf("cli_track_%d", time.Now().UnixNano())
		trackEndToEnd(t, "{kind: postgres, name: pg, url: '${PEONIFY_CLI_TEST_PG}', queue: "+queue+", lease: 3s}", "pg")
	})
	t.Run("redis", func(t *testing.T) {
		url := testenv.URL(t, "redis")
		t.Setenv("PEONIFY_CLI_TEST_REDIS", url)
		queue := fmt.Sprintf("peonify-cli-track-%d", time.Now().UnixNano())
		t.Cleanup(func() { deleteRedisQueue(url, queue) })
		trackEndToEnd(t, "{kind: redis, name: rd, url: '${PEONIFY_CLI_TEST_REDIS}', queue: "+queue+", lease: 3s}", "rd")
	})
}

// trackEndToEnd runs TestWorkflowResultsWaitAndCancel on the store of
// entry, a stream named name.
func trackEndToEnd(t *testing.T, entry, name string) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/notify":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"sent":true}`)
		case "/big":
			_, _ = w.Write(make([]byte, peonify.MaxResultLen+1))
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	writeFile(t, dir, "peonify.yaml", fmt.Sprintf(trackConfig, entry, srv.URL))
	store := []string{"-c", "peonify.yaml"}
	// IDs of this run: a store on a server keeps those of earlier runs.
	p := fmt.Sprintf("r%d-", time.Now().UnixNano())
	f, rs, n, slow, big, later, wf1, wf2 := p+"f", p+"r", p+"n", p+"slow", p+"big", p+"later", p+"wf-1", p+"wf-2"
	writeFile(t, dir, "wf.json", fmt.Sprintf(`{"id": %[1]q, "tasks": [
		{"id": %[2]q, "type": "fetch"},
		{"id": %[3]q, "type": "resize", "parents": [%[2]q], "payload": {"size": 64}},
		{"id": %[4]q, "type": "notify", "parents": [%[3]q], "allow_failed_parents": true}
	]}`, wf1, f, rs, n))

	r := mustRun(t, dir, "", append([]string{"enqueue", "--workflow", "wf.json"}, store...)...)
	if r.stdout != wf1+"\n" || !strings.Contains(r.stderr, "stored workflow "+wf1+" (3 tasks)") {
		t.Errorf("enqueue --workflow: %s", r)
	}
	r = mustRun(t, dir, "", append([]string{"enqueue", "--workflow", "wf.json", "--json"}, store...)...)
	if want := fmt.Sprintf(`{"id":%q,"tasks":[%q,%q,%q],"duplicate":true}`, wf1, f, rs, n); r.stdout != want+"\n" ||
		!strings.Contains(r.stderr, "workflow "+wf1+" is already enqueued") {
		t.Errorf("enqueue --workflow again: %s", r)
	}
	r = mustRun(t, dir, "", append([]string{"workflows", "get", wf1}, store...)...)
	for _, want := range []string{`State: +running\n`, `Tasks: +2 waiting, 1 pending \(3 in all\)\n`, `\n` + rs + ` +resize +waiting +0 +- +` + f + ` `} {
		if !regexp.MustCompile(want).MatchString(r.stdout) {
			t.Errorf("workflows get does not match %s:\n%s", want, r.stdout)
		}
	}
	mustRun(t, dir, "", append([]string{"enqueue", "--type", "slow", "--id", slow}, store...)...)
	mustRun(t, dir, "", append([]string{"enqueue", "--type", "big", "--id", big}, store...)...)
	mustRun(t, dir, "", append([]string{"enqueue", "--type", "later", "--id", later, "--delay", "1h"}, store...)...)

	d := startDaemon(t, dir, "peonify.yaml")
	r = run(t, dir, "", append([]string{"tasks", "wait", n, "--timeout", "20s"}, store...)...)
	if r.code != 0 || r.stdout != `{"sent":true}` {
		t.Fatalf("tasks wait for the workflow's last task: %s\nlog:\n%s", r, d.stderr)
	}
	tj := show(t, dir, f, store...)
	if tj.State != peonify.StateDone || compact(tj.Result) != `{"bytes":1234}` || tj.Workflow != wf1 {
		t.Errorf("tasks show --json of the first task: %+v", tj)
	}
	r = mustRun(t, dir, "", append([]string{"tasks", "get", rs}, store...)...)
	for _, want := range []string{"State:     done", "Workflow:  " + wf1, "Parents:   " + f + "\n", "Result: \n  {\n    \"size\": 64\n  }"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("tasks get lacks %q:\n%s", want, r.stdout)
		}
	}
	if tj := show(t, dir, n, store...); len(tj.Parents) != 1 || tj.Parents[0] != rs || !tj.AllowFailedParents {
		t.Errorf("tasks show --json of the last task: %+v", tj)
	}
	r = mustRun(t, dir, "", append([]string{"workflows", "get", wf1, "--json"}, store...)...)
	var wj workflowJSON
	if err := json.Unmarshal([]byte(r.stdout), &wj); err != nil {
		t.Fatal(err)
	}
	if wj.State != peonify.WorkflowSucceeded || wj.Total != 3 || wj.Counts[peonify.StateDone] != 3 || len(wj.Tasks) != 3 || wj.CreatedAt == nil {
		t.Errorf("workflows get --json: %s", r.stdout)
	}
	// The daemon's dashboard shows them too.
	admin := d.listenAddr("serving metrics and health checks")
	code, body := get(t, admin+"/dashboard/api/stores/"+name+"/workflows/"+wf1)
	var wv dashboard.WorkflowView
	if err := json.Unmarshal([]byte(body), &wv); code != http.StatusOK || err != nil || wv.State != peonify.WorkflowSucceeded || len(wv.Tasks) != 3 {
		t.Errorf("the dashboard's workflow: %d %s", code, body)
	}
	code, body = get(t, admin+"/dashboard/api/stores/"+name+"/tasks/"+f)
	var tv dashboard.TaskView
	if err := json.Unmarshal([]byte(body), &tv); code != http.StatusOK || err != nil || tv.Result != `{"bytes":1234}` || tv.Workflow != wf1 {
		t.Errorf("the dashboard's task: %d %s", code, body)
	}

	// A response body larger than a result can be kills its task.
	r = run(t, dir, "", append([]string{"tasks", "wait", big, "--timeout", "20s"}, store...)...)
	if r.code != exitFailed || !strings.Contains(r.stderr, "task "+big+" is dead") || !strings.Contains(r.stderr, "MaxResultLen") {
		t.Errorf("tasks wait for the task with a too large body: %s", r)
	}

	// A running task is cancelled and its command stopped.
	waitFor(t, "the slow task to start", func() bool { return fileExists(filepath.Join(dir, "started")) }, d.stderr)
	r = mustRun(t, dir, "", append([]string{"tasks", "cancel", slow, p + "nope"}, store...)...)
	if r.stdout != "cancelled 1 task\n" || !strings.Contains(r.stderr, "1 of the IDs are finished already or not in the stream") {
		t.Errorf("tasks cancel: %s", r)
	}
	r = run(t, dir, "", append([]string{"tasks", "wait", slow}, store...)...)
	if r.code != exitFailed || !strings.Contains(r.stderr, "task "+slow+" is cancelled") {
		t.Errorf("tasks wait for the cancelled task: %s", r)
	}
	d.waitLog("task cancelled while it ran; cancelling its context")
	waitFor(t, "the cancelled task's command to be stopped", func() bool { return fileExists(filepath.Join(dir, "stopped")) }, d.stderr)

	// Waiting gives up after --timeout.
	r = run(t, dir, "", append([]string{"tasks", "wait", later, "--timeout", "300ms"}, store...)...)
	if r.code != exitTimeout || !strings.Contains(r.stderr, "task "+later+" has not finished after 300ms") {
		t.Errorf("tasks wait --timeout: %s", r)
	}

	// A whole workflow is cancelled.
	mustRun(t, dir, fmt.Sprintf(`{"id": %q, "tasks": [{"id": "%sa", "type": "later", "delay": "1h"}, {"type": "later", "parents": ["%[2]sa"]}]}`, wf2, p),
		append([]string{"enqueue", "--workflow", "-"}, store...)...)
	r = mustRun(t, dir, "", append([]string{"workflows", "cancel", wf2}, store...)...)
	if r.stdout != "cancelled 2 tasks of workflow "+wf2+"\n" {
		t.Errorf("workflows cancel: %s", r)
	}
	if r := mustRun(t, dir, "", append([]string{"workflows", "get", wf2}, store...)...); !strings.Contains(r.stdout, "State:    cancelled") ||
		!strings.Contains(r.stdout, "Tasks:    2 cancelled (2 in all)") {
		t.Errorf("workflows get after cancel:\n%s", r.stdout)
	}
	if r := run(t, dir, "", append([]string{"workflows", "cancel", p + "wf-3"}, store...)...); r.code != exitFailure || !strings.Contains(r.stderr, `no workflow "`+p+`wf-3"`) {
		t.Errorf("workflows cancel of an unknown workflow: %s", r)
	}
	if s := stats(t, dir, store...); s["cancelled"] != 3 || s["done"] != 3 || s["dead"] != 1 {
		t.Errorf("stats %v, want 3 cancelled, 3 done and 1 dead", s)
	}
	if code, log := d.stop(); code != 0 {
		t.Fatalf("peonify run exited %d after SIGTERM; log:\n%s", code, log)
	}
	for _, s := range []string{"dead", "cancelled", "done"} {
		mustRun(t, dir, "", append([]string{"tasks", "purge", "--state", s}, store...)...)
	}
	mustRun(t, dir, "", append([]string{"tasks", "delete", later}, store...)...)
}

// Stores that do not track their tasks say so, and which ones do; a
// workflow file with a mistake stores nothing.
func TestTrackingUnsupportedAndWorkflowMistakes(t *testing.T) {
	dir := t.TempDir()
	nats := []string{"--nats", testenv.URL(t, "nats"), "--nats-stream", "PEONIFY_TRACK_TEST"}
	for _, args := range [][]string{
		{"tasks", "cancel", "x"},
		{"tasks", "wait", "x"},
		{"workflows", "get", "x"},
		{"workflows", "cancel", "x"},
	} {
		r := run(t, dir, "", append(args, nats...)...)
		if r.code != exitFailure || !strings.Contains(r.stderr, "sqlite, postgres or redis stores do: unsupported operation") {
			t.Errorf("peonify %s on NATS: %s", strings.Join(args, " "), r)
		}
	}
	for _, tc := range []struct{ doc, want string }{
		{`{"tasks": [{"id": "a", "type": "x", "parents": ["b"]}, {"id": "b", "type": "x", "parents": ["a"]}]}`, "has a cycle through this task"},
		{`{"tasks": [{"id": "a", "type": "x", "parents": ["c"]}]}`, "task depends on c, which is not a task of workflow"},
		{`{"tasks": [{"id": "a", "type": "x"}, {"id": "a", "type": "y"}]}`, "has two tasks with this ID"},
		{`{"tasks": [{"id": "a", "typ": "x"}]}`, `unknown field "typ"`},
		{`{"tasks": [{"id": "a"}]}`, `tasks[0] (a): "type" is required`},
		{`{"id": "w"}`, `has no "tasks"`},
	} {
		r := run(t, dir, tc.doc, "enqueue", "--workflow", "-", "--store", "p.db")
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("enqueue --workflow of %s: %s", tc.doc, r)
		}
	}
	if r := run(t, dir, "{}", "enqueue", "--workflow", "-", "--type", "x", "--store", "p.db"); r.code != exitUsage || !strings.Contains(r.stderr, "--type cannot be used with --workflow") {
		t.Errorf("enqueue --workflow --type: %s", r)
	}
	if fileExists(filepath.Join(dir, "p.db")) {
		t.Error("a mistaken workflow file created the store")
	}
}

// tasks get shows a running task's progress, as text and as JSON.
func TestTasksGetShowsProgress(t *testing.T) {
	dir := t.TempDir()
	s, err := sqlitestream.Open(filepath.Join(dir, "p.db"), sqlitestream.Config{Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := s.Enqueue(ctx, &peonify.Task{ID: "resize-1", Type: "resize"}); err != nil {
		t.Fatal(err)
	}
	ds, err := s.Poll(ctx, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Poll = %d deliveries, %v", len(ds), err)
	}
	if err := s.SetProgress(ctx, ds[0], peonify.Progress{Fraction: 0.42, Message: "resizing 3 of 7", UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}

	r := mustRun(t, dir, "", "tasks", "get", "resize-1", "--store", "p.db")
	if !regexp.MustCompile(`\nProgress: +42% resizing 3 of 7 \(`).MatchString(r.stdout) {
		t.Errorf("tasks get does not show the progress:\n%s", r.stdout)
	}
	r = mustRun(t, dir, "", "tasks", "get", "resize-1", "--store", "p.db", "--json")
	var got struct {
		State    string `json:"state"`
		Progress *struct {
			Fraction  float64    `json:"fraction"`
			Message   string     `json:"message"`
			UpdatedAt *time.Time `json:"updated_at"`
		} `json:"progress"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("tasks get --json: %v\n%s", err, r.stdout)
	}
	if p := got.Progress; got.State != "running" || p == nil || p.Fraction != 0.42 || p.Message != "resizing 3 of 7" || p.UpdatedAt == nil {
		t.Errorf("tasks get --json = %s, want a running task with its progress", r.stdout)
	}
}
