package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/peonify/peonify/internal/testenv"
)

var (
	apiResultRE      = regexp.MustCompile(`(?m)^RESULT backend=(\w+) mode=api peonify=\d+ peer=go-enqueue:\d+ ratio=\d+\.\d\d$`)
	apiBatchResultRE = regexp.MustCompile(`(?m)^RESULT backend=(\w+) mode=api-batch peonify=\d+ peer=go-enqueue-batch:\d+ ratio=\d+\.\d\d$`)
)

// checkAPIReport checks the report of -modes api: the four variants, the
// goals, the batch endpoint's RESULT line and the single request's last.
func checkAPIReport(t *testing.T, out, backend string) {
	t.Helper()
	m := apiResultRE.FindStringSubmatch(out)
	if m == nil || m[1] != backend {
		t.Fatalf("no api RESULT line for %s", backend)
	}
	if !strings.HasSuffix(strings.TrimSpace(out), m[0]) {
		t.Errorf("the api RESULT is not the last line")
	}
	if m := apiBatchResultRE.FindStringSubmatch(out); m == nil || m[1] != backend {
		t.Errorf("no api-batch RESULT line for %s", backend)
	}
	for _, want := range []string{`(?m)^api +go-enqueue +\d+ `, `(?m)^api +api +\d+ `, `(?m)^api +go-enqueue-batch +\d+ `,
		`(?m)^api +api-batch +\d+ `, `api/go-enqueue >= 0.5 +(met|MISSED)`,
		`api-batch/go-enqueue-batch >= 0.9 +(met|MISSED)`, `POST /v1/tasks/batch, 30 tasks per request`,
		`Enqueue of one task per call`, `(?m)^  300 requests over [1-4] connections \(\d+ dialed\)$`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("report lacks %s", want)
		}
	}
}

// smallAPI are the flags of a small run of the api mode.
var smallAPI = []string{"-modes", "api", "-api-tasks", "300", "-api-clients", "4", "-api-batch", "30", "-v"}

func TestAPISQLite(t *testing.T) {
	checkAPIReport(t, runSmall(t, append([]string{"-backend", "sqlite"}, smallAPI...)...), "sqlite")
}

func TestAPIPostgres(t *testing.T) {
	url := testenv.URL(t, "postgres")
	checkAPIReport(t, runSmall(t, append([]string{"-backend", "postgres", "-pg-url", url}, smallAPI...)...), "postgres")
}

func TestAPIRedis(t *testing.T) {
	url := testenv.URL(t, "redis")
	checkAPIReport(t, runSmall(t, append([]string{"-backend", "redis", "-redis-url", url}, smallAPI...)...), "redis")
}
