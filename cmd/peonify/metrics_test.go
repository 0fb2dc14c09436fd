package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// /metrics shows the build and what is in the stores: tasks by state and
// the age of the oldest pending task.
func TestMetricsShowBuildAndStores(t *testing.T) {
	db := filepath.Join(t.TempDir(), "p.db")
	s, err := sqlitestream.Open(db, sqlitestream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Enqueue(context.Background(),
		&peonify.Task{Type: "t", EnqueuedAt: time.Now().Add(-time.Minute)}, &peonify.Task{Type: "t"})
	s.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	yaml := "streams:\n  - {kind: sqlite, path: " + db + "}\n" +
		"tasks:\n  t: {executor: exec, shell: 'true'}\n" +
		"http: {listen: '127.0.0.1:0', store_metrics_interval: 1m, dashboard: {enabled: false}}\n"
	cfg, err := parseConfig([]byte(yaml), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	logs := new(streamtest.SyncBuffer)
	d, err := newDaemon(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close() // the processor does not run: the tasks stay pending
	m := regexp.MustCompile(`addr=(http://\S+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no admin address in the log:\n%s", logs)
	}
	code, body := get(t, m[1]+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, want := range []string{
		`peonify_build_info{goversion="` + runtime.Version() + `",modified="`,
		`peonify_store_tasks{state="pending",store="sqlite"} 2`,
		`peonify_store_tasks{state="dead",store="sqlite"} 0`,
		`peonify_store_query_errors_total{store="sqlite"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	age := regexp.MustCompile(`peonify_store_oldest_pending_seconds\{store="sqlite"\} (\d+)`).FindStringSubmatch(body)
	if age == nil || age[1] < "60" || len(age[1]) != 2 {
		t.Errorf("peonify_store_oldest_pending_seconds is %v, want about 60", age)
	}
}

func TestStoreMetricsIntervalIsChecked(t *testing.T) {
	base := "streams:\n  - {kind: sqlite, path: p.db}\ntasks:\n  t: {executor: exec, shell: 'true'}\n"
	_, err := parseConfig([]byte(base+"http: {listen: '127.0.0.1:9090', store_metrics_interval: -1s}\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "http.store_metrics_interval") {
		t.Errorf("a negative interval: %v, want an error naming http.store_metrics_interval", err)
	}
}
