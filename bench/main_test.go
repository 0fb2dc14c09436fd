package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/peonify/peonify/internal/testenv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var resultRE = regexp.MustCompile(`(?m)^RESULT backend=(\w+) peonify=\d+ peer=river:\d+ ratio=\d+\.\d\d$`)

// runSmall runs the whole benchmark with few tasks and returns its report.
func runSmall(t *testing.T, args ...string) string {
	t.Helper()
	o, err := parseFlags(append([]string{"-tasks", "300", "-idle-tasks", "10", "-idle-every", "5ms", "-count", "1"}, args...), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(t.Context(), o, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	return out.String()
}

func TestSQLite(t *testing.T) {
	out := runSmall(t, "-backend", "sqlite")
	m := resultRE.FindStringSubmatch(out)
	if m == nil || m[1] != "sqlite" {
		t.Fatalf("no RESULT line for sqlite as the last line")
	}
	if !strings.HasSuffix(strings.TrimSpace(out), m[0]) {
		t.Errorf("RESULT is not the last line")
	}
	for _, want := range []string{"drain ", "idle-pickup ", "peonify ", "river "} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestPostgres(t *testing.T) {
	url := testenv.URL(t, "postgres")
	out := runSmall(t, "-backend", "postgres", "-pg-url", url, "-raw-loops", "2")
	if m := resultRE.FindStringSubmatch(out); m == nil || m[1] != "postgres" {
		t.Fatalf("no RESULT line for postgres")
	}
	for _, want := range []string{"river-default ", "raw-sql (async commit) ", "insert-while-working ", "idle-pickup-remote "} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// TestPostgresDropsSchemas checks that a run leaves no schema behind.
func TestPostgresDropsSchemas(t *testing.T) {
	url := testenv.URL(t, "postgres")
	e := &env{backend: "postgres", pgURL: url, pgConns: 2}
	sc, err := e.newSchema(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sc.drop()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, sc.name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("schema %s is still there after drop", sc.name)
	}
}

func TestRecorderCheck(t *testing.T) {
	rec := newRecorder(3)
	rec.started(0)
	rec.started(1)
	rec.completedN(2)
	if err := rec.check(); err == nil || !strings.Contains(err.Error(), "2 of 3 distinct") {
		t.Errorf("missing task: got %v", err)
	}
	rec.started(2)
	rec.started(2)
	rec.completedN(1)
	if err := rec.check(); err == nil || !strings.Contains(err.Error(), "more than once") {
		t.Errorf("duplicate run: got %v", err)
	}
	select {
	case <-rec.done:
	default:
		t.Error("done not closed after 3 completions")
	}
}

func TestPercentile(t *testing.T) {
	var v []time.Duration
	for i := 1; i <= 100; i++ {
		v = append(v, time.Duration(i))
	}
	if p := percentile(v, 0.5); p != 50 {
		t.Errorf("p50 = %d, want 50", p)
	}
	if p := percentile(v, 0.99); p != 99 {
		t.Errorf("p99 = %d, want 99", p)
	}
	if p := percentile(nil, 0.5); p != 0 {
		t.Errorf("p50 of nothing = %d, want 0", p)
	}
}

func TestParseFlagsRejects(t *testing.T) {
	for _, args := range [][]string{
		{"-backend", "mysql"},
		{"-tasks", "0"},
		{"-modes", "drain,fast"},
		{"-backend", "postgres", "-pg-url", ""},
		{"-queue-size", "1"},
		{"-systems", "peonify,sidekiq"},
		{"-count", "0"},
		{"-keys", "0"},
		{"-api-clients", "0"},
		{"-modes", "api", "-api-batch", "0"},
	} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}
