// Package testenv finds the real services that backend tests run against
// and tells when a server is ready.
package testenv

import (
	"os"
	"testing"
)

// Service names accepted by URL, with the environment variable that holds
// each one's address and the value that works on a default local install.
var services = map[string]struct{ env, example string }{
	"postgres": {"PEONIFY_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
	"redis":    {"PEONIFY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"},
	"nats":     {"PEONIFY_TEST_NATS_URL", "nats://127.0.0.1:4222"},
	"amqp":     {"PEONIFY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"},
	"mqtt":     {"PEONIFY_TEST_MQTT_URL", "mqtt://127.0.0.1:1883"},
}

// URL returns the address of the named service ("postgres", "redis",
// "nats", "amqp" or "mqtt") from its PEONIFY_TEST_*_URL variable. When the
// variable is unset the test is skipped with a message saying how to run
// it, or fails if PEONIFY_REQUIRE_SERVICES=1 (as in CI).
func URL(t testing.TB, service string) string {
	t.Helper()
	s, ok := services[service]
	if !ok {
		t.Fatalf("testenv: unknown service %q", service)
	}
	if u := os.Getenv(s.env); u != "" {
		return u
	}
	msg := "needs a real " + service + " server: set " + s.env + " (e.g. " + s.env + "=" + s.example + ")"
	if os.Getenv("PEONIFY_REQUIRE_SERVICES") == "1" {
		t.Fatal(msg + "; PEONIFY_REQUIRE_SERVICES=1 makes a missing service an error")
	}
	t.Skip(msg)
	return ""
}

// ServerFaults skips a test that stops or restarts a shared local server
// unless PEONIFY_CHAOS=1. Such a test would break the tests of other
// packages that go test runs at the same time against the same server;
// CI runs them in a separate step, one package at a time (go test -p 1).
func ServerFaults(t testing.TB) {
	t.Helper()
	if os.Getenv("PEONIFY_CHAOS") != "1" {
		t.Skip("stops and restarts a shared server: runs with PEONIFY_CHAOS=1, one package at a time (go test -p 1)")
	}
}
