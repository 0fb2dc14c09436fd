// Package snippettest keeps the producer snippets of the READMEs true: its
// test (TestSnippets) extracts every producer snippet from every README.md
// of the repository as written, runs it with its real client (Python,
// Node.js, psql, redis-cli, curl, mosquitto_pub) against the real server,
// and checks that `peonify run`, built from ./cmd/peonify and run as a
// child process, executes the task with its payload byte for byte. Its
// other tests check the rest of what the READMEs tell users to type:
// TestCommands that every `peonify ...` they show in code names a
// command, tasks subcommand and flags that the binary has, and
// TestConfigs that every whole config file they show (a YAML block that
// starts with "streams:") passes `peonify run --check`. The package has
// no code of its own: only this comment and the tests. (It is a package of its own, not a test of cmd/peonify or of a
// stream, because it needs every server and the foreign clients at once,
// and builds the binary as a user would.)
//
// # Markers
//
// A snippet is chosen by a marker, never by accident: an HTML comment,
// invisible on the rendered page, on the line just before the fenced code
// block:
//
//	<!-- snippet: redis url=redis://localhost:6379 queue=emails type=email-task payload={"to": "a@example.com"} -->
//	```python
//	...
//	```
//
// The first word is the kind of the daemon's stream or intake that the
// snippet needs: postgres, redis, nats, amqp, mqtt, webhook or websocket;
// api, for a client of the HTTP API (the daemon then has a SQLite store
// and an api section whose token the snippet reads from
// PEONIFY_API_TOKEN; the task's result is {"sent":true}, and the
// snippet's output must show the task done with it: an api snippet
// enqueues and waits for the result); or "none", followed by the reason,
// for a block that is not a producer (a SELECT, an install command). The other words are key=value pairs, and
// payload= takes the rest of the comment:
//
//	url=LITERAL      LITERAL in the snippet is replaced by the server's URL:
//	                 the PEONIFY_TEST_<KIND>_URL of a store or of MQTT, the
//	                 http:// or ws:// address of the daemon's webhook or
//	                 WebSocket intake, or (api) that of its http listener
//	host=LITERAL     LITERAL is replaced by the host of that URL
//	queue=, subject=, topic=, path=LITERAL
//	                 the queue (redis, postgres, amqp), the JetStream
//	                 subject (nats), the topic (mqtt) or the URL path
//	                 (webhook, websocket) the snippet enqueues into: LITERAL
//	                 is replaced by LITERAL-<random hex> in the snippet and
//	                 in the daemon's config, so that runs never collide
//	type=T           the task type (required)
//	id=ID            the task ID the daemon must see (optional)
//	secret=, header=, prefix=, id_header=
//	                 a webhook route's HMAC settings (verify: hmac)
//	run=redis-cli    the runner of an untagged block (redis commands)
//	resend=once      the README promises that sending the same task again
//	                 stores it once: the test runs the snippet a second
//	                 time, after the task ran, and fails if it runs again
//	payload=BYTES    the payload the task must carry, to the end of the
//	                 comment, white space trimmed at both ends (required)
//
// The runner comes from the fence's language: python (Debian's
// /usr/bin/python3, which sees Debian's python3-* packages; a pyenv python3
// on PATH would not), js (node, as an ES module, with the npm packages of
// testdata/node), sql (psql), sh (bash), or run=redis-cli (the block fed
// to redis-cli's standard input).
//
// Every fenced block in python, js, javascript, sql, sh, bash, shell or
// console, or with no language, in any README.md (but those under
// testdata and node_modules) must have a marker: TestSnippets fails on a
// block without one, so a new producer snippet cannot go untested.
//
// # Snippets that cannot run here
//
// A snippet whose client has no package on Debian or npm is listed, with
// the reason, in the test's log (go test -v), never silently skipped; a
// Python one must still parse:
//
//   - Python snippets that import nats (nats-py is on PyPI only), unless
//     nats-py was installed by hand for /usr/bin/python3.
//
// Any other missing client (a python3-* package, node_modules, psql) skips
// the test with the command that installs it, or fails it when
// PEONIFY_REQUIRE_SERVICES=1, as in CI.
//
// # Installing the clients
//
// .ci/run installs them; by hand:
//
//	apt-get install -y python3-psycopg2 python3-redis python3-pika python3-paho-mqtt mosquitto-clients postgresql-client redis-tools curl openssl
//	(cd internal/snippettest/testdata/node && npm ci)
package snippettest
