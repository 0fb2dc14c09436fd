package main

import (
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/peonify/peonify/internal/testenv"
)

// closedPort returns an address on the loopback where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// withUser returns rawURL with another user and password.
func withUser(t *testing.T, rawURL string, user *url.Userinfo) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = user
	return u.String()
}

// A store that cannot be reached at start-up stops the daemon with one
// line that names the problem: no warnings before it, no "retrying" from
// a client that is about to give up, no cause repeated on further lines.
func TestStartupErrorIsOneLine(t *testing.T) {
	for _, tc := range []struct {
		name   string
		kind   string
		url    func(t *testing.T) string
		want   []string // in the line, each once
		hidden string   // not in the line: the password
	}{
		{
			name: "amqp wrong password", kind: "amqp",
			url: func(t *testing.T) string {
				return withUser(t, testenv.URL(t, "amqp"), url.UserPassword("guest", "not-the-password"))
			},
			want:   []string{"refused the connection", "username or password not allowed", "amqp://guest@"},
			hidden: "not-the-password",
		},
		{
			// The daemon waits for the broker up to its dial timeout (10s),
			// then names the broker once.
			name: "amqp closed port", kind: "amqp",
			url:    func(t *testing.T) string { return "amqp://peonify:pw-of-closed@" + closedPort(t) + "/" },
			want:   []string{"connecting to amqp://peonify@", "connection refused"},
			hidden: "pw-of-closed",
		},
		{
			name: "redis closed port", kind: "redis",
			url:  func(t *testing.T) string { return "redis://" + closedPort(t) + "/0" },
			want: []string{"connect to redis", "connection refused"},
		},
		{
			// Without sslmode, pgx tries with TLS and then without, and
			// reports each attempt.
			name: "postgres closed port", kind: "postgres",
			url:  func(t *testing.T) string { return "postgres://postgres@" + closedPort(t) + "/test" },
			want: []string{"connect to postgres", "connection refused"},
		},
		{
			name: "postgres unknown user", kind: "postgres",
			url: func(t *testing.T) string {
				u, err := url.Parse(withUser(t, testenv.URL(t, "postgres"), url.UserPassword("peonify_no_such_role", "secret-pw")))
				if err != nil {
					t.Fatal(err)
				}
				u.RawQuery = ""
				return u.String()
			},
			want:   []string{"connect to postgres", `role "peonify_no_such_role" does not exist`},
			hidden: "secret-pw",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("PEONIFY_CLI_STARTUP_URL", tc.url(t))
			writeFile(t, dir, "peonify.yaml", `
streams:
  - kind: `+tc.kind+`
    url: ${PEONIFY_CLI_STARTUP_URL}
tasks:
  t:
    executor: exec
    command: ["true"]
`)
			r := run(t, dir, "", "run", "-c", "peonify.yaml")
			lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
			if r.code != exitFailure || len(lines) != 1 || !strings.HasPrefix(lines[0], "peonify run: streams[0]: ") {
				t.Fatalf("want exit 1 and one line of error: %s", r)
			}
			for _, w := range tc.want {
				if n := strings.Count(lines[0], w); n != 1 {
					t.Errorf("%q is %d times in the error, want once: %s", w, n, lines[0])
				}
			}
			for _, noise := range []string{"retrying", "level=", "WARN", "\t"} {
				if strings.Contains(r.stderr, noise) {
					t.Errorf("the error has %q: %s", noise, r.stderr)
				}
			}
			if tc.hidden != "" && strings.Contains(r.stderr, tc.hidden) {
				t.Errorf("the error shows the password: %s", r.stderr)
			}
		})
	}
}
