package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/streams/natsstream"
)

// brokerCase is a store on a broker, for runBrokerCase.
type brokerCase struct {
	entry  string   // the stream entry's fields, after "kind:"
	env    []string // variables the entry refers to
	direct []string // the store flags that select the same store without -c
	dedup  bool     // whether the broker refuses a second task with the same ID
}

// runBrokerCase runs a daemon on a broker store, gives it tasks with
// `peonify enqueue -c`, and inspects and repairs the store with `peonify
// tasks`, with -c and with the store flags.
func runBrokerCase(t *testing.T, bc brokerCase) {
	dir := newMarksDir(t, `
processor:
  workers: 4
streams:
  - name: q
    `+bc.entry+`
tasks:
  mark:
    executor: exec
    shell: 'cat > "marks/$PEONIFY_TASK_ID.json"'
  poison:
    executor: exec
    shell: 'echo "cannot parse this" >&2; exit 65'
    dead_exit_codes: [65]
`)
	for _, kv := range bc.env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	store := []string{"-c", "peonify.yaml"}

	d := startDaemon(t, dir, "peonify.yaml")
	d.waitLog("peonify: running")
	mustRun(t, dir, "", append([]string{"enqueue", "--type", "mark", "--id", "m1", "--payload", `{"n":1}`}, store...)...)
	mustRun(t, dir, `{"type":"mark","id":"m2","payload":[2]}`+"\n"+`{"type":"poison","id":"p1"}`+"\n",
		append([]string{"enqueue", "--jsonl"}, store...)...)
	for id, payload := range map[string]string{"m1": `{"n":1}`, "m2": `[2]`} {
		p := filepath.Join(dir, "marks", id+".json")
		waitFor(t, "task "+id+" to run", func() bool {
			b, _ := os.ReadFile(p)
			return string(b) == payload
		}, d.stderr)
	}
	if bc.dedup {
		r := mustRun(t, dir, "", append([]string{"enqueue", "--type", "mark", "--id", "m1"}, store...)...)
		if !strings.Contains(r.stderr, "task m1 is already enqueued") {
			t.Errorf("enqueueing m1 again: %s", r)
		}
	}

	waitFor(t, "the poison task to be dead", func() bool { return stats(t, dir, store...)["dead"] == 1 }, d.stderr)
	r := mustRun(t, dir, "", append([]string{"tasks", "list", "--state", "dead", "--json"}, store...)...)
	var dead []taskJSON
	if err := json.Unmarshal([]byte(r.stdout), &dead); err != nil {
		t.Fatalf("tasks list --json: %v\n%s", err, r)
	}
	if len(dead) != 1 || dead[0].ID != "p1" || !strings.Contains(dead[0].LastError, "cannot parse this") {
		t.Errorf("dead tasks %+v, want p1 with its error", dead)
	}
	// Every state, on a store that cannot list some of them (amqp): the
	// others are listed, the dead task among them.
	r = mustRun(t, dir, "", append([]string{"tasks", "list", "--json"}, store...)...)
	if err := json.Unmarshal([]byte(r.stdout), &dead); err != nil || !slices.ContainsFunc(dead, func(tj taskJSON) bool { return tj.ID == "p1" }) {
		t.Errorf("tasks list --json of every state does not show the dead task p1 (%v):\n%s", err, r)
	}
	if tj := show(t, dir, "p1", store...); tj.State != "dead" || tj.Type != "poison" {
		t.Errorf("tasks show p1: %+v", tj)
	}
	// With the store flags instead of the file: the same store.
	if s := stats(t, dir, bc.direct...); s["dead"] != 1 {
		t.Errorf("stats with %v: %v, want the dead task", bc.direct, s)
	}

	code, log := d.stop()
	if code != 0 {
		t.Fatalf("peonify run exited %d after SIGTERM; log:\n%s", code, log)
	}
	// With no processor running, the retried task stays pending.
	r = mustRun(t, dir, "", append([]string{"tasks", "retry", "p1"}, store...)...)
	if !strings.Contains(r.stdout, "retried 1 dead task") {
		t.Errorf("tasks retry: %s", r)
	}
	if s := stats(t, dir, store...); s["dead"] != 0 || s["pending"] != 1 {
		t.Errorf("stats %v after retry, want the task pending", s)
	}
	r = mustRun(t, dir, "", append([]string{"tasks", "purge", "--state", "pending", "--yes"}, store...)...)
	if !strings.Contains(r.stdout, "purged 1 pending task") {
		t.Errorf("tasks purge: %s", r)
	}
	if s := stats(t, dir, store...); s["total"] != 0 {
		t.Errorf("stats %v after the purge, want an empty store", s)
	}
}

func TestRunRedis(t *testing.T) {
	url := testenv.URL(t, "redis")
	queue := fmt.Sprintf("peonify-cli-test-%d", time.Now().UnixNano())
	t.Cleanup(func() { deleteRedisQueue(url, queue) })
	runBrokerCase(t, brokerCase{
		entry:  "kind: redis\n    url: ${PEONIFY_CLI_TEST_REDIS}\n    queue: " + queue,
		env:    []string{"PEONIFY_CLI_TEST_REDIS=" + url},
		direct: []string{"--redis", url, "--queue", queue},
		dedup:  true,
	})
}

func TestRunNATS(t *testing.T) {
	url := testenv.URL(t, "nats")
	stream := fmt.Sprintf("CLITEST_%d", time.Now().UnixNano())
	subject := strings.ToLower(stream) + ".tasks"
	t.Cleanup(func() {
		nc, err := nats.Connect(url)
		if err != nil {
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := natsstream.Teardown(ctx, js, natsstream.Config{Stream: stream, Subject: subject}); err != nil {
			t.Logf("removing the test's JetStream streams: %v", err)
		}
	})
	runBrokerCase(t, brokerCase{
		entry:  fmt.Sprintf("kind: nats\n    url: ${PEONIFY_CLI_TEST_NATS}\n    stream: %s\n    subject: %s", stream, subject),
		env:    []string{"PEONIFY_CLI_TEST_NATS=" + url},
		direct: []string{"--nats", url, "--nats-stream", stream},
		dedup:  true,
	})
}

func TestRunAMQP(t *testing.T) {
	url := testenv.URL(t, "amqp")
	queue := fmt.Sprintf("peonify-cli-test-%d", time.Now().UnixNano())
	t.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		for _, q := range []string{queue, queue + ".dead"} {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				t.Logf("deleting queue %s: %v", q, err)
				return
			}
		}
	})
	runBrokerCase(t, brokerCase{
		entry:  "kind: amqp\n    url: ${PEONIFY_CLI_TEST_AMQP}\n    queue: " + queue,
		env:    []string{"PEONIFY_CLI_TEST_AMQP=" + url},
		direct: []string{"--amqp", url, "--queue", queue},
	})
}
