package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/streams/natsstream"
)

// bigLines returns JSON lines: a small task, then one task per size with
// a string payload of that many bytes (quotes included), then a small
// task.
func bigLines(t *testing.T, sizes ...int) (string, map[string]string) {
	t.Helper()
	var b strings.Builder
	payloads := map[string]string{"first": `{"n":1}`, "last": `{"n":2}`}
	b.WriteString(`{"type":"t","id":"first","payload":{"n":1}}` + "\n")
	for i, size := range sizes {
		id := fmt.Sprintf("big%d", i)
		p := `"` + strings.Repeat(string(rune('a'+i)), size-2) + `"`
		payloads[id] = p
		fmt.Fprintf(&b, `{"type":"t","id":%q,"payload":%s}`+"\n", id, p)
	}
	b.WriteString(`{"type":"t","id":"last","payload":{"n":2}}` + "\n")
	return b.String(), payloads
}

// runWithFile runs the binary with stdin read from the file at path, as
// `peonify ... < path` does.
func runWithFile(t *testing.T, dir, path string, args ...string) result {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdin = f
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if xe, ok := err.(*exec.ExitError); ok {
		r.code = xe.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// A line longer than 16 MiB is a task like any other: the payload of
// each line arrives byte for byte, from a pipe (two 17 MiB lines, more
// than enqueue keeps in memory, so they go through the temporary file)
// and from a file.
func TestEnqueueJSONLLongLines(t *testing.T) {
	dir := t.TempDir()
	lines, payloads := bigLines(t, 17<<20, 17<<20)
	check := func(payloads map[string]string, store ...string) {
		t.Helper()
		if s := stats(t, dir, store...); s["total"] != len(payloads) {
			t.Fatalf("stats %v, want %d tasks", s, len(payloads))
		}
		for id, want := range payloads {
			tj := show(t, dir, id, store...)
			if got := compact(tj.Payload); got != want {
				t.Errorf("task %s: payload of %d bytes, want %d bytes as enqueued", id, len(got), len(want))
			}
		}
	}

	r := mustRun(t, dir, lines, "enqueue", "--jsonl", "--store", "piped.db")
	if got := strings.Fields(r.stdout); len(got) != len(payloads) {
		t.Fatalf("enqueue printed %d IDs, want %d: %s", len(got), len(payloads), r)
	}
	check(payloads, "--store", "piped.db")

	lines, payloads = bigLines(t, 17<<20)
	path := writeFile(t, dir, "tasks.jsonl", lines)
	if r := runWithFile(t, dir, path, "enqueue", "--jsonl", "--store", "file.db"); r.code != 0 {
		t.Fatalf("enqueue --jsonl < tasks.jsonl: %s", r)
	}
	check(payloads, "--store", "file.db")
}

// A line whose payload is larger than the store takes is reported with
// its number and the limit, with exit status 2, and nothing is stored,
// not even the lines before it.
func TestEnqueueJSONLOverTheLimitStoresNothing(t *testing.T) {
	url := testenv.URL(t, "nats")
	stream := fmt.Sprintf("CLIBIG_%d", time.Now().UnixNano())
	nc, js := testenv.ConnectJetStream(t, url)
	cfg := natsstream.Config{Stream: stream, Subject: strings.ToLower(stream) + ".tasks"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := natsstream.Setup(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = natsstream.Teardown(ctx, js, cfg)
	})
	limit := nc.MaxPayload() - natsEnvelope

	dir := t.TempDir()
	store := []string{"--nats", url, "--nats-stream", stream}
	lines, _ := bigLines(t, 100, int(nc.MaxPayload())+1)
	r := run(t, dir, lines, append([]string{"enqueue", "--jsonl"}, store...)...)
	if r.code != exitUsage || !strings.Contains(r.stderr, "line 3: ") || !strings.Contains(r.stderr, fmt.Sprint(limit)) ||
		!strings.Contains(r.stderr, "max_payload") || !strings.Contains(r.stderr, "nothing was stored") || r.stdout != "" {
		t.Errorf("enqueue with a line over the server's max_payload: want exit 2 naming line 3 and the limit %d: %s", limit, r)
	}
	if s := stats(t, dir, store...); s["total"] != 0 {
		t.Errorf("stats %v: the lines before the one over the limit were stored", s)
	}

	// A line longer than any store takes is refused as it is read, before
	// the store is even reached (here: nothing listens).
	lines, _ = bigLines(t, 65<<20+1)
	r = run(t, dir, lines, "enqueue", "--jsonl", "--nats", "nats://127.0.0.1:1")
	if r.code != exitUsage || !strings.Contains(r.stderr, "line 2 is longer than") || strings.Contains(r.stderr, "connect") {
		t.Errorf("enqueue with a line longer than any NATS server takes: %s", r)
	}
}

// Tasks that a file of several batches gives are stored in order, each
// line once, and --json tells each ID.
func TestEnqueueJSONLBatches(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	const n = 2*enqueueBatch + 7
	for i := range n {
		fmt.Fprintf(&b, `{"type":"t","id":"t%d","payload":%d}`+"\n", i, i)
		if i == 5 {
			b.WriteString("\n   \n") // blank lines are skipped
		}
	}
	path := writeFile(t, dir, "tasks.jsonl", b.String())
	r := runWithFile(t, dir, path, "enqueue", "--jsonl", "--json", "--store", "s.db")
	if r.code != 0 {
		t.Fatal(r)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	for i := range n {
		var got struct{ ID string }
		if err := dec.Decode(&got); err != nil || got.ID != fmt.Sprintf("t%d", i) {
			t.Fatalf("output %d: %+v, %v", i, got, err)
		}
	}
	if s := stats(t, dir, "--store", filepath.Join(dir, "s.db")); s["total"] != n {
		t.Errorf("stats %v, want %d tasks", s, n)
	}
}
