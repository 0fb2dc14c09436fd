package main

import (
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/internal/executor"
	"github.com/peonify/peonify/streams/webhookstream"
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
  shutdown_timeout: 15s
  store_timeout: 3s
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
    stream: postgres:emails
    payload: '{"raw": true}'
`

func TestParseFullConfig(t *testing.T) {
	c, err := parseConfig([]byte(fullConfig), env(map[string]string{"DATA_DIR": "/var/lib/peonify", "PGPASSWORD": "pw", "TOKEN": "t0k"}))
	if err != nil {
		t.Fatal(err)
	}
	p := c.processor
	if p.Workers != 8 || p.QueueSize != 16 || p.TaskTimeout != 2*time.Minute || p.ShutdownGrace != 10*time.Second ||
		p.ShutdownTimeout != 15*time.Second || p.StoreTimeout != 3*time.Second ||
		p.Retry.MaxAttempts != 5 || p.Retry.MinBackoff != 500*time.Millisecond || p.Retry.MaxBackoff != 10*time.Minute || p.Retry.Jitter != 0.1 {
		t.Errorf("processor config %+v", p)
	}
	if c.log.Level != "debug" || c.log.Format != "json" {
		t.Errorf("log config %+v", c.log)
	}
	sq, ok := c.streams[0].(*sqliteSpec)
	if !ok || sq.Common.Name != "local" || sq.Path != "/var/lib/peonify/peonify.db" || sq.Lease != yamlfile.Duration(time.Minute) || sq.Common.Weight != 1 {
		t.Errorf("sqlite stream %+v", c.streams[0])
	}
	pg, ok := c.streams[1].(*postgresSpec)
	if !ok || pg.Common.Name != "postgres:emails" || pg.URL != "postgres://app:pw@db:5432/app" || pg.Queue != "emails" ||
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
			`proccessor: unknown field (fields of the top level: processor, log, streams, tasks, periodic, limits, http, tracing, api)`},
		{"unknown nested field", base + "processor:\n  retry:\n    attempts: 3\n",
			`processor.retry.attempts: unknown field (fields of processor.retry: max_attempts, min_backoff, max_backoff, jitter)`},
		{"no streams", "tasks: {a: {executor: http, url: http://x}}\n", "streams: required"},
		{"streams not a list", "streams: {kind: sqlite}\n", "streams: want a list, got a mapping"},
		{"no kind", "streams:\n  - path: x.db\n", `streams[0].kind: required: one of "amqp", "mqtt", "nats", "postgres", "redis", "sqlite", "webhook", "websocket"`},
		{"unknown kind", "streams:\n  - kind: kafka\n", `streams[0].kind: unknown stream kind "kafka": use one of "amqp", "mqtt", "nats", "postgres", "redis", "sqlite", "webhook", "websocket"`},
		{"unknown stream field", "streams:\n  - kind: sqlite\n    pth: x.db\n",
			`streams[0].pth: unknown field (fields of streams[0]: name, kind, weight, path, lease, keep_done, keep_dead, result_retention, synchronous, busy_timeout)`},
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
		{"grace past the shutdown", base + "processor:\n  shutdown_grace: 30s\n  shutdown_timeout: 20s\n", "processor.shutdown_grace: "},
		{"not a number", base + "processor:\n  workers: many\n", `processor.workers: want a whole number, got "many"`},
		{"negative workers", base + "processor:\n  workers: -1\n", "processor.workers: must not be negative"},
		{"jitter above 1", base + "processor:\n  retry: {jitter: 2}\n", "processor.retry.jitter: must be at most 1"},
		{"bad log level", base + "log: {level: loud}\n", `log.level: "loud" is not a level`},
		{"no tasks", "streams:\n  - kind: sqlite\n    path: x.db\n", "tasks: required"},
		{"no executor", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  email: {url: http://x}\n", `tasks.email.executor: required: one of "exec", "http"`},
		{"unknown executor", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  email: {executor: smtp}\n", `tasks.email.executor: unknown executor "smtp"`},
		{"http without url", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  email: {executor: http}\n", "tasks.email.url: required"},
		{"unknown task field", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  email: {executor: http, url: 'http://x', retries: 3}\n",
			"tasks.email.retries: unknown field (fields of tasks.email: executor, url, method, headers, content_type, timeout, discard_result)"},
		{"missing program", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  thumb: {executor: exec, command: [no-such-program-peonify]}\n",
			`tasks.thumb.command: program "no-such-program-peonify" not found in PATH`},
		{"command and shell", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  thumb: {executor: exec, command: [sh], shell: 'true'}\n", "tasks.thumb.shell: set either command"},
		{"command as a string", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  thumb: {executor: exec, command: ./thumb.sh}\n", "tasks.thumb.command: want a list"},
		{"bad stdout", "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  thumb: {executor: exec, shell: 'true', stdout: file}\n", `tasks.thumb.stdout: "file" is not a choice`},
		{"periodic without spec", base + "periodic:\n  - {name: a, type: email}\n", "periodic[0].spec: required"},
		{"periodic bad spec", base + "periodic:\n  - {name: a, spec: 'every day', type: email}\n", "periodic[0].spec: "},
		{"periodic unknown type", base + "periodic:\n  - {name: a, spec: '@daily', type: sms}\n", `periodic[0].type: "sms" is not a task type of this file (tasks: "email")`},
		{"periodic unknown stream", base + "periodic:\n  - {name: a, spec: '@daily', type: email, stream: pg}\n", `periodic[0].stream: "pg" is not the name of a stream`},
		{"webhook without listen", hook(""), "streams[1].listen: required"},
		{"webhook bad listen", hook("listen: '8080'"), `streams[1].listen: "8080" is not host:port`},
		{"webhook without routes", "streams:\n  - {kind: sqlite, path: x.db}\n  - {kind: webhook, listen: ':8080'}\n" + tasksOnly, "streams[1].routes: required"},
		{"webhook route without verify", hookRoute("{path: /gh, type: email}"), "streams[1].routes[0].verify: required: github, stripe, standard"},
		{"webhook bad verify", hookRoute("{path: /gh, type: email, verify: md5, secrets: [s]}"), `streams[1].routes[0].verify: "md5" is not a scheme`},
		{"webhook route without path", hookRoute("{type: email, verify: none}"), "streams[1].routes[0].path: required"},
		{"webhook relative path", hookRoute("{path: gh, type: email, verify: none}"), `streams[1].routes[0].path: "gh" must start with /`},
		{"webhook route without type", hookRoute("{path: /gh, verify: none}"), "streams[1].routes[0].type: required"},
		{"webhook unknown type", hookRoute("{path: /gh, type: sms, verify: none}"), `streams[1].routes[0].type: "sms" is not a task type of this file (tasks: "email")`},
		{"webhook without secrets", hookRoute("{path: /gh, type: email, verify: github}"), "streams[1].routes[0].secrets: required with verify: github"},
		{"webhook empty secret", hookRoute("{path: /gh, type: email, verify: github, secrets: ['${EMPTY:-}']}"), "streams[1].routes[0].secrets[0]: is empty"},
		{"webhook none with secrets", hookRoute("{path: /gh, type: email, verify: none, secrets: [s]}"), "streams[1].routes[0].secrets: a route with verify: none checks no signature"},
		{"webhook hmac without header", hookRoute("{path: /gh, type: email, verify: hmac, secrets: [s]}"), "streams[1].routes[0].header: required with verify: hmac"},
		{"webhook hmac bad encoding", hookRoute("{path: /gh, type: email, verify: hmac, secrets: [s], header: X-Sig, encoding: b32}"), `streams[1].routes[0].encoding: "b32" is not an encoding`},
		{"webhook header on github", hookRoute("{path: /gh, type: email, verify: github, secrets: [s], header: X-Sig}"), "streams[1].routes[0].header: applies to verify: hmac only"},
		{"webhook tolerance on github", hookRoute("{path: /gh, type: email, verify: github, secrets: [s], tolerance: 1m}"), "streams[1].routes[0].tolerance: applies to verify: stripe, standard and slack only"},
		{"webhook standard secret", hookRoute("{path: /sw, type: email, verify: standard, secrets: [whsec_c2VjcmV0, 'whsec_???']}"), `streams[1].routes[0].secrets[1]: is not "whsec_" followed by a base64 key`},
		{"webhook sync_timeout without sync", hookRoute("{path: /gh, type: email, verify: none, sync_timeout: 5s}"), "streams[1].routes[0].sync_timeout: applies to synchronous routes only"},
		{"webhook bad header name", hookRoute("{path: /gh, type: email, verify: none, headers: ['a b']}"), `streams[1].routes[0].headers[0]: "a b" is not a header name`},
		{"webhook duplicate path", hookRoute("{path: /gh, type: email, verify: none}\n      - {path: /gh, type: email, verify: none}"), `streams[1].routes[1].path: "/gh" is also the path of routes[0]`},
		{"webhook bad size", hook("listen: ':8080'\n    max_body: lots"), `streams[1].max_body: "lots" is not a size`},
		{"webhook negative timeout", hook("listen: ':8080'\n    body_timeout: -1s"), "streams[1].body_timeout: must not be negative"},
		{"webhook weight", hook("listen: ':8080'\n    weight: 2"), "streams[1].weight: unknown field (fields of streams[1]: name, kind, store, key_from, listen, tls_cert, tls_key, max_body"},
		{"webhook tls_cert without key", hook("listen: ':8443'\n    tls_cert: cert.pem"), "streams[1].tls_key: required with tls_cert"},
		{"webhook unknown store", hook("listen: ':8080'\n    store: nowhere"), `streams[1].store: "nowhere" is not the name of a stream (stores: "sqlite")`},
		{"webhook store required", "streams:\n  - {kind: sqlite, path: x.db}\n  - {kind: sqlite, name: b, path: b.db}\n  - {kind: webhook, listen: ':8080', routes: [{path: /a, type: email, verify: none}]}\n" + tasksOnly,
			`streams[2].store: required when there are several stores: name the stream the intake stores its tasks in ("sqlite", "b")`},
		{"bad key_from", "streams:\n  - {kind: sqlite, path: x.db}\n  - {kind: websocket, listen: ':8081', key_from: 'tenant'}\n" + tasksOnly,
			`streams[1].key_from: "tenant" is not header:NAME or json:PATH`},
		{"store is an intake", "streams:\n  - {kind: sqlite, path: x.db}\n  - {kind: websocket, listen: ':8081'}\n  - {kind: webhook, listen: ':8080', store: websocket, routes: [{path: /a, type: email, verify: none}]}\n" + tasksOnly,
			`streams[2].store: "websocket" is an intake, not a store`},
		{"only intakes", "streams:\n  - {kind: websocket, listen: ':8081'}\n" + tasksOnly, "streams: no store to run tasks from"},
		{"same listen address", "streams:\n  - {kind: sqlite, path: x.db}\n  - {kind: websocket, listen: ':8081'}\n  - {kind: webhook, listen: ':8081', routes: [{path: /a, type: email, verify: none}]}\n" + tasksOnly,
			`streams[2].listen: ":8081" is also the address of streams[1].listen`},
		{"websocket short token", "streams:\n  - {kind: sqlite, path: x.db}\n  - {kind: websocket, listen: ':8081', bearer_tokens: [short]}\n" + tasksOnly, "streams[1].bearer_tokens[0]: is 5 bytes long: use at least 16"},
		{"websocket any origin", "streams:\n  - {kind: sqlite, path: x.db}\n  - {kind: websocket, listen: ':8081', origins: [a.example.com, '*']}\n" + tasksOnly, "streams[1].origins[1]: must name hosts"},
		{"websocket relative path", "streams:\n  - {kind: sqlite, path: x.db}\n  - {kind: websocket, listen: ':8081', path: ws}\n" + tasksOnly, `streams[1].path: "ws" must start with /`},
		{"websocket unknown field", "streams:\n  - {kind: sqlite, path: x.db}\n  - {kind: websocket, listen: ':8081', token: x}\n" + tasksOnly, "streams[1].token: unknown field (fields of streams[1]: name, kind, store, key_from, listen, tls_cert, tls_key, path, origins"},
		{"mqtt without url", mqtt("client_id: a\n    routes: {a/b: email}"), "streams[1].url: required"},
		{"mqtt url and servers", mqtt("url: mqtt://h\n    servers: [mqtt://h]\n    client_id: a\n    routes: {a/b: email}"), "streams[1].servers: set either url or servers"},
		{"mqtt bad scheme", mqtt("url: http://h\n    client_id: a\n    routes: {a/b: email}"), `streams[1].url: scheme "http" is not one of`},
		{"mqtt bad server", mqtt("servers: [mqtt://h, 'x']\n    client_id: a\n    routes: {a/b: email}"), `streams[1].servers[1]: "x" is not a URL with a host`},
		{"mqtt without client_id", mqtt("url: mqtt://h\n    routes: {a/b: email}"), "streams[1].client_id: required"},
		{"mqtt without routes", mqtt("url: mqtt://h\n    client_id: a"), "streams[1].routes: required"},
		{"mqtt overlapping routes", mqtt("url: mqtt://h\n    client_id: a\n    routes: {a/+: email, a/b: email}"), `streams[1].routes: filters "a/+" and "a/b" both match some topics`},
		{"mqtt unknown type", mqtt("url: mqtt://h\n    client_id: a\n    routes: {a/b: sms}"), `streams[1].routes["a/b"]: "sms" is not a task type of this file`},
		{"mqtt bad share group", mqtt("url: mqtt://h\n    client_id: a\n    routes: {a/b: email}\n    share_group: a/b"), `streams[1].share_group: "a/b" must not contain /, + or #`},
		{"mqtt short session", mqtt("url: mqtt://h\n    client_id: a\n    routes: {a/b: email}\n    session_expiry: 10ms"), "streams[1].session_expiry: must be at least 1s"},
		{"mqtt tls_cert without key", mqtt("url: mqtts://h\n    client_id: a\n    routes: {a/b: email}\n    tls_cert: c.pem"), "streams[1].tls_key: set tls_cert and tls_key together"},
		{"mqtt missing ca", mqtt("url: mqtts://h\n    client_id: a\n    routes: {a/b: email}\n    tls_ca: /no/such/ca.pem"), "streams[1].tls_ca: open /no/such/ca.pem"},
		{"periodic into an intake", "streams:\n  - {kind: sqlite, path: x.db}\n  - {kind: websocket, listen: ':8081'}\n" + tasksOnly + "periodic:\n  - {name: a, spec: '@daily', type: email, stream: websocket}\n",
			`periodic[0].stream: "websocket" is a websocket intake, which stores into another stream: name a store ("sqlite")`},
		{"http bad listen", base + "http: {listen: 'localhost'}\n", `http.listen: "localhost" is not host:port`},
		{"http unknown field", base + "http: {listen: ':9090', port: 9090}\n", "http.port: unknown field (fields of http: listen, tls_cert, tls_key, dashboard, store_metrics_interval)"},
		{"dashboard without listen", base + "http: {dashboard: {token: 0123456789abcdef}}\n", "http.listen: required with http.dashboard"},
		{"dashboard open to all", base + "http: {listen: '0.0.0.0:9090'}\n", "http.dashboard.token: required when http.listen (0.0.0.0:9090) can be reached from other machines"},
		{"dashboard user without password", base + "http: {listen: ':9090', dashboard: {username: ops}}\n", "http.dashboard.password: required with username"},
		{"redis without url", "streams:\n  - {kind: redis, queue: q}\n" + tasksOnly, "streams[0].url: required"},
		{"bad redis url", "streams:\n  - {kind: redis, url: 'http://x'}\n" + tasksOnly, "streams[0].url: not a Redis URL"},
		{"redis queue with braces", "streams:\n  - {kind: redis, url: 'redis://x', queue: 'a{b}'}\n" + tasksOnly, `streams[0].queue: "a{b}" contains '{' or '}'`},
		{"redis short lease", "streams:\n  - {kind: redis, url: 'redis://x', lease: 10us}\n" + tasksOnly, "streams[0].lease: must be at least 1ms"},
		{"redis negative pool", "streams:\n  - {kind: redis, url: 'redis://x', pool_size: -1}\n" + tasksOnly, "streams[0].pool_size: must not be negative"},
		{"nats without url", "streams:\n  - {kind: nats}\n" + tasksOnly, "streams[0].url: required"},
		{"nats bad stream name", "streams:\n  - {kind: nats, url: 'nats://x', stream: 'a.b'}\n" + tasksOnly, "streams[0].stream: "},
		{"nats wildcard subject", "streams:\n  - {kind: nats, url: 'nats://x', subject: 'tasks.*'}\n" + tasksOnly, "streams[0].subject: "},
		{"nats short ack wait", "streams:\n  - {kind: nats, url: 'nats://x', ack_wait: 10ms}\n" + tasksOnly, "streams[0].ack_wait: must be at least 100ms"},
		{"nats replicas", "streams:\n  - {kind: nats, url: 'nats://x', replicas: 7}\n" + tasksOnly, "streams[0].replicas: must be between 1 and 5"},
		{"nats missing credentials", "streams:\n  - {kind: nats, url: 'nats://x', credentials: /no/such.creds}\n" + tasksOnly, "streams[0].credentials: stat /no/such.creds"},
		{"amqp without url", "streams:\n  - {kind: amqp, queue: q}\n" + tasksOnly, "streams[0].url: required"},
		{"bad amqp url", "streams:\n  - {kind: amqp, url: 'http://x'}\n" + tasksOnly, "streams[0].url: "},
		{"amqp reserved queue", "streams:\n  - {kind: amqp, url: 'amqp://x', queue: amq.x}\n" + tasksOnly, `streams[0].queue: "amq.x" starts with "amq."`},
		{"amqp priority and quorum", "streams:\n  - {kind: amqp, url: 'amqp://x', max_priority: 5, quorum: true}\n" + tasksOnly, "streams[0].max_priority: quorum queues do not support"},
		{"amqp tls key without cert", "streams:\n  - {kind: amqp, url: 'amqps://x', tls_key: k.pem}\n" + tasksOnly, "streams[0].tls_key: set tls_cert and tls_key together"},
		{"sqlite negative busy timeout", "streams:\n  - {kind: sqlite, path: x.db, busy_timeout: -1s}\n" + tasksOnly, "streams[0].busy_timeout: must not be negative (0 means the default, 5s)"},
		{"postgres negative lease", "streams:\n  - {kind: postgres, url: 'postgres://db/app', lease: -1s}\n" + tasksOnly, "streams[0].lease: must not be negative (0 means the default, 30s)"},
		{"postgres short lease", "streams:\n  - {kind: postgres, url: 'postgres://db/app', lease: 10us}\n" + tasksOnly, "streams[0].lease: must be at least 1ms"},
		{"amqp reconnect bounds", "streams:\n  - {kind: amqp, url: 'amqp://x', reconnect_min: 1m, reconnect_max: 1s}\n" + tasksOnly, "streams[0].reconnect_max: must not be below ReconnectMin"},
		{"mqtt negative backoff", mqtt("url: mqtt://h\n    client_id: a\n    routes: {a/b: email}\n    min_backoff: -1s"), "streams[1].min_backoff: backoffs must not be negative"},
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

// tasksOnly is the tasks section of the intake error cases.
const tasksOnly = "tasks:\n  email: {executor: http, url: 'http://mailer.internal/send'}\n"

// hook returns a file with a sqlite store and a webhook entry with the
// given fields and one route.
func hook(fields string) string {
	return "streams:\n  - {kind: sqlite, path: x.db}\n  - kind: webhook\n    " + fields +
		"\n    routes: [{path: /a, type: email, verify: none}]\n" + tasksOnly
}

// hookRoute returns a file with a webhook entry whose routes list holds
// route.
func hookRoute(route string) string {
	return "streams:\n  - {kind: sqlite, path: x.db}\n  - kind: webhook\n    listen: ':8080'\n    routes:\n      - " + route + "\n" + tasksOnly
}

// mqtt returns a file with a sqlite store and an mqtt entry with fields.
func mqtt(fields string) string {
	return "streams:\n  - {kind: sqlite, path: x.db}\n  - kind: mqtt\n    " + fields + "\n" + tasksOnly
}

const intakesConfig = `
streams:
  - name: local
    kind: sqlite
    path: local.db
  - name: kept
    kind: sqlite
    path: kept.db
    keep_done: 0s
  - name: hooks
    kind: webhook
    store: local
    listen: 127.0.0.1:8080
    max_body: 2MiB
    routes:
      - path: /hooks/github
        type: github-event
        verify: github
        secrets: ["${GH_SECRET}", old-secret]
        json: true
        headers: [X-Request-Id]
      - path: /hooks/stripe
        type: github-event
        verify: stripe
        secrets: [whsec_abc]
        tolerance: 2m
        max_body: 64KiB
      - path: /hooks/mine
        type: github-event
        verify: hmac
        secrets: [s3cret]
        header: X-Signature
        prefix: "sha256="
        encoding: base64
        sync: true
        sync_timeout: 3s
  - name: hooks-kept
    kind: webhook
    store: kept
    listen: 127.0.0.1:8082
    routes: [{path: /a, type: github-event, verify: none}]
  - name: ws
    kind: websocket
    store: kept
    listen: :8081
    path: /tasks
    origins: [app.example.com]
    bearer_tokens: ["${WS_TOKEN}"]
  - name: devices
    kind: mqtt
    store: local
    url: mqtt://user:pw@broker:1883
    client_id: peonify-1
    routes: {"devices/+/events": github-event}
    share_group: workers
tasks:
  github-event: {executor: exec, shell: 'cat'}
http:
  listen: 127.0.0.1:9090
`

func TestParseIntakes(t *testing.T) {
	c, err := parseConfig([]byte(intakesConfig), env(map[string]string{"GH_SECRET": "gh", "WS_TOKEN": "0123456789abcdef"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.summary(); !strings.Contains(got, "hooks (webhook into local), hooks-kept (webhook into kept), ws (websocket into kept), devices (mqtt into local)") ||
		!strings.Contains(got, "http on 127.0.0.1:9090") {
		t.Errorf("summary %q", got)
	}
	if got := c.storeNames(); strings.Join(got, ",") != "local,kept" {
		t.Errorf("stores %v", got)
	}
	// A webhook's SQLite store keeps finished tasks a day, so that a
	// redelivery is still a duplicate; an explicit keep_done stays.
	local, _ := c.stream("local").(*sqliteSpec).config(nil, false)
	kept, _ := c.stream("kept").(*sqliteSpec).config(nil, false)
	if local.KeepDone != 24*time.Hour || kept.KeepDone != 0 {
		t.Errorf("keep_done: local %s, kept %s; want 24h and 0s", local.KeepDone, kept.KeepDone)
	}
	forgets := func(name string) bool { return c.stream(name).(storeSpec).forgetsDone() }
	if forgets("local") || !forgets("kept") {
		t.Errorf("forgetsDone: local %v, kept %v; want false and true", forgets("local"), forgets("kept"))
	}
	hooks := c.stream("hooks").(*webhookSpec)
	cfg, err := hooks.config(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	gh, stripe, mine := cfg.Routes["/hooks/github"], cfg.Routes["/hooks/stripe"], cfg.Routes["/hooks/mine"]
	if v, ok := gh.Verifier.(webhookstream.GitHub); !ok || len(v.Secrets) != 2 || !gh.JSON || gh.Headers[0] != "X-Request-Id" {
		t.Errorf("github route %+v", gh)
	}
	if v, ok := stripe.Verifier.(webhookstream.Stripe); !ok || v.Tolerance != 2*time.Minute || stripe.MaxBodyBytes != 64<<10 {
		t.Errorf("stripe route %+v", stripe)
	}
	if v, ok := mine.Verifier.(webhookstream.HMAC); !ok || v.Header != "X-Signature" || v.Prefix != "sha256=" || v.Encoding != webhookstream.Base64 ||
		!mine.Sync || mine.SyncTimeout != 3*time.Second {
		t.Errorf("hmac route %+v", mine)
	}
	if cfg.MaxBodyBytes != 2<<20 || !c.syncWebhooks() {
		t.Errorf("webhook config %+v", cfg)
	}
	if kc, err := c.stream("hooks-kept").(*webhookSpec).config(nil, nil); err != nil || !kc.Routes["/a"].AllowUnsigned || kc.Routes["/a"].Verifier != nil {
		t.Errorf("verify: none gives %+v, %v; want an unsigned route", kc.Routes["/a"], err)
	}
	ws := c.stream("ws").(*websocketSpec).config(nil)
	if ws.Authenticate == nil || ws.OriginPatterns[0] != "app.example.com" {
		t.Errorf("websocket config %+v", ws)
	}
	m := c.stream("devices").(*mqttSpec).config(nil)
	if m.Servers[0] != "mqtt://user:pw@broker:1883" || m.ClientID != "peonify-1" || m.Routes["devices/+/events"] != "github-event" || m.ShareGroup != "workers" {
		t.Errorf("mqtt config %+v", m)
	}
}

// The websocket intake's bearer tokens are checked in constant time, and
// any of them is accepted.
func TestBearerAuth(t *testing.T) {
	auth := bearerAuth([]string{"first-token-0123456", "second-token-012345"})
	for header, ok := range map[string]bool{
		"Bearer first-token-0123456": true, "Bearer second-token-012345": true,
		"Bearer first-token-012345": false, "first-token-0123456": false, "": false, "Bearer ": false,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		if err := auth(r); (err == nil) != ok {
			t.Errorf("Authorization %q: err %v, want accepted %v", header, err, ok)
		}
	}
}

// The dashboard is on by default; on an address other machines reach it
// needs credentials, unless it is turned off.
func TestHTTPDashboardConfig(t *testing.T) {
	for _, tc := range []struct {
		http string
		on   bool
	}{
		{"{listen: '127.0.0.1:9090'}", true},
		{"{listen: ':9090', dashboard: {enabled: false}}", false},
		{"{listen: ':9090', dashboard: {token: 0123456789abcdef, hide_payloads: [email]}}", true},
		{"{listen: ':9090', dashboard: {username: ops, password: pw}}", true},
	} {
		c, err := parseConfig([]byte(base+"http: "+tc.http+"\n"), env(nil))
		if err != nil {
			t.Errorf("http: %s: %v", tc.http, err)
			continue
		}
		if c.http.Dashboard.on() != tc.on {
			t.Errorf("http: %s: dashboard on %v, want %v", tc.http, c.http.Dashboard.on(), tc.on)
		}
	}
}

func TestParseBrokers(t *testing.T) {
	c, err := parseConfig([]byte(`
streams:
  - kind: redis
    url: redis://:${PW}@redis:6379/0
    queue: emails
    consumer: worker-1
    dedup_window: -1s
  - kind: nats
    url: nats://nats:4222
    stream: ORDERS
    ack_wait: 1m
    max_bytes: 1GiB
    setup: false
  - kind: amqp
    url: amqp://guest:${PW}@rabbit:5672/
    queue: reports
    quorum: true
`+tasksOnly), env(map[string]string{"PW": "pw"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.streamNames(), ","); got != "redis:emails,nats:ORDERS,amqp:reports" {
		t.Errorf("default names %s", got)
	}
	rc := c.streams[0].(*redisSpec).config(nil)
	if rc.Queue != "emails" || rc.Consumer != "worker-1" || rc.DedupWindow != -time.Second {
		t.Errorf("redis config %+v", rc)
	}
	ns := c.streams[1].(*natsSpec)
	if nc := ns.config(nil); nc.Stream != "ORDERS" || nc.AckWait != time.Minute || nc.MaxBytes != 1<<30 || ns.setup() {
		t.Errorf("nats config %+v, setup %v", nc, ns.setup())
	}
	if ac := c.streams[2].(*amqpSpec).config(nil); ac.Queue != "reports" || !ac.Quorum {
		t.Errorf("amqp config %+v", ac)
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
	// Errors found by checks, after decoding, have a place too: the field,
	// or the entry a required field is missing from.
	p = writeFile(t, dir, "peonify.yaml", "streams:\n  - kind: sqlite\n    path: x.db\n  - kind: postgres\n    queue: q\ntasks:\n  email: {executor: http, url: 'http://x', timeout: -1s}\n")
	_, err = loadConfig(p, env(nil))
	if want := p + ":4:5: streams[1].url: required"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %v, want it to start with %q", err, want)
	}
	p = writeFile(t, dir, "peonify.yaml", "streams:\n  - kind: sqlite\n    path: x.db\ntasks:\n  email: {executor: http, url: 'ftp://x'}\n")
	_, err = loadConfig(p, env(nil))
	if want := p + ":5:32: tasks.email.url:"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %v, want it to start with %q", err, want)
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
	c, err := parseConfig([]byte(block), env(map[string]string{"PGPASSWORD": "pw", "MAILER_TOKEN": "t",
		"GITHUB_WEBHOOK_SECRET": "s", "CHAT_SECRET": "s", "INTAKE_TOKEN": "0123456789abcdef", "MQTT_PASSWORD": "pw",
		"PEONIFY_DASHBOARD_TOKEN": "0123456789abcdef", "BILLING_API_TOKEN": "0123456789abcdef",
		"REDIS_PASSWORD": "pw", "RABBITMQ_PASSWORD": "pw"}))
	if err != nil {
		t.Fatalf("the README's config: %v", err)
	}
	if len(c.streams) != 8 || len(c.tasks) != 5 || len(c.periodic) != 1 || c.http.Listen == "" {
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
	for _, v := range []any{fileConfig{}, processorConfig{}, retryConfig{}, logConfig{}, periodicEntry{}, limitEntry{}, httpConfig{}, dashboardConfig{},
		sqliteSpec{}, postgresSpec{}, redisSpec{}, natsSpec{}, amqpSpec{}, webhookSpec{}, webhookRoute{}, websocketSpec{}, mqttSpec{},
		httpTask{}, execTask{}} {
		for _, name := range yamlfile.Names(reflect.TypeOf(v)) {
			if !regexp.MustCompile(`(?m)^[ #-]*` + name + `:`).Match(readme) {
				t.Errorf("README.md does not show the field %s of %T", name, v)
			}
		}
	}
}

// BenchmarkParseConfig measures checking the README's complete config,
// every kind of stream included: the cost of `peonify run --check` and of
// each start-up, besides connecting.
func BenchmarkParseConfig(b *testing.B) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		b.Fatal(err)
	}
	_, block, _ := strings.Cut(string(readme), "<!-- config-reference: the tests parse this block -->\n```yaml\n")
	block, _, _ = strings.Cut(block, "```")
	block = strings.NewReplacer("/usr/local/bin/thumbnail", "sh", "/srv/images", b.TempDir()).Replace(block)
	vars := env(map[string]string{"PGPASSWORD": "pw", "MAILER_TOKEN": "t", "GITHUB_WEBHOOK_SECRET": "s", "CHAT_SECRET": "s",
		"INTAKE_TOKEN": "0123456789abcdef", "MQTT_PASSWORD": "pw", "PEONIFY_DASHBOARD_TOKEN": "0123456789abcdef",
		"REDIS_PASSWORD": "pw", "RABBITMQ_PASSWORD": "pw"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseConfig([]byte(block), vars); err != nil {
			b.Fatal(err)
		}
	}
}

// TestYAMLPathOf checks that a field named in Go terms by a library's
// *peonify.ConfigError is found in the file by the yaml tags of the
// entry's type, looking into inline fields and keeping list indexes.
func TestYAMLPathOf(t *testing.T) {
	for _, tc := range []struct {
		v      any
		goPath string
		want   string
	}{
		{processorConfig{}, "Workers", ".workers"},
		{processorConfig{}, "Retry.Jitter", ".retry.jitter"},
		{&mqttSpec{}, "Servers[1]", ".servers[1]"},
		{&mqttSpec{}, "ResendLog", ".resend_log"}, // inline resendFields
		{&websocketSpec{}, "OriginPatterns[2]", ".origins[2]"},
		{&redisSpec{}, "RescueInterval", ".rescue_interval"},
		{&sqliteSpec{}, "KeepDone", ".keep_done"},  // a pointer field
		{&amqpSpec{}, "AMQP.Recovery", ""},         // not in the file: the entry itself
		{&natsSpec{}, "Stream.Nothing", ".stream"}, // the nearest enclosing field
	} {
		if got := yamlfile.PathOf(tc.v, tc.goPath); got != tc.want {
			t.Errorf("yamlfile.PathOf(%T, %q) = %q, want %q", tc.v, tc.goPath, got, tc.want)
		}
	}
}
