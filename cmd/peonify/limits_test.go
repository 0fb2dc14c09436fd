package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

const limitsConfig = `
streams:
  - {kind: sqlite, path: x.db}
  - {kind: redis, url: 'redis://localhost:6379', queue: q}
tasks:
  email: {executor: http, url: 'http://mailer.internal/send'}
  report: {executor: http, url: 'http://reports.internal/make'}
limits:
  - type: email
    stream: sqlite
    per_key: true
    concurrency: 1
    key_concurrency: {acme: 10, on-hold: 0}
  - name: mail-api
    stream: sqlite
    type: email
    rate: 20/s
    burst: 5
  - stream: sqlite
    type: report
    per_key: true
    ordered: true
  - stream: sqlite
    concurrency: 4
    local: true
  - stream: redis:q
    per_key: true
    fair: true
  - stream: redis:q
    name: hourly
    rate: 100/h
`

func TestParseLimits(t *testing.T) {
	c, err := parseConfig([]byte(limitsConfig), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]peonify.Limit{
		"sqlite": {
			{Name: "email/key", Type: "email", PerKey: true, Concurrency: 1, KeyConcurrency: map[string]int{"acme": 10, "on-hold": 0}},
			{Name: "mail-api", Type: "email", Rate: 20, Period: time.Second, Burst: 5},
			{Name: "report/key", Type: "report", PerKey: true, Ordered: true, Concurrency: 1},
			{Name: "*/local", Concurrency: 4, Local: true},
		},
		"redis:q": {
			{Name: "*/key", PerKey: true, Fair: true},
			{Name: "hourly", Rate: 100, Period: time.Hour, Burst: 1},
		},
	}
	if !reflect.DeepEqual(c.limits, want) {
		t.Errorf("limits\n  %+v\nwant\n  %+v", c.limits, want)
	}
	var got []string
	for _, l := range c.limits["sqlite"] {
		got = append(got, describeLimit(l))
	}
	if s := strings.Join(got, "; "); s != "1 at once per key (acme: 10, on-hold: 0); 20/s burst 5; one at a time per key, in order; 4 at once in each processor" {
		t.Errorf("described as %q", s)
	}
	if !strings.Contains(c.summary(), "; 6 limits") {
		t.Errorf("summary %q does not count the limits", c.summary())
	}
	// One store: stream may be left out.
	c, err = parseConfig([]byte(base+"limits:\n  - {concurrency: 2}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if l := c.limits["sqlite"]; len(l) != 1 || l[0].Name != "*" {
		t.Errorf("limits %+v", c.limits)
	}
}

// Every mistake in the limits section is reported at its line, with the
// file's names for the fields.
func TestLimitErrorsNameTheFieldAndLine(t *testing.T) {
	const head = "streams:\n  - {kind: sqlite, path: x.db}\ntasks:\n  email: {executor: http, url: 'http://x'}\nlimits:\n" // limits: is line 5
	for _, tc := range []struct {
		name, limits, want string
	}{
		{"unknown field", "  - concurrency: 1\n    per-key: true\n", "7:5: limits[0].per-key: unknown field (fields of limits[0]: name, stream, type, per_key, concurrency, key_concurrency, rate, burst, ordered, fair, local)"},
		{"nothing", "  - type: email\n", "6:5: limits[0]: limits nothing: set concurrency, rate, ordered or fair"},
		{"negative concurrency", "  - type: email\n    concurrency: -1\n", "7:18: limits[0].concurrency: must not be negative (0 means no concurrency limit)"},
		{"rate without period", "  - rate: 20\n", "6:11: limits[0].rate: 20 has no period: write the starts per period, like 20/s"},
		{"bad rate", "  - rate: 20/fortnight\n", `6:11: limits[0].rate: "20/fortnight" is not a rate`},
		{"burst without rate", "  - concurrency: 1\n    burst: 5\n", "7:12: limits[0].burst: is set without a rate"},
		{"negative burst", "  - rate: 1/s\n    burst: -5\n", "7:12: limits[0].burst: must not be negative"},
		{"fair without per_key", "  - fair: true\n", "6:11: limits[0].fair: is set without per_key"},
		{"ordered without per_key", "  - ordered: true\n", "6:14: limits[0].ordered: is set without per_key"},
		{"ordered with concurrency", "  - ordered: true\n    per_key: true\n    concurrency: 2\n", "6:14: limits[0].ordered: runs one task per key at a time"},
		{"key_concurrency without per_key", "  - key_concurrency: {a: 1}\n", "6:23: limits[0].key_concurrency: is set without per_key"},
		{"negative key", "  - per_key: true\n    key_concurrency:\n      acme: -1\n", `8:13: limits[0].key_concurrency["acme"]: must not be negative`},
		{"local and per_key", "  - local: true\n    concurrency: 1\n    per_key: true\n", "6:12: limits[0].local: applies to a concurrency per type only"},
		{"unknown type", "  - type: sms\n    concurrency: 1\n", `6:11: limits[0].type: "sms" is not a task type of this file (tasks: "email")`},
		{"unknown stream", "  - concurrency: 1\n    stream: pg\n", `7:13: limits[0].stream: "pg" is not the name of a stream (stores: "sqlite")`},
		{"duplicate name", "  - concurrency: 1\n  - type: email\n    name: '*'\n    rate: 1/s\n", `8:11: limits[1].name: limits[0] of stream "sqlite" has the name "*" too`},
		{"duplicate default name", "  - concurrency: 1\n  - concurrency: 2\n", `7:5: limits[1]: limits[0] of stream "sqlite" has the name "*" too`},
		{"not a list", "  concurrency: 1\n", "limits: want a list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(head+tc.limits), env(nil))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			got := (&configError{"peonify.yaml", err}).Error()
			if !strings.Contains(got, tc.want) {
				t.Errorf("error:\n  %s\nwant it to contain:\n  %s", got, tc.want)
			}
		})
	}
}

// Limits need a store that enforces them in its claims.
func TestLimitsNeedAStoreThatEnforcesThem(t *testing.T) {
	for _, tc := range []struct{ streams, stream, want string }{
		{"  - {kind: nats, url: 'nats://localhost:4222'}\n", "nats:PEONIFY",
			`limits[0].stream: "nats:PEONIFY" is of kind nats, which cannot enforce limits: limits are enforced in the claims of sqlite, postgres or redis stores`},
		{"  - {kind: amqp, url: 'amqp://localhost'}\n", "amqp:peonify",
			`limits[0].stream: "amqp:peonify" is of kind amqp, which cannot enforce limits: limits are enforced in the claims of sqlite, postgres or redis stores`},
		{"  - {kind: sqlite, path: x.db}\n  - {kind: websocket, listen: ':8081'}\n", "websocket",
			`limits[0].stream: "websocket" is a websocket intake, which stores into another stream: name the store its tasks go to ("sqlite")`},
		{"  - {kind: sqlite, path: x.db}\n  - {kind: sqlite, name: b, path: b.db}\n", "",
			`limits[0].stream: required when there are several stores: name the store whose claims the limit holds back ("sqlite", "b")`},
	} {
		_, err := parseConfig([]byte("streams:\n"+tc.streams+tasksOnly+"limits:\n  - {concurrency: 1, stream: '"+tc.stream+"'}\n"), env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}

func TestWriteLimits(t *testing.T) {
	c, err := parseConfig([]byte(limitsConfig), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	limits := c.limits["sqlite"]
	stats := []peonify.LimitStat{ // as a store reports them, in SetLimits order
		{Name: "email/key", InUse: 2, Waiting: 130, Keys: []peonify.KeyStat{{Key: "acme", InUse: 1, Waiting: 100}, {Key: "big tenant", InUse: 1, Waiting: 30}}},
		{Name: "mail-api", InUse: 0, Waiting: 4},
		{Name: "report/key", InUse: 1, Waiting: 0, Keys: []peonify.KeyStat{{Key: "r1", InUse: 1}}},
	} // */local unreported: zeros
	var b strings.Builder
	if err := writeLimits(&b, limitsJSON(limits, stats)); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, line := range []string{
		`^LIMIT +TYPE +RULE +IN USE +WAITING$`,
		`^email/key +email +1 at once per key \(acme: 10, on-hold: 0\) +2 +130$`,
		`^  key acme +1 +100$`,
		`^  key "big tenant" +1 +30$`,
		`^mail-api +email +20/s burst 5 +0 +4$`,
		`^report/key +report +one at a time per key, in order +1 +0$`,
		`^  key r1 +1 +0$`,
		`^\*/local +\(every type\) +4 at once in each processor +- +0$`,
	} {
		if !regexp.MustCompile(`(?m)` + line).MatchString(got) {
			t.Errorf("no line %s in:\n%s", line, got)
		}
	}
}

// The README's example of the limits section is valid and means what its
// text says.
func TestDocumentedLimitsExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- limits-example: the tests run this block -->\n```yaml\n")
	if !ok {
		t.Fatal("README.md lost its limits-example block")
	}
	block, _, _ = strings.Cut(block, "```")
	c, err := parseConfig([]byte(block), env(nil))
	if err != nil {
		t.Fatalf("the README's limits example: %v", err)
	}
	want := []peonify.Limit{
		{Name: "send-email", Type: "send-email", Rate: 20, Period: time.Second, Burst: 5},
		{Name: "make-report/key", Type: "make-report", PerKey: true, Concurrency: 1, KeyConcurrency: map[string]int{"big-customer": 5}},
	}
	if !reflect.DeepEqual(c.limits["sqlite"], want) {
		t.Errorf("the README's limits example gives %+v", c.limits)
	}
}
