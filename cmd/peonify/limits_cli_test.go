package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/streams/pgstream"
	"github.com/peonify/peonify/streams/redisstream"
	"github.com/peonify/peonify/streams/sqlitestream"
	"github.com/redis/go-redis/v9"
)

// The stores whose limits the daemon runs end to end below enforce them.
var (
	_ peonify.Limiter = (*sqlitestream.Stream)(nil)
	_ peonify.Limiter = (*pgstream.Stream)(nil)
	_ peonify.Limiter = (*redisstream.Stream)(nil)
)

// limitsDaemonConfig runs "slow" tasks for 3s each, one at a time per
// key, on the store of the entry %s.
const limitsDaemonConfig = quickStop + `streams:
  - %s
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
	writeFile(t, dir, "peonify.yaml", fmt.Sprintf(limitsDaemonConfig, "{kind: sqlite, path: p.db}"))
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
// the dashboard, and `peonify tasks` lists what waits on a key, on each
// kind of store that enforces limits.
func TestLimitsEndToEnd(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { limitsEndToEnd(t, "sqlite", "{kind: sqlite, path: p.db}", "sqlite") })
	t.Run("postgres", func(t *testing.T) {
		url := testenv.URL(t, "postgres")
		t.Setenv("PEONIFY_CLI_TEST_PG", url)
		mustRun(t, t.TempDir(), "", "migrate", "--postgres", url)
		queue := fmt.Sprintf("cli_limits_%d", time.Now().UnixNano())
		limitsEndToEnd(t, "postgres", "{kind: postgres, name: pg, url: '${PEONIFY_CLI_TEST_PG}', queue: "+queue+"}", "pg")
	})
	t.Run("redis", func(t *testing.T) {
		url := testenv.URL(t, "redis")
		t.Setenv("PEONIFY_CLI_TEST_REDIS", url)
		queue := fmt.Sprintf("peonify-cli-limits-%d", time.Now().UnixNano())
		t.Cleanup(func() { deleteRedisQueue(url, queue) })
		limitsEndToEnd(t, "redis", "{kind: redis, name: rd, url: '${PEONIFY_CLI_TEST_REDIS}', queue: "+queue+"}", "rd")
	})
}

// limitsEndToEnd runs the limits of limitsDaemonConfig on the store of
// entry, a stream of kind named name.
func limitsEndToEnd(t *testing.T, kind, entry, name string) {
	dir := t.TempDir()
	writeFile(t, dir, "peonify.yaml", fmt.Sprintf(limitsDaemonConfig, entry))
	lines := `{"type": "slow", "id": "a1", "key": "acme"}` + "\n" + `{"type": "slow", "id": "a2", "key": "acme"}` + "\n" +
		`{"type": "slow", "id": "g1", "key": "globex"}` + "\n"
	mustRun(t, dir, lines, "enqueue", "-c", "peonify.yaml", "--jsonl")
	mustRun(t, dir, "", "enqueue", "-c", "peonify.yaml", "--type", "slow", "--id", "a3", "--key", "acme")

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
	inUse := regexp.MustCompile(`(?m)^peonify_limit_in_use\{limit="slow/key",stream="` + name + `"\} 2$`)
	waiting := regexp.MustCompile(`(?m)^peonify_limit_waiting\{limit="slow/key",stream="` + name + `"\} 2$`)
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
	mustRun(t, dir, "", "tasks", "purge", "--state", "pending", "--yes", "-c", "peonify.yaml")
}

// deleteRedisQueue removes the keys of a Redis queue a test made.
func deleteRedisQueue(url, queue string) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, _ := c.Keys(ctx, "peonify:*"+queue+"*").Result()
	if len(keys) > 0 {
		c.Del(ctx, keys...)
	}
}
