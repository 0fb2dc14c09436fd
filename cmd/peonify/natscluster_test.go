package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/testcluster"
)

// TestRunNATSCluster runs the daemon on a 3-node JetStream cluster, its
// stream with three replicas and its url the three nodes' URLs, kills the
// node the daemon is connected to, and checks that the daemon fails over
// to another node and still runs the tasks enqueued after the kill.
func TestRunNATSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node nats-server cluster; skipped with -short")
	}
	cl := testcluster.StartNATS(t)
	dir := newMarksDir(t, `
processor:
  workers: 4
streams:
  - name: q
    kind: nats
    url: `+strings.Join(cl.URLs(), ",")+`
    stream: CLUSTER
    subject: cluster.tasks
    replicas: 3
    ack_wait: 2s
tasks:
  mark:
    executor: exec
    shell: 'cat > "marks/$PEONIFY_TASK_ID.json"'
`)
	store := []string{"-c", "peonify.yaml"}
	d := startDaemon(t, dir, "peonify.yaml")
	d.waitLog("peonify: running")

	// enqueue stores task id, again while the cluster elects a leader
	// (an enqueue fails meanwhile), until it is stored.
	enqueue := func(id string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := run(t, dir, "", append([]string{"enqueue", "--type", "mark", "--id", id, "--payload", `"` + id + `"`}, store...)...)
			if r.code == 0 || strings.Contains(r.stderr, "already enqueued") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("enqueueing %s for 30s: %s", id, r)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	ran := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			p := filepath.Join(dir, "marks", id+".json")
			waitFor(t, "task "+id+" to run", func() bool {
				b, _ := os.ReadFile(p)
				return string(b) == `"`+id+`"`
			}, d.stderr)
		}
	}

	var before []string
	for i := range 5 {
		before = append(before, fmt.Sprintf("before-%d", i))
		enqueue(before[i])
	}
	ran(before...)

	node, err := cl.ConnectedTo("peonify")
	if err != nil || node < 0 {
		t.Fatalf("no node has the daemon's connection (%v); log:\n%s", err, d.stderr)
	}
	cl.Kill(node)
	var after []string
	for i := range 5 {
		after = append(after, fmt.Sprintf("after-%d", i))
		enqueue(after[i])
	}
	ran(after...)
	if now, err := cl.ConnectedTo("peonify"); err != nil || now < 0 || now == node {
		t.Errorf("after node %d was killed, the daemon's connection is on node %d (%v), want another", node, now, err)
	}
	if code, log := d.stop(); code != 0 {
		t.Fatalf("peonify run exited %d after SIGTERM; log:\n%s", code, log)
	}
}
