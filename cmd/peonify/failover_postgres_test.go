//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/testcluster"
)

// TestRunPostgresFailover runs the daemon on a Postgres primary with a
// synchronous standby, through the multi-host URL with
// target_session_attrs=read-write, stops the primary as a crash would and
// promotes the standby. The daemon reconnects to the new primary by
// itself: the tasks enqueued before the failover and after it all run,
// and it still drains and exits 0 on SIGTERM.
func TestRunPostgresFailover(t *testing.T) {
	pair := testcluster.StartPostgres(t, testcluster.PostgresOptions{Synchronous: "on"})
	t.Setenv("PEONIFY_CLI_TEST_PG_PAIR", pair.URL())
	dir := newMarksDir(t, `
processor:
  workers: 4
streams:
  - {kind: postgres, name: q, url: '${PEONIFY_CLI_TEST_PG_PAIR}', queue: failover, lease: 3s, migrate: true, sync_commit: true}
tasks:
  mark:
    executor: exec
    shell: 'cat > "marks/$PEONIFY_TASK_ID.json"'
`)
	d := startDaemon(t, dir, "peonify.yaml")
	d.waitLog("peonify: running")

	// enqueue gives the daemon n tasks named prefix-i, retrying while no
	// server takes writes; a task a failed call stored is refused as a
	// duplicate the next time, which counts as stored.
	enqueue := func(prefix string, n int) []string {
		var ids, lines []string
		for i := range n {
			id := fmt.Sprintf("%s-%d", prefix, i)
			ids = append(ids, id)
			lines = append(lines, `{"type":"mark","id":"`+id+`","payload":{"n":`+fmt.Sprint(i)+`}}`)
		}
		deadline := time.Now().Add(30 * time.Second)
		for _, line := range lines {
			for {
				r := run(t, dir, line+"\n", "enqueue", "--jsonl", "-c", "peonify.yaml")
				if r.code == 0 || strings.Contains(r.stderr, "already enqueued") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("enqueue still fails 30s on: %s", r)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		return ids
	}
	waitMarks := func(ids []string) {
		t.Helper()
		for _, id := range ids {
			waitFor(t, "task "+id+" to run", func() bool { return fileExists(filepath.Join(dir, "marks", id+".json")) }, d.stderr)
		}
	}

	waitMarks(enqueue("before", 5))
	pending := enqueue("pending", 5) // may still be waiting or running at the failover
	pair.Failover(t)
	after := enqueue("after", 5)
	waitMarks(pending)
	waitMarks(after)

	code, log := d.stop()
	if code != 0 {
		t.Fatalf("peonify run exited %d after SIGTERM; log:\n%s", code, log)
	}
}
