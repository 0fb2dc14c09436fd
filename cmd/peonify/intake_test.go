package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/streams/wsstream"
)

// listenAddr waits until the daemon logs the address of a server whose
// log line contains what, and returns it (http://127.0.0.1:port).
func (d *daemonProc) listenAddr(what string) string {
	d.t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(what) + `.* addr=(https?://\S+)`)
	var addr string
	waitFor(d.t, "the address of the "+what, func() bool {
		m := re.FindStringSubmatch(d.stderr.String())
		if m != nil {
			addr = m[1]
			return true
		}
		select {
		case <-d.exited:
			d.t.Fatalf("peonify run exited (%v) before it logged %s; log:\n%s", d.err, what, d.stderr)
		default:
		}
		return false
	}, d.stderr)
	return addr
}

// get fetches a URL and returns its status and body.
func get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// githubPost sends body to u signed as GitHub signs webhooks.
func githubPost(t *testing.T, u, secret, delivery string, body []byte) *http.Response {
	t.Helper()
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, err := http.NewRequest("POST", u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-GitHub-Event", "push")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

const intakeDaemonConfig = `
processor:
  workers: 4
streams:
  - kind: sqlite
    path: store.db
  - name: hooks
    kind: webhook
    listen: 127.0.0.1:0
    routes:
      - path: /hooks/github
        type: mark
        verify: github
        secrets: ["${PEONIFY_CLI_TEST_GH_SECRET}"]
        json: true
      - path: /hooks/sync
        type: mark
        verify: none
        sync: true
  - name: producers
    kind: websocket
    key_from: json:from
    listen: 127.0.0.1:0
    path: /tasks
    bearer_tokens: ["${PEONIFY_CLI_TEST_WS_TOKEN}"]
tasks:
  mark:
    executor: exec
    shell: 'cat > "marks/$PEONIFY_TASK_ID.json"'
http:
  listen: 127.0.0.1:0
`

// A GitHub webhook and a WebSocket producer give the daemon tasks, which
// its exec executor runs; the metrics count them and the health checks
// pass.
func TestRunWebhookWebSocketAndMetrics(t *testing.T) {
	dir := newMarksDir(t, intakeDaemonConfig)
	const secret, token = "gh-secret-for-the-test", "ws-token-0123456789"
	d := startDaemon(t, dir, "peonify.yaml", "PEONIFY_CLI_TEST_GH_SECRET="+secret, "PEONIFY_CLI_TEST_WS_TOKEN="+token)
	hooks := d.listenAddr("kind=webhook intake=hooks")
	ws := d.listenAddr("kind=websocket intake=producers")
	admin := d.listenAddr("serving metrics and health checks")
	d.waitLog("peonify: running")

	// A signed delivery is stored, then run; its ID is the delivery's.
	body := []byte(`{"ref":"refs/heads/main"}`)
	if resp := githubPost(t, hooks+"/hooks/github", secret, "d-1", body); resp.StatusCode != http.StatusAccepted || resp.Header.Get("Peonify-Task-Id") != "mark:d-1" {
		t.Fatalf("signed webhook answered %s, task %q; want 202 and task mark:d-1", resp.Status, resp.Header.Get("Peonify-Task-Id"))
	}
	waitFor(t, "the webhook's task to run", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "marks", "mark:d-1.json"))
		return bytes.Equal(b, body)
	}, d.stderr)
	// GitHub redelivers: the store kept the finished task (keep_done is
	// 24h for a webhook's SQLite store), so it is not run again.
	if resp := githubPost(t, hooks+"/hooks/github", secret, "d-1", body); resp.StatusCode != http.StatusOK || resp.Header.Get("Peonify-Duplicate") != "true" {
		t.Errorf("redelivery answered %s (duplicate %q); want 200 and a duplicate", resp.Status, resp.Header.Get("Peonify-Duplicate"))
	}
	if resp := githubPost(t, hooks+"/hooks/github", "wrong-secret", "d-2", body); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrongly signed webhook answered %s, want 401", resp.Status)
	}
	// A synchronous route answers once its task has run: the processor
	// has the results middleware.
	resp, err := http.Post(hooks+"/hooks/sync", "application/json", strings.NewReader(`{"sync":true}`))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	id := resp.Header.Get("Peonify-Task-Id")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(answer), `"done"`) || !fileExists(filepath.Join(dir, "marks", id+".json")) {
		t.Errorf("synchronous route answered %s %s (task %q), want 200 once the task ran", resp.Status, answer, id)
	}

	// A WebSocket producer with the token sends a task; one without is
	// refused at the handshake.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(ws, "http") + "/tasks"
	_, err = wsstream.Dial(ctx, wsURL, wsstream.DialOptions{})
	var he *wsstream.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
		t.Errorf("dial without a token: %v, want a 401 handshake error", err)
	}
	c, err := wsstream.Dial(ctx, wsURL, wsstream.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Send(ctx, &peonify.Task{ID: "ws-1", Type: "mark", Payload: []byte(`{"from":"ws"}`)})
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the WebSocket task to run", func() bool { return fileExists(filepath.Join(dir, "marks", "ws-1.json")) }, d.stderr)
	// key_from: json:from gave the task, sent without a key, its payload's
	// "from" as Task.Key.
	if tj := show(t, dir, "ws-1", "--store", "store.db"); tj.Key != "ws" {
		t.Errorf("the WebSocket task has key %q, want %q from key_from: json:from", tj.Key, "ws")
	}

	// The tasks are counted once they are acked.
	var metrics string
	waitFor(t, "the metrics to count the three tasks", func() bool {
		_, metrics = get(t, admin+"/metrics")
		return strings.Contains(metrics, `peonify_tasks_succeeded_total{stream="sqlite",type="mark"} 3`)
	}, d.stderr)
	for _, want := range []string{"go_goroutines", "process_resident_memory_bytes", `peonify_workers 4`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, body := get(t, admin+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, admin+"/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	// The dashboard, read-only without credentials on a loopback address.
	if code, body := get(t, admin+"/dashboard/"); code != http.StatusOK || !strings.Contains(body, "<html") {
		t.Errorf("/dashboard/: %d %.200q", code, body)
	}
	if code, body := get(t, admin+"/dashboard/api/stores/sqlite/tasks?state=done"); code != http.StatusOK || !strings.Contains(body, `"mark:d-1"`) {
		t.Errorf("/dashboard/ store listing: %d %.300q", code, body)
	}

	code, log := d.stop()
	if code != 0 {
		t.Fatalf("peonify run exited %d after SIGTERM; log:\n%s", code, log)
	}
	if s := stats(t, dir, "--store", "store.db"); s["done"] != 3 || s["total"] != 3 {
		t.Errorf("stats %v, want the three tasks kept as done", s)
	}
}

// An MQTT message published with mosquitto_pub becomes a task that runs;
// /readyz waits for the subscription. Published again after its task ran
// and the store deleted it, it does not run again.
func TestRunMQTT(t *testing.T) {
	broker := testenv.URL(t, "mqtt")
	pub, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		if os.Getenv("PEONIFY_REQUIRE_SERVICES") == "1" {
			t.Fatal("mosquitto_pub is not installed; PEONIFY_REQUIRE_SERVICES=1 needs it")
		}
		t.Skip("needs mosquitto_pub (the mosquitto-clients package)")
	}
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	dir := newMarksDir(t, fmt.Sprintf(`
processor:
  workers: 1
streams:
  - kind: sqlite
    path: store.db
  - name: devices
    kind: mqtt
    url: ${PEONIFY_CLI_TEST_MQTT}
    client_id: peonify-cli-test-%[1]s
    session_expiry: 2s
    routes: {"peonify-cli-test/%[1]s/+": mark}
tasks:
  mark:
    executor: exec
    shell: 'cat > "marks/$PEONIFY_TASK_ID.json"; echo run >> "marks/$PEONIFY_TASK_ID.runs"'
http:
  listen: 127.0.0.1:0
`, run))
	d := startDaemon(t, dir, "peonify.yaml", "PEONIFY_CLI_TEST_MQTT="+broker)
	admin := d.listenAddr("serving metrics and health checks")
	waitFor(t, "/readyz to see the subscription", func() bool {
		code, _ := get(t, admin+"/readyz")
		return code == http.StatusOK
	}, d.stderr)

	u, err := url.Parse(broker)
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Host, "1883"
	}
	publish := func(id string) {
		t.Helper()
		out, err := exec.Command(pub, "-h", host, "-p", port, "-V", "mqttv5", "-q", "1",
			"-t", "peonify-cli-test/"+run+"/sensor-1", "-D", "publish", "user-property", "id", id,
			"-m", `{"celsius":21}`).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
	}
	publish("m-" + run)
	p := filepath.Join(dir, "marks", "m-"+run+".json")
	waitFor(t, "the MQTT message's task to run", func() bool {
		b, _ := os.ReadFile(p)
		return string(b) == `{"celsius":21}`
	}, d.stderr)
	waitFor(t, "the task to be deleted once done", func() bool {
		return stats(t, dir, "--store", "store.db")["total"] == 0
	}, d.stderr)
	// Published again, then a new message: once the new one ran on the
	// one worker, the first has not run again.
	publish("m-" + run)
	publish("after-" + run)
	waitFor(t, "the next message's task to run", func() bool { return runs(dir, "after-"+run) == 1 }, d.stderr)
	if n := runs(dir, "m-"+run); n != 1 {
		t.Errorf("the message published twice ran %d times, want once", n)
	}
	if code, log := d.stop(); code != 0 {
		t.Fatalf("peonify run exited %d after SIGTERM; log:\n%s", code, log)
	}
}

// /readyz says why the processor is not ready: here an MQTT intake told
// to wait for a broker that does not answer. The daemon still stops
// cleanly.
func TestReadyzReportsWhatIsDown(t *testing.T) {
	dead := closedPort(t) // nothing listens there
	dir := t.TempDir()
	writeFile(t, dir, "peonify.yaml", mqttIntakeFile(dead, `
    client_id: peonify-cli-test-down
    connect_timeout: 1s
    wait_for_broker: true
    routes: {"a/b": mark}`, `
http:
  listen: 127.0.0.1:0
`))
	d := startDaemon(t, dir, "peonify.yaml")
	admin := d.listenAddr("serving metrics and health checks")
	d.waitLog("peonify: running")
	var code int
	var body string
	waitFor(t, "/readyz to name the connection error", func() bool {
		code, body = get(t, admin+"/readyz")
		return strings.Contains(body, "connection refused")
	}, d.stderr)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `mqtt intake "devices" cannot connect to the broker: failed to connect to mqtt://`+dead) {
		t.Errorf("/readyz: %d %q, want 503 naming the mqtt intake and why it cannot connect", code, body)
	}
	if code, _ := get(t, admin+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d, want 200: the process is alive", code)
	}
	if code, log := d.stop(); code != 0 {
		t.Fatalf("peonify run exited %d after SIGTERM; log:\n%s", code, log)
	}
}

// A port that is taken fails the start with status 1, before any task
// runs; a mistake in an intake's config is status 2 with the field.
func TestIntakeStartAndConfigErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	writeFile(t, dir, "taken.yaml", fmt.Sprintf(`
streams:
  - {kind: sqlite, path: store.db}
  - {kind: websocket, listen: "%s"}
tasks:
  mark: {executor: exec, shell: 'true'}
`, ln.Addr()))
	r := run(t, dir, "", "run", "-c", "taken.yaml")
	if r.code != exitFailure || !strings.Contains(r.stderr, "websocket intake \"websocket\": listen tcp "+ln.Addr().String()) ||
		!strings.Contains(r.stderr, "address already in use") {
		t.Errorf("a taken port: %s", r)
	}

	const store = "streams:\n  - {kind: sqlite, path: store.db}\n"
	const tasks = "tasks:\n  mark: {executor: exec, shell: 'true'}\n"
	for _, tc := range []struct{ yaml, want string }{
		{store + "  - {kind: webhook, listen: ':8080', routes: [{path: /gh, type: mark, verify: github}]}\n" + tasks,
			"bad.yaml:3:48: streams[1].routes[0].secrets: required with verify: github"},
		{store + "  - kind: websocket\n    listen: ':8081'\n    bearer_tokens: ['${PEONIFY_CLI_TEST_UNSET:-}']\n" + tasks,
			"bad.yaml:5:21: streams[1].bearer_tokens[0]: is 0 bytes long"},
		{store + "  - {kind: mqtt, url: 'mqtt://broker', routes: {a/b: mark}}\n" + tasks,
			"bad.yaml:3:6: streams[1].client_id: required"},
		{store + tasks + "http: {listen: 9090}\n",
			`bad.yaml:5:16: http.listen: "9090" is not host:port`},
		{store + tasks + "http: {listen: ':9090'}\n",
			"bad.yaml:5:8: http.dashboard.token: required when http.listen (:9090) can be reached from other machines"},
		{store + tasks + "http: {listen: '127.0.0.1:9090', dashboard: {token: short}}\n",
			"bad.yaml:5:53: http.dashboard.token: is 5 bytes long"},
	} {
		writeFile(t, dir, "bad.yaml", tc.yaml)
		if r := run(t, dir, "", "run", "-c", "bad.yaml"); r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("want exit 2 and %q: %s", tc.want, r)
		}
	}
}

// An MQTT intake whose broker cannot be reached at start-up stops the
// daemon at once with one line that says why, as a store would.
func TestRunMQTTUnreachableBroker(t *testing.T) {
	dead := closedPort(t)
	dir := t.TempDir()
	writeFile(t, dir, "peonify.yaml", mqttIntakeFile(dead, `
    client_id: peonify-cli-test-unreachable
    routes: {"a/b": mark}`, ""))
	start := time.Now()
	r := run(t, dir, "", "run", "-c", "peonify.yaml")
	took := time.Since(start)
	want := `peonify run: streams[1]: mqtt intake "devices" cannot connect to the broker: failed to connect to mqtt://` + dead
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if r.code != exitFailure || len(lines) != 1 || !strings.HasPrefix(lines[0], want) || !strings.Contains(lines[0], "connection refused") {
		t.Errorf("want exit 1 and one line %q...: %s", want, r)
	}
	if took > 5*time.Second {
		t.Errorf("peonify run took %s to give up", took)
	}
}

// mqttIntakeFile is a file with a SQLite store and the MQTT intake
// "devices" on the broker at host (host:port), with the further fields of
// its entry (indented as they are in the file) and a task mark that does
// nothing, for its routes; rest follows.
func mqttIntakeFile(host, fields, rest string) string {
	return `
streams:
  - kind: sqlite
    path: store.db
  - name: devices
    kind: mqtt
    url: mqtt://` + host + fields + `
tasks:
  mark: {executor: exec, shell: 'true'}
` + rest
}

// wsResendConfig runs each task on one worker, in order, and counts its
// runs in marks/<id>.runs. Its SQLite store keeps no finished task.
const wsResendConfig = `
processor:
  workers: 1
streams:
  - kind: sqlite
    path: store.db
  - name: producers
    kind: websocket
    listen: 127.0.0.1:0
tasks:
  mark:
    executor: exec
    shell: 'echo run >> "marks/$PEONIFY_TASK_ID.runs"'
`

// runs returns how many times the task id ran, by its marks file.
func runs(dir, id string) int {
	b, _ := os.ReadFile(filepath.Join(dir, "marks", id+".runs"))
	return strings.Count(string(b), "run\n")
}

// A WebSocket producer resends a task after it ran and the store deleted
// it, and again after the daemon restarted: it runs once.
func TestRunWebSocketResend(t *testing.T) {
	dir := newMarksDir(t, wsResendConfig)
	for round := range 2 { // the second after a restart
		d := startDaemon(t, dir, "peonify.yaml")
		ws := d.listenAddr("kind=websocket intake=producers")
		d.waitLog("peonify: running")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := wsstream.Dial(ctx, "ws"+strings.TrimPrefix(ws, "http")+"/", wsstream.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		send := func(id string) {
			t.Helper()
			if err := c.Send(ctx, &peonify.Task{ID: id, Type: "mark", Payload: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
		if round == 0 {
			send("dup-1")
			waitFor(t, "dup-1 to run and be deleted", func() bool {
				return runs(dir, "dup-1") == 1 && stats(t, dir, "--store", "store.db")["total"] == 0
			}, d.stderr)
		}
		// The resend is acknowledged; a task sent after it shows, once it
		// ran on the one worker, that the resend was not run again.
		after := fmt.Sprint("after-", round)
		send("dup-1")
		send(after)
		waitFor(t, after+" to run", func() bool { return runs(dir, after) == 1 }, d.stderr)
		c.Close()
		cancel()
		if code, log := d.stop(); code != 0 {
			t.Fatalf("peonify run exited %d after SIGTERM; log:\n%s", code, log)
		}
		if n := runs(dir, "dup-1"); n != 1 {
			t.Fatalf("round %d: dup-1 ran %d times, want once", round, n)
		}
	}
	if !fileExists(filepath.Join(dir, "store.db-producers.resends")) {
		t.Error("the resend log is not next to the store")
	}
}

// Where each intake keeps its resend log by default, and a file shared by
// two intakes is refused.
func TestResendLogDefaults(t *testing.T) {
	c, err := parseConfig([]byte(`
streams:
  - {kind: sqlite, path: data/x.db}
  - {name: r, kind: redis, url: 'redis://h'}
  - {name: "ws/1", kind: websocket, listen: ':8081', store: sqlite}
  - {name: ws2, kind: websocket, listen: ':8082', store: r}
  - {name: m, kind: mqtt, url: 'mqtt://h', client_id: a, routes: {a/b: t}, store: sqlite, resend_window: 1h, resend_log: /var/lib/m.resends}
  - {name: off, kind: mqtt, url: 'mqtt://h', client_id: b, routes: {a/c: t}, store: sqlite, resend_window: -1s}
tasks:
  t: {executor: exec, shell: 'true'}
`), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	ws1 := c.stream("ws/1").(*websocketSpec).config(nil)
	ws2 := c.stream("ws2").(*websocketSpec).config(nil)
	m := c.stream("m").(*mqttSpec).config(nil)
	off := c.stream("off").(*mqttSpec).config(nil)
	if ws1.ResendLog != "data/x.db-ws_1.resends" || ws2.ResendLog != "peonify-ws2.resends" ||
		m.ResendLog != "/var/lib/m.resends" || m.ResendWindow != time.Hour || off.ResendLog != "" || off.ResendWindow >= 0 {
		t.Errorf("resend logs %q %q %q (%s) %q (%s)", ws1.ResendLog, ws2.ResendLog, m.ResendLog, m.ResendWindow, off.ResendLog, off.ResendWindow)
	}
	_, err = parseConfig([]byte(`
streams:
  - {kind: sqlite, path: x.db}
  - {name: a, kind: websocket, listen: ':8081', resend_log: r}
  - {name: b, kind: websocket, listen: ':8082', resend_log: r}
tasks:
  t: {executor: exec, shell: 'true'}
`), env(nil))
	if err == nil || !strings.Contains(err.Error(), `streams[2].resend_log: "r" is also the resend_log of streams[1]`) {
		t.Errorf("a shared resend_log: %v", err)
	}
}
