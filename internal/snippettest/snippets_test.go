package snippettest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/peonify/peonify/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if buildBin != "" {
			_ = os.RemoveAll(filepath.Dir(buildBin))
		}
		os.Exit(code)
	}))
}

// python is Debian's interpreter, which sees the python3-* packages (a
// pyenv python3 on PATH would not).
const python = "/usr/bin/python3"

// nodeDir holds package.json, package-lock.json and, once installed with
// npm ci, the node_modules that Node.js snippets import.
const nodeDir = "testdata/node"

// unrunnable lists the clients that have no package on the registries
// this project installs from (Debian's and npm's): a snippet that needs
// one is listed in the log as one that cannot run. Keep doc.go's list the
// same.
var unrunnable = map[string]string{
	"python nats": "nats-py is on PyPI only, with no Debian package",
}

// debianPackages names the package of each Python module and command
// that snippets use, for the message that says how to install them.
var debianPackages = map[string]string{
	"psycopg2": "python3-psycopg2", "redis": "python3-redis", "pika": "python3-pika", "paho": "python3-paho-mqtt",
	"psql": "postgresql-client", "redis-cli": "redis-tools", "mosquitto_pub": "mosquitto-clients",
	"curl": "curl", "openssl": "openssl", "node": "nodejs", "python3": "python3",
}

// TestSnippets runs every producer snippet of the READMEs against a
// `peonify run` and checks the task it runs. See the package
// documentation.
func TestSnippets(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	snippets, errs := allSnippets(root)
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if len(snippets) == 0 {
		t.Fatal("found no snippet in the READMEs")
	}

	var run, none, cannot []string
	var runnable []snippet
	missing := map[string]bool{}
	for _, s := range snippets {
		switch {
		case s.kind == "none":
			none = append(none, fmt.Sprintf("%s:%d: %s", s.file, s.line, s.why))
		case unrunnableWhy(s) != "":
			cannot = append(cannot, fmt.Sprintf("%s: %s (its syntax is checked)", s, unrunnableWhy(s)))
			checkSyntax(t, s)
		default:
			for _, m := range missingClients(s) {
				missing[m] = true
			}
			runnable = append(runnable, s)
			run = append(run, s.String())
		}
	}
	t.Logf("%d producer snippets to run:\n\t%s", len(run), strings.Join(run, "\n\t"))
	t.Logf("%d snippets that cannot run here (not skipped silently: no package has their client):\n\t%s", len(cannot), strings.Join(cannot, "\n\t"))
	t.Logf("%d blocks that enqueue nothing:\n\t%s", len(none), strings.Join(none, "\n\t"))
	if len(missing) > 0 {
		var what []string
		for m := range missing {
			what = append(what, m)
		}
		sort.Strings(what)
		msg := "the snippets' clients are not installed: " + strings.Join(what, "; ") +
			"; install them as .ci/run does: apt-get install -y python3-psycopg2 python3-redis python3-pika python3-paho-mqtt mosquitto-clients postgresql-client redis-tools curl openssl, and (cd internal/snippettest/testdata/node && npm ci)"
		if os.Getenv("PEONIFY_REQUIRE_SERVICES") == "1" {
			t.Fatal(msg + "; PEONIFY_REQUIRE_SERVICES=1 makes this an error")
		}
		t.Skip(msg)
	}

	bin := buildPeonify(t, root)
	nodeModules := filepath.Join(root, "internal/snippettest", nodeDir, "node_modules")
	for _, s := range runnable {
		name := fmt.Sprintf("%s:%d/%s", path.Base(path.Dir(s.file)), s.line, s.runner())
		if s.file == "README.md" {
			name = fmt.Sprintf("root:%d/%s", s.line, s.runner())
		}
		t.Run(name, func(t *testing.T) { runSnippet(t, bin, nodeModules, s) })
	}
}

// unrunnableWhy says why s cannot run, its client having no package on
// the registries this project installs from, or "" when it can (a client
// that is installed after all, by hand, is used).
func unrunnableWhy(s snippet) string {
	if s.runner() == "python" {
		for _, m := range pythonImports(s.code) {
			if why, ok := unrunnable["python "+m]; ok && exec.Command(python, "-c", "import "+m).Run() != nil {
				return why
			}
		}
	}
	return ""
}

// checkSyntax fails the test if a Python snippet that cannot run does not
// even parse.
func checkSyntax(t *testing.T, s snippet) {
	t.Helper()
	if s.runner() != "python" {
		return
	}
	cmd := exec.Command(python, "-c", "import ast, sys; ast.parse(sys.stdin.read())")
	cmd.Stdin = strings.NewReader(s.code)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s does not parse: %v\n%s", s, err, out)
	}
}

var (
	pyImport   = regexp.MustCompile(`(?m)^\s*(?:import\s+([\w., ]+)|from\s+(\w+)[\w.]*\s+import)`)
	nodeImport = regexp.MustCompile(`(?:from\s+|import\s+|require\()\s*["']([^"'.][^"']*)["']`)
	shTools    = []string{"curl", "openssl", "mosquitto_pub", "redis-cli", "psql"}
)

// pythonImports lists the top-level modules that code imports.
func pythonImports(code string) []string {
	var out []string
	for _, m := range pyImport.FindAllStringSubmatch(code, -1) {
		names := m[2]
		if names == "" {
			names = m[1]
		}
		for n := range strings.SplitSeq(names, ",") {
			n, _, _ = strings.Cut(strings.TrimSpace(n), " ")
			n, _, _ = strings.Cut(n, ".")
			if n != "" && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// missingClients lists what s needs that is not installed.
func missingClients(s snippet) []string {
	var out []string
	need := func(cmd string) bool {
		if _, err := exec.LookPath(cmd); err != nil {
			out = append(out, fmt.Sprintf("%s (Debian: %s)", cmd, debianPackages[filepath.Base(cmd)]))
			return false
		}
		return true
	}
	switch s.runner() {
	case "python":
		if !need(python) {
			break
		}
		for _, m := range pythonImports(s.code) {
			if exec.Command(python, "-c", "import "+m).Run() != nil {
				out = append(out, fmt.Sprintf("Python module %s (Debian: %s)", m, debianPackages[m]))
			}
		}
	case "node":
		if !need("node") {
			break
		}
		for _, m := range nodeImport.FindAllStringSubmatch(s.code, -1) {
			pkg := m[1]
			if strings.HasPrefix(pkg, "node:") || slices.Contains(nodeBuiltins, pkg) {
				continue
			}
			if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", pkg, "package.json")); err != nil {
				out = append(out, fmt.Sprintf("npm package %s (npm ci in internal/snippettest/%s)", pkg, nodeDir))
			}
		}
	case "psql":
		need("psql")
	case "redis-cli":
		need("redis-cli")
	case "bash":
		need("bash")
		for _, tool := range shTools {
			if regexp.MustCompile(`(^|[\s|$(])` + tool + `\b`).MatchString(s.code) {
				need(tool)
			}
		}
	}
	return out
}

var nodeBuiltins = []string{"crypto", "fs", "path", "os", "util", "events", "buffer", "net", "http", "https", "url", "child_process", "timers", "stream"}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// buildPeonify builds ./cmd/peonify once per test binary.
func buildPeonify(t *testing.T, root string) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "snippettest-")
		if err != nil {
			buildErr = err
			return
		}
		goCmd, err := exec.LookPath("go")
		if err != nil {
			goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		buildBin = filepath.Join(dir, "peonify")
		cmd := exec.Command(goCmd, "build", "-o", buildBin, "./cmd/peonify")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/peonify: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// apiToken is the bearer token of the api section of the daemon that api
// snippets run against; they read it from PEONIFY_API_TOKEN.
var apiToken = "snippettest-" + randHex(16)

// apiResult is the answer of the test's http executor to the task of an
// api snippet, and so the task's result, which the snippet waits for and
// prints: apiResultShown matches it in JSON and in Python's and Node's
// printing of the parsed value.
const apiResult = `{"sent":true}`

var apiResultShown = regexp.MustCompile(`(?s)done.*sent['"]?:\s*(true|True)`)

// A received task, as the daemon's http executor posted it.
type received struct {
	id, typ string
	body    []byte
}

// runSnippet starts `peonify run` with a config for s's kind, runs s, and
// checks the one task the daemon runs.
func runSnippet(t *testing.T, bin, nodeModules string, s snippet) {
	dir := t.TempDir()
	suffix := randHex(6)

	// Where the snippet sends to.
	var service string
	intakePort := 0
	adminPort := testenv.FreePort(t)
	switch s.kind {
	case "api":
		service = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	case "webhook":
		intakePort = testenv.FreePort(t)
		service = fmt.Sprintf("http://127.0.0.1:%d", intakePort)
	case "websocket":
		intakePort = testenv.FreePort(t)
		service = fmt.Sprintf("ws://127.0.0.1:%d", intakePort)
	default:
		service = testenv.URL(t, s.kind)
	}
	su, err := url.Parse(service)
	if err != nil {
		t.Fatal(err)
	}

	// The snippet as it runs: its literals replaced as its marker says.
	fresh := map[string]string{}
	var pairs [][2]string
	for _, k := range []string{"queue", "subject", "topic", "path"} {
		if lit := s.attr[k]; lit != "" {
			fresh[k] = lit + "-" + suffix
			pairs = append(pairs, [2]string{lit, fresh[k]})
		}
	}
	if lit := s.attr["url"]; lit != "" {
		pairs = append(pairs, [2]string{lit, service})
	}
	if lit := s.attr["host"]; lit != "" {
		pairs = append(pairs, [2]string{lit, su.Hostname()})
	}
	sort.SliceStable(pairs, func(i, j int) bool { return len(pairs[i][0]) > len(pairs[j][0]) })
	var args []string
	for _, p := range pairs {
		if !strings.Contains(s.code, p[0]) {
			t.Fatalf("%s: the marker names %q, which the snippet does not contain", s, p[0])
		}
		args = append(args, p[0], p[1])
	}
	code := strings.NewReplacer(args...).Replace(s.code)

	// The task runner: the daemon's http executor posts each task here.
	got := make(chan received, 16)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- received{id: r.Header.Get("Peonify-Task-Id"), typ: r.Header.Get("Peonify-Task-Type"), body: body}
		if s.kind == "api" {
			// The task's result, which an api snippet waits for and prints.
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, apiResult)
		}
	}))
	defer recv.Close()

	cfg := daemonConfig(s, service, fresh, suffix, recv.URL, dir, adminPort, intakePort)
	cfgPath := filepath.Join(dir, "peonify.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupServer(t, s, service, fresh, suffix) })

	d := startDaemon(t, bin, cfgPath, dir)
	d.waitReady(t, adminPort, intakePort)

	out, err := runCode(t, s, code, dir, service, nodeModules)
	if err != nil {
		d.logOutput(t)
		t.Fatalf("%s failed: %v\nthe snippet as run:\n%s\nits output:\n%s", s, err, code, out)
	}

	select {
	case r := <-got:
		want := []byte(s.attr["payload"])
		if !bytes.Equal(r.body, want) {
			t.Errorf("%s: the task's payload is\n\t%q\nwant, as its marker says,\n\t%q", s, r.body, want)
		}
		if r.typ != s.attr["type"] {
			t.Errorf("%s: the task's type is %q, want %q", s, r.typ, s.attr["type"])
		}
		if id := s.attr["id"]; id != "" && r.id != id {
			t.Errorf("%s: the task's ID is %q, want %q", s, r.id, id)
		}
		if s.kind == "api" && !apiResultShown.Match(out) {
			t.Errorf("%s: the snippet's output does not show the task done with its result %s (the test's http executor's answer):\n%s", s, apiResult, out)
		}
		t.Logf("the daemon ran task %s of type %s with payload %q; the snippet's output:\n%s", r.id, r.typ, r.body, out)
	case <-time.After(30 * time.Second):
		d.logOutput(t)
		t.Fatalf("%s: the daemon ran no task within 30s of the snippet's end; the snippet's output:\n%s", s, out)
	}
	if _, ok := s.attr["resend"]; ok {
		// The README promises that sending the same task again stores it
		// once: run the snippet again, after the task ran, and give a
		// second task, which would be ready at once, a second to show up.
		if out, err := runCode(t, s, code, dir, service, nodeModules); err != nil {
			d.logOutput(t)
			t.Fatalf("%s failed when run again: %v\nits output:\n%s", s, err, out)
		}
		select {
		case r := <-got:
			t.Errorf("%s: run again, the same task ran a second time (%s)", s, r.id)
		case <-time.After(time.Second):
		}
	}
	if err := d.stop(30 * time.Second); err != nil {
		d.logOutput(t)
		t.Errorf("peonify run after SIGTERM: %v", err)
	}
	if n := len(got); n > 0 {
		t.Errorf("%s: the daemon ran %d more tasks after the first; want one", s, n)
	}
	if t.Failed() {
		d.logOutput(t)
	}
}

// daemonConfig writes the config of `peonify run` for s.
func daemonConfig(s snippet, service string, fresh map[string]string, suffix, recv, dir string, adminPort, intakePort int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `processor:
  workers: 2
  shutdown_grace: 5s
  retry: {max_attempts: 3, min_backoff: 100ms, max_backoff: 1s}
log: {level: debug}
http:
  listen: 127.0.0.1:%d
  dashboard: {enabled: false}
tasks:
  %s: {executor: http, url: %s}
streams:
`, adminPort, q(s.attr["type"]), q(recv))
	switch s.kind {
	case "postgres":
		fmt.Fprintf(&b, "  - {name: store, kind: postgres, url: %s, queue: %s, migrate: true}\n", q(service), q(fresh["queue"]))
	case "redis":
		fmt.Fprintf(&b, "  - {name: store, kind: redis, url: %s, queue: %s}\n", q(service), q(fresh["queue"]))
	case "amqp":
		fmt.Fprintf(&b, "  - {name: store, kind: amqp, url: %s, queue: %s}\n", q(service), q(fresh["queue"]))
	case "nats":
		fmt.Fprintf(&b, "  - {name: store, kind: nats, url: %s, stream: %s, subject: %s, memory_storage: true}\n",
			q(service), q(natsStream(suffix)), q(fresh["subject"]))
	default: // intakes, in front of a SQLite store
		fmt.Fprintf(&b, "  - {name: store, kind: sqlite, path: %s}\n", q(filepath.Join(dir, "tasks.db")))
	}
	switch s.kind {
	case "api":
		fmt.Fprintf(&b, "api:\n  tokens:\n    - {name: snippettest, secret: %s, scopes: [enqueue, read]}\n", q(apiToken))
	case "mqtt":
		fmt.Fprintf(&b, "  - {name: intake, kind: mqtt, store: store, url: %s, client_id: %s, session_expiry: 1s, routes: {%s: %s}}\n",
			q(service), q("snippettest-"+suffix), q(fresh["topic"]), q(s.attr["type"]))
	case "websocket":
		fmt.Fprintf(&b, "  - {name: intake, kind: websocket, store: store, listen: 127.0.0.1:%d, path: %s}\n", intakePort, q(fresh["path"]))
	case "webhook":
		route := fmt.Sprintf("path: %s, type: %s", q(fresh["path"]), q(s.attr["type"]))
		if sec := s.attr["secret"]; sec != "" {
			route += fmt.Sprintf(", verify: hmac, secrets: [%s], header: %s", q(sec), q(s.attr["header"]))
			if p := s.attr["prefix"]; p != "" {
				route += ", prefix: " + q(p)
			}
			if h := s.attr["id_header"]; h != "" {
				route += ", id_header: " + q(h)
			}
		} else {
			route += ", verify: none"
		}
		fmt.Fprintf(&b, "  - {name: intake, kind: webhook, store: store, listen: 127.0.0.1:%d, routes: [{%s}]}\n", intakePort, route)
	}
	return b.String()
}

// q quotes s for the config file: a YAML double-quoted string, with $
// doubled so that it is not expanded.
func q(s string) string {
	b, _ := json.Marshal(strings.ReplaceAll(s, "$", "$$"))
	return string(b)
}

func natsStream(suffix string) string { return "SNIPPET_" + strings.ToUpper(suffix) }

// runCode runs a snippet's code with its runner and returns its output.
func runCode(t *testing.T, s snippet, code, dir, service, nodeModules string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	write := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(code), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	switch s.runner() {
	case "python":
		cmd = exec.CommandContext(ctx, python, write("snippet.py"))
	case "node":
		// An ES module finds its packages in the node_modules next to it.
		if err := os.Symlink(nodeModules, filepath.Join(dir, "node_modules")); err != nil && !errors.Is(err, os.ErrExist) {
			t.Fatal(err)
		}
		cmd = exec.CommandContext(ctx, "node", write("snippet.mjs"))
	case "psql":
		cmd = exec.CommandContext(ctx, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", service, "-f", write("snippet.sql"))
	case "bash":
		cmd = exec.CommandContext(ctx, "bash", "-e", write("snippet.sh"))
	case "redis-cli":
		cmd = exec.CommandContext(ctx, "redis-cli", "-u", service)
		cmd.Stdin = strings.NewReader(code)
	default:
		t.Fatalf("%s: no runner %q", s, s.runner())
	}
	cmd.Dir = dir
	if s.kind == "api" {
		cmd.Env = append(os.Environ(), "PEONIFY_API_TOKEN="+apiToken)
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err == nil && s.runner() == "redis-cli" {
		// redis-cli reading commands from stdin prints errors and goes on.
		for l := range strings.SplitSeq(string(out), "\n") {
			if strings.HasPrefix(l, "ERR") || strings.HasPrefix(l, "(error)") || strings.HasPrefix(l, "WRONGTYPE") || strings.HasPrefix(l, "NOSCRIPT") {
				err = errors.New("redis answered an error: " + l)
			}
		}
	}
	return out, err
}

// daemon is a `peonify run` child process.
type daemon struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // once done is closed
	once sync.Once
}

func startDaemon(t *testing.T, bin, cfg, dir string) *daemon {
	t.Helper()
	d := &daemon{out: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(bin, "run", "-c", cfg)
	d.cmd.Dir = dir
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.done
	})
	return d
}

// waitReady waits until /readyz answers 200 and the intake's port, if
// any, takes connections.
func (d *daemon) waitReady(t *testing.T, adminPort, intakePort int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: time.Second}
	last := ""
	for {
		select {
		case <-d.done:
			d.logOutput(t)
			t.Fatalf("peonify run exited before it was ready: %v", d.err)
		default:
		}
		ready := false
		if resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", adminPort)); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ready, last = resp.StatusCode == http.StatusOK, string(b)
		} else {
			last = err.Error()
		}
		if ready && intakePort != 0 {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", intakePort), time.Second)
			if ready = err == nil; ready {
				c.Close()
			}
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			d.logOutput(t)
			t.Fatalf("peonify run not ready within 30s: %s", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop(within time.Duration) error {
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-d.done:
		return d.err
	case <-time.After(within):
		return fmt.Errorf("still running %v after SIGTERM", within)
	}
}

func (d *daemon) logOutput(t *testing.T) {
	d.once.Do(func() { t.Logf("peonify run's output:\n%s", d.out.String()) })
}

// cleanupServer removes what a run left on a shared server: NATS streams,
// RabbitMQ queues and Redis keys (Postgres deletes acked rows itself, and
// an MQTT session expires a second after the daemon leaves).
func cleanupServer(t *testing.T, s snippet, service string, fresh map[string]string, suffix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch s.kind {
	case "nats":
		nc, err := nats.Connect(service)
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		for _, name := range []string{natsStream(suffix), natsStream(suffix) + "_DEAD"} {
			if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Logf("cleanup: deleting stream %s: %v", name, err)
			}
		}
	case "amqp":
		conn, err := amqp.Dial(service)
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		for _, name := range []string{fresh["queue"], fresh["queue"] + ".dead"} {
			if _, err := ch.QueueDelete(name, false, false, false); err != nil {
				t.Logf("cleanup: deleting queue %s: %v", name, err)
				return
			}
		}
	case "redis":
		opt, err := redis.ParseURL(service)
		if err != nil {
			return
		}
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		keys, err := rdb.Keys(ctx, "peonify:{"+fresh["queue"]+"}:*").Result()
		if err == nil && len(keys) > 0 {
			err = rdb.Del(ctx, keys...).Err()
		}
		if err != nil {
			t.Logf("cleanup: %v", err)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
