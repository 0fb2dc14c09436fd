package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/executor"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

const fullConfig = `
processor:
  workers: 8
  queue_size: 16
  task_timeout: 2m
  shutdown_grace: 10s
  retry:
    max_attempts: 5
    min_backoff: 500ms
    max_backoff: 10m
    jitter: 0.1
log:
  level: debug
  format: json
streams:
  - name: local
    kind: sqlite
    path: ${DATA_DIR}/peonify.db
    lease: 1m
    synchronous: normal
  - kind: postgres
    url: postgres://app:${PGPASSWORD}@db:5432/app
    queue: emails
    weight: 3
    migrate: true
tasks:
  email:
    executor: http
    url: ${MAILER_URL:-http://mailer.internal/send}
    headers:
      Authorization: Bearer ${TOKEN}
    timeout: 5s
  thumbnail:
    executor: exec
    command: ["sh", "-c", "echo $$HOME"]
    env: {QUALITY: "80"}
    dead_exit_codes: [65]
periodic:
  - name: nightly
    spec: "0 3 * * *"
    type: thumbnail
    stream: local
    payload: {size: 64, tags: [a, b]}
  - name: ping
    spec: "@every 1m"
    type: email
    stream: postgres/emails
    payload: '{"raw": true}'
`

func TestParseFullConfig(t *testing.T) {
	c, err := parseConfig([]byte(fullConfig), env(map[string]string{"DATA_DIR": "/var/lib/peonify", "PGPASSWORD": "pw", "TOKEN": "t0k"}))
	if err != nil {
		t.Fatal(err)
	}
	p := c.processor
	if p.Workers != 8 || p.QueueSize != 16 || p.TaskTimeout != 2*time.Minute || p.ShutdownGrace != 10*time.Second ||
		p.Retry.MaxAttempts != 5 || p.Retry.MinBackoff != 500*time.Millisecond || p.Retry.MaxBackoff != 10*time.Minute || p.Retry.Jitter != 0.1 {
		t.Errorf("processor config %+v", p)
	}
	if c.log.Level != "debug" || c.log.Format != "json" {
		t.Errorf("log config %+v", c.log)
	}
	sq, ok := c.streams[0].(*sqliteSpec)
	if !ok || sq.Common.Name != "local" || sq.Path != "/var/lib/peonify/peonify.db" || sq.Lease != duration(time.Minute) || sq.Common.Weight != 1 {
		t.Errorf("sqlite stream %+v", c.streams[0])
	}
	pg, ok := c.streams[1].(*postgresSpec)
	if !ok || pg.Common.Name != "postgres/emails" || pg.URL != "postgres://app:pw@db:5432/app" || pg.Queue != "emails" ||
		pg.Schema != "public" || pg.Common.Weight != 3 || !pg.Migrate {
		t.Errorf("postgres stream %+v", c.streams[1])
	}
	h, ok := c.tasks["email"].(*httpTask)
	if !ok || h.URL != "http://mailer.internal/send" || h.Headers["Authorization"] != "Bearer t0k" || h.Timeout != 5*time.Second {
		t.Errorf("email task %+v", c.tasks["email"])
	}
	x, ok := c.tasks["thumbnail"].(*execTask)
	if !ok || strings.Join(x.Command, "|") != "sh|-c|echo $HOME" || x.Env["QUALITY"] != "80" || len(x.DeadExitCodes) != 1 {
		t.Errorf("thumbnail task %+v", c.tasks["thumbnail"])
	}
	if got := string(c.periodic[0].Payload); got != `{"size":64,"tags":["a","b"]}` {
		t.Errorf("mapping payload became %s", got)
	}
	if got := string(c.periodic[1].Payload); got != `{"raw": true}` {
		t.Errorf("string payload became %s", got)
	}
}

// base is a valid config that the error cases change.
const base = `
streams:
  - kind: sqlite
    path: peonify.db
tasks:
  email:
    executor: http
    url: http://mailer.internal/send
`

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"empty file", ``, "the file is empty"},
		{"not a mapping", `- a`, "must be a mapping"},
		{"syntax", "streams: [\n", "YAML syntax"},
		{"duplicate key", base + "streams: []\n", "YAML syntax"},
		{"unknown top-level field", base + "proccessor: {}\n",
			`proccessor: unknown field (fields of the top level: processor, log, streams, tasks, periodic)`},
		{"unknown nested field", base + "processor:\n  retry:\n    attempts: 3\n",
			`processor.retry.attempts: unknown field (fields of processor.retry: max_attempts, min_backoff, max_backoff, jitter)`},
		{"no streams", "tasks: {a: {executor: http, url: http://x}}\n", "streams: required"},
		{"streams not a list", "streams: {kind: sqlite}\n", "streams: want a list, got a mapping"},
		{"no kind", "streams:\n  - path: x.db\n", `streams[0].kind: required: one of "postgres", "sqlite"`},
		{"unknown kind", "streams:\n  - kind: kafka\n", `streams[0].kind: unknown stream kind "kafka": use one of "postgres", "sqlite"`},
		{"unknown stream field", "streams:\n  - kind: sqlite\n    pth: x.db\n",
			`streams[0].pth: unknown field (fields of streams[0]: name, kind, weight, path, lease, keep_done, keep_dead, synchronous, busy_timeout)`},
		{"sqlite without path", "streams:\n  - kind: sqlite\n", "streams[0].path: required"},
		{"postgres without url", "streams:\n  - {kind: sqlite, path: x.db}\n  - kind: postgres\n    queue: q\n", "streams[1].url: required"},
		{"bad postgres url", "streams:\n  - kind: postgres\n    url: 'mysql://x:y'\n", "streams[0].url: not a Postgres URL"},
		{"bad schema", "streams:\n  - kind: postgres\n    url: postgres://db/app\n    schema: Bad-Name\n", `streams[0].schema: "Bad-Name" is not a lower-case SQL identifier`},
		{"duplicate stream names", "streams:\n  - {kind: sqlite, path: x.db}\n  - kind: sqlite\n    path: other.db\n", `streams[1].name: "sqlite" is also the name of streams[0]`},
		{"negative weight", "streams:\n  - kind: sqlite\n    path: x.db\n    weight: -1\n", "streams[0].weight: must be at least 1"},
		{"bad synchronous", "streams:\n  - kind: sqlite\n    path: x.db\n    synchronous: off\n", `streams[0].synchronous: "off" is not a setting`},
		{"unset variable", "streams:\n  - kind: postgres\n    url: ${PG_URL}\n",
			"streams[0].url: environment variable PG_URL is not set: export it, or write ${PG_URL:-default}"},
		{"bad variable reference", "streams:\n  - kind: sqlite\n    path: ${1X}\n", "streams[0].path: ${1X} is not a valid variable reference"},
		{"bad duration", base + "processor:\n  task_timeout: 10q\n", `processor.task_timeout: "10q" is not a duration`},
		{"duration without unit", base + "processor:\n  task_timeout: 30\n", "processor.task_timeout: 30 has no unit"},
		{"not a number", base + "processor:\n  workers: many\n", `processor.workers: want a whole number, got "many"`},
		{"negative workers", base + "processor:\n  workers: -1\n", "processor.workers: must not be negative"},
		{"jitter above 1", base + "processor:\n  retry: {jitter: 2}\n", "processor.retry.jitter: must be at most 1"},
		{"bad log level", base + "log: {level: loud}\n", `log.level: "loud" is not a level`},
		{"no tasks", "streams:\n  - kind: sqlite\n    path: x.db\n", "tasks: required"},
		{"no executor", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  email: {url: http://x}\n", `tasks.email.executor: required: one of "exec", "http"`},
		{"unknown executor", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  email: {executor: smtp}\n", `tasks.email.executor: unknown executor "smtp"`},
		{"http without url", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  email: {executor: http}\n", "tasks.email.url: required"},
		{"unknown task field", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  email: {executor: http, url: 'http://x', retries: 3}\n",
			"tasks.email.retries: unknown field (fields of tasks.email: executor, url, method, headers, content_type, timeout)"},
		{"missing program", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  thumb: {executor: exec, command: [no-such-program-peonify]}\n",
			`tasks.thumb.command: program "no-such-program-peonify" not found in PATH`},
		{"command and shell", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  thumb: {executor: exec, command: [sh], shell: 'true'}\n", "tasks.thumb.shell: set either command"},
		{"command as a string", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  thumb: {executor: exec, command: ./thumb.sh}\n", "tasks.thumb.command: want a list"},
		{"bad stdout", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  thumb: {executor: exec, shell: 'true', stdout: file}\n", `tasks.thumb.stdout: "file" is not a choice`},
		{"periodic without spec", base + "periodic:\n  - {name: a, type: email}\n", "periodic[0].spec: required"},
		{"periodic bad spec", base + "periodic:\n  - {name: a, spec: 'every day', type: email}\n", "periodic[0].spec: "},
		{"periodic unknown type", base + "periodic:\n  - {name: a, spec: '@daily', type: sms}\n", `periodic[0].type: "sms" is not a task type of this file (tasks: "email")`},
		{"periodic unknown stream", base + "periodic:\n  - {name: a, spec: '@daily', type: email, stream: pg}\n", `periodic[0].stream: "pg" is not the name of a stream`},
		{"periodic duplicate name", base + "periodic:\n  - {name: a, spec: '@daily', type: email}\n  - {name: a, spec: '@hourly', type: email}\n", `periodic[1].name: "a" is also the name of periodic[0]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.yaml), env(nil))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n  %v\nwant it to contain:\n  %s", err, tc.want)
			}
		})
	}
}

func TestConfigErrorShowsFileAndLine(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "peonify.yaml", "streams:\n  - kind: sqlite\n    path: x.db\n    leese: 1m\ntasks: {}\n")
	_, err := loadConfig(p, env(nil))
	var ce *configError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *configError", err)
	}
	want := p + ":4:5: streams[0].leese: unknown field"
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want it to start with %q", err, want)
	}
	_, err = loadConfig(filepath.Join(dir, "missing.yaml"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

func TestExpandEnv(t *testing.T) {
	c, err := parseConfig([]byte(`
streams:
  - kind: sqlite
    path: "${DIR:-/tmp}/a$$b-${EMPTY:-dflt}-${SET}"
tasks:
  email:
    executor: http
    url: http://x/${SET}
  thumb:
    executor: exec
    shell: 'echo "$$HOME"'
    env: {"${KEY}": "kept as written"}
`), env(map[string]string{"SET": "v", "EMPTY": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.streams[0].(*sqliteSpec).Path; got != "/tmp/a$b-dflt-v" {
		t.Errorf("path %q", got)
	}
	if got := c.tasks["email"].(*httpTask).URL; got != "http://x/v" {
		t.Errorf("url %q", got)
	}
	x := c.tasks["thumb"].(*execTask)
	if _, ok := x.Env["${KEY}"]; !ok || x.Shell != `echo "$HOME"` {
		t.Errorf("exec task %+v: want the key kept as written and $$ as $", x.ExecConfig)
	}
}

// The executors' own validation errors come out under the task's path.
func TestExecutorFieldErrors(t *testing.T) {
	err := fieldOf("tasks.x", &executor.FieldError{Field: "url", Reason: "required"})
	if err.Error() != "tasks.x.url: required" {
		t.Errorf("got %q", err)
	}
}

// The README's complete config and the example file are valid.
func TestDocumentedConfigsParse(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- config-reference: the tests parse this block -->\n```yaml\n")
	if !ok {
		t.Fatal("README.md lost its config-reference block")
	}
	block, _, _ = strings.Cut(block, "```")
	// The example's program and directory are those of a real server.
	block = strings.NewReplacer("/usr/local/bin/thumbnail", "sh", "/srv/images", t.TempDir()).Replace(block)
	c, err := parseConfig([]byte(block), env(map[string]string{"PGPASSWORD": "pw", "MAILER_TOKEN": "t"}))
	if err != nil {
		t.Fatalf("the README's config: %v", err)
	}
	if len(c.streams) != 2 || len(c.tasks) != 2 || len(c.periodic) != 1 {
		t.Errorf("the README's config defines %s", c.summary())
	}

	example, err := os.ReadFile(filepath.Join("..", "..", "examples", "peonify.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseConfig(example, env(nil)); err != nil {
		t.Fatalf("examples/peonify.yaml: %v", err)
	}
}

// Every field of the config types is in the README.
func TestREADMEDocumentsEveryField(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{fileConfig{}, processorConfig{}, retryConfig{}, logConfig{}, periodicEntry{},
		sqliteSpec{}, postgresSpec{}, httpTask{}, execTask{}} {
		for _, name := range yamlNames(reflect.TypeOf(v)) {
			if !regexp.MustCompile(`(?m)^[ #-]*` + name + `:`).Match(readme) {
				t.Errorf("README.md does not show the field %s of %T", name, v)
			}
		}
	}
}
