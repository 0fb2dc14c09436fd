// Command peonify runs Peonify without writing Go: a demo, a standalone
// processor configured by a YAML file, and tools to enqueue and inspect
// tasks.
//
//	peonify demo                     # sample tasks on a local store, with progress and a summary
//	peonify run -c peonify.yaml      # the standalone processor (SIGTERM drains it)
//	peonify enqueue --store peonify.db --type email --payload '{"to":"ada@example.com"}'
//	peonify tasks stats --store peonify.db
//	peonify tasks list --state dead --store peonify.db
//	peonify tasks retry --all --store peonify.db
//	peonify tasks limits -c peonify.yaml   # each limit's tasks in use and waiting, busiest keys
//	peonify enqueue --store peonify.db --workflow nightly.json   # tasks with dependencies, all or none
//	peonify tasks get 01a2… --store peonify.db    # with its progress, result, workflow and parents
//	peonify tasks wait 01a2… --timeout 5m --store peonify.db   # prints the result once done
//	peonify tasks cancel 01a2… --store peonify.db
//	peonify workflows get nightly-2030-01-02 --store peonify.db
//	peonify migrate --postgres "$DATABASE_URL"
//	peonify version                  # version and commit, from the Go build info
//
// A minimal peonify.yaml takes tasks from an embedded SQLite store and
// runs each task type with a built-in executor: http delivers the payload
// to a URL, exec runs a command with the payload on its standard input. On
// the stores that keep results (sqlite, postgres, redis), the body of an
// http task's 2xx answer, and with stdout: result an exec task's output,
// is the task's result.
//
//	streams:
//	  - kind: sqlite
//	    path: peonify.db
//	tasks:
//	  email:
//	    executor: http
//	    url: https://mailer.internal/send
//	  thumbnail:
//	    executor: exec
//	    command: ["./make-thumbnail.sh"]
//
// The streams list also takes push intakes, which store what they receive
// in one of the file's stores before acknowledging it: webhook (signed HTTP
// webhooks), websocket (producers over a WebSocket) and mqtt (MQTT
// subscriptions). An http section serves Prometheus metrics and health
// checks:
//
//	streams:
//	  - {kind: sqlite, path: peonify.db}
//	  - name: github
//	    kind: webhook
//	    listen: :8080
//	    routes:
//	      - {path: /hooks/github, type: email, verify: github, secrets: ["${GITHUB_WEBHOOK_SECRET}"]}
//	http:
//	  listen: 127.0.0.1:9090   # /metrics, /healthz, /readyz
//
// The same server's /metrics also shows each store's tasks by state and
// queue latency, for autoscaling (metrics.go). A tracing section, or the
// standard OTEL_* variables, turn on a span per attempt exported with
// OTLP over HTTP (tracing.go, otlp.go).
//
// An api section serves the HTTP API of package httpapi under /v1/ on the
// http listener (over HTTPS with http.tls_cert and tls_key): services in
// any language enqueue tasks and wait for their results with bearer tokens
// and scopes (see api.go and the README's "api"):
//
//	api:
//	  tokens:
//	    - {name: billing, secret: "${BILLING_API_TOKEN}", scopes: [enqueue, read]}
//
// A limits section adds flow control that the stores (sqlite, postgres,
// redis) enforce in their claims, across every processor that shares them:
// concurrency and rates per task type or per task key, per-key ordering
// and fairness between keys (see limits.go and the README's "limits").
//
//	limits:
//	  - {type: email, per_key: true, concurrency: 1}
//	  - {type: email, rate: 20/s, burst: 5}
//
// The config file is checked before anything starts: an unknown field, a
// missing one or an unset ${VARIABLE} is reported with its place in the
// file, and peonify exits with status 2. README.md in this directory is
// the reference of every command and config field.
//
// Under systemd (Type=notify) run tells the service manager when it is
// ready, when it drains, and pings its watchdog (sdnotify.go); the unit
// file, Kubernetes manifests and Dockerfile in deploy/ and at the module's
// root are checked against the daemon by deploy_test.go.
//
// This is the only package that imports every stream: the table from a
// config file's stream kinds to their files (kind_<name>.go) is kinds, and
// the table of executors is executorKinds.
package main
