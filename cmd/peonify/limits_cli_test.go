package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// sqliteLimits reports whether this build's sqlitestream enforces limits
// and stores task keys (the same change brings both).
func sqliteLimits() bool {
	_, ok := any((*sqlitestream.Stream)(nil)).(peonify.Limiter)
	return ok
}

// limitsDaemonConfig runs "slow" tasks for 3s each, one at a time per
// key, on a SQLite store.
const limitsDaemonConfig = `
processor:
  shutdown_grace: 1s
  shutdown_timeout: 5s
streams:
  - {kind: sqlite, path: p.db}
tasks:
  slow: {executor: exec, shell: 'sleep 3'}
limits:
  - type: slow
    per_key: true
    concurrency: 1
http:
  listen: 127.0.0.1:0
`

// Flags and mistakes of the key and limits commands, which need no store
// that enforces limits.
func TestKeyAndLimitsUsage(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "peonify.yaml", limitsDaemonConfig)
	writeFile(t, dir, "nolimits.yaml", "streams:\n  - {kind: sqlite, path: p.db}\ntasks:\n  slow: {executor: exec, shell: 'true'}\n")
	for _, tc := range []struct {
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"", []string{"enqueue", "--store", "p.db", "--type", "slow", "--key", strings.Repeat("k", 256)}, exitUsage, "task Key is longer than 255 bytes"},
		{`{"type": "slow", "key": "acme"}` + "\n", []string{"enqueue", "--store", "p.db", "--jsonl", "--key", "acme"}, exitUsage, "--key cannot be used with --jsonl"},
		{`{"type": "slow", "kee": "acme"}` + "\n", []string{"enqueue", "--store", "p.db", "--jsonl"}, exitUsage, "unique_key, key, headers)"},
		{"", []string{"tasks", "limits", "--store", "p.db"}, exitUsage, "limits are set by the limits section of a config file: give it with -c peonify.yaml"},
		{"", []string{"tasks", "limits", "-c", "nolimits.yaml"}, exitOK, `no limits: the limits section of nolimits.yaml gives stream "sqlite" none`},
		{"", []string{"run", "--check", "-c", "peonify.yaml"}, exitOK, "peonify.yaml is valid: streams sqlite (sqlite); task types slow (exec); 1 limit; http on 127.0.0.1:0"},
	} {
		r := run(t, dir, tc.stdin, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.want) {
			t.Errorf("peonify %s: %s\nwant exit %d and %q", strings.Join(tc.args, " "), r, tc.code, tc.want)
		}
	}
	if r := mustRun(t, dir, "", "tasks", "limits", "-c", "nolimits.yaml", "--json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("tasks limits --json of a store without limits: %s", r)
	}
}

// The daemon enforces the file's limits, exports them to Prometheus and
// the dashboard, and `peonify tasks` lists what waits on a key. Without a
// store that enforces limits, both the daemon and the command say so.
func TestLimitsEndToEnd(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "peonify.yaml", limitsDaemonConfig)
	lines := `{"type": "slow", "id": "a1", "key": "acme"}` + "\n" + `{"type": "slow", "id": "a2", "key": "acme"}` + "\n" +
		`{"type": "slow", "id": "g1", "key": "globex"}` + "\n"
	mustRun(t, dir, lines, "enqueue", "-c", "peonify.yaml", "--jsonl")
	mustRun(t, dir, "", "enqueue", "-c", "peonify.yaml", "--type", "slow", "--id", "a3", "--key", "acme")

	if !sqliteLimits() {
		r := run(t, dir, "", "tasks", "limits", "-c", "peonify.yaml")
		if r.code != exitFailure || !strings.Contains(r.stderr, `the stream "sqlite" of peonify.yaml cannot report its limits: this build's sqlite store does not enforce limits`) {
			t.Errorf("tasks limits on a store that does not enforce limits: %s", r)
		}
		r = run(t, dir, "", "run", "-c", "peonify.yaml")
		if r.code != exitFailure || !strings.Contains(r.stderr, `the limits section gives stream "sqlite" limits, but this build's sqlite store cannot enforce them`) {
			t.Errorf("run with limits on a store that does not enforce them: %s", r)
		}
		t.Skip("this build's sqlitestream is not a peonify.Limiter: the rest runs once it is")
	}

	r := mustRun(t, dir, "", "tasks", "list", "--state", "pending", "--key", "acme", "--json", "-c", "peonify.yaml")
	var list []taskJSON
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].ID != "a1" || list[0].Key != "acme" || list[2].ID != "a3" {
		t.Fatalf("tasks list --key acme: %s", r)
	}
	r = mustRun(t, dir, "", "tasks", "list", "--state", "pending", "--key", "globex", "-c", "peonify.yaml")
	if !regexp.MustCompile(`(?m)^ID +TYPE +KEY +STATE +ATTEMPTS`).MatchString(r.stdout) || !regexp.MustCompile(`(?m)^g1 +slow +globex +pending +0`).MatchString(r.stdout) {
		t.Errorf("tasks list --key globex shows no key column:\n%s", r)
	}

	d := startDaemon(t, dir, "peonify.yaml")
	admin := d.listenAddr("serving metrics and health checks")
	// One task of each key runs; acme's other two wait.
	inUse := regexp.MustCompile(`(?m)^peonify_limit_in_use\{limit="slow/key",stream="sqlite"\} 2$`)
	waiting := regexp.MustCompile(`(?m)^peonify_limit_waiting\{limit="slow/key",stream="sqlite"\} 2$`)
	var metrics string
	waitFor(t, "the limit's gauges", func() bool {
		_, metrics = get(t, admin+"/metrics")
		return inUse.MatchString(metrics) && waiting.MatchString(metrics)
	}, d.stderr)

	_, body := get(t, admin+"/dashboard/api/stats")
	var snap dashboard.Snapshot
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatal(err)
	}
	if l := snap.Stores[0].Limits; len(l) != 1 || l[0].Name != "slow/key" || l[0].InUse != 2 || l[0].Waiting != 2 ||
		len(l[0].Keys) != 2 || l[0].Keys[0] != (dashboard.KeyView{Key: "acme", InUse: 1, Waiting: 2}) {
		t.Errorf("the dashboard's limits: %s", body)
	}

	r = mustRun(t, dir, "", "tasks", "limits", "-c", "peonify.yaml")
	for _, line := range []string{`^slow/key +slow +1 at once per key +2 +2$`, `^  key acme +1 +2$`, `^  key globex +1 +0$`} {
		if !regexp.MustCompile(`(?m)` + line).MatchString(r.stdout) {
			t.Errorf("tasks limits has no line %s:\n%s", line, r)
		}
	}
	if code, log := d.stop(); code != 0 {
		t.Errorf("exit %d:\n%s", code, log)
	}
}
