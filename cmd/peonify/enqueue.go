package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/peonify/peonify"
)

func enqueueCommand() *command {
	return &command{
		name:    "enqueue",
		summary: "add tasks to a store",
		usage:   "enqueue --type TYPE [--payload JSON|@FILE|-] [task flags] STORE\n  peonify enqueue --jsonl STORE < tasks.jsonl",
		about: `Enqueue stores one task, or a batch of tasks read as JSON lines from stdin,
in a durable store, and prints the ID of each (a new sortable ID unless --id
gives one). A task whose ID is already stored is not stored again: enqueue
says so on stderr and still succeeds, so retrying a script is safe.

STORE is --store FILE (a SQLite store), --postgres URL [--queue Q],
--redis URL [--queue Q], --nats URL [--nats-stream S], --amqp URL [--queue Q],
or -c peonify.yaml [--stream NAME].

With --jsonl, each line of stdin is one task:
  {"type": "email", "payload": {"to": "ada@example.com"}, "id": "welcome-42",
   "delay": "10s", "run_at": "2030-01-02T15:04:05Z", "priority": 5,
   "max_attempts": 3, "unique_key": "...", "headers": {"tenant": "acme"}}
Only type is required; payload is any JSON value and is stored as its JSON
text. A bad line enqueues nothing.`,
		example: `peonify enqueue --store peonify.db --type email --payload '{"to":"ada@example.com"}'
peonify enqueue --store peonify.db --type report --payload @report.json --delay 10m
generate-tasks | peonify enqueue -c peonify.yaml --stream orders --jsonl`,
		run: (*cli).enqueue,
	}
}

// headerFlags collects repeated --header key=value flags.
type headerFlags map[string]string

func (h headerFlags) String() string { return "" }

func (h headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not key=value", v)
	}
	h[k] = val
	return nil
}

// jsonlTask is one line of enqueue --jsonl.
type jsonlTask struct {
	Type        string            `json:"type"`
	Payload     json.RawMessage   `json:"payload"`
	ID          string            `json:"id"`
	Delay       string            `json:"delay"`
	RunAt       time.Time         `json:"run_at"`
	Priority    int               `json:"priority"`
	MaxAttempts int               `json:"max_attempts"`
	UniqueKey   string            `json:"unique_key"`
	Headers     map[string]string `json:"headers"`
}

// enqueueBatch is how many tasks go into one Enqueue call.
const enqueueBatch = 1000

func (c *cli) enqueue(cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	var sf storeFlags
	sf.register(fs)
	typ := fs.String("type", "", "the task `type` (required without --jsonl)")
	payloadArg := fs.String("payload", "", "the payload: `JSON|@FILE|-` (JSON text, a file to read, or stdin)")
	raw := fs.Bool("raw", false, "take the payload as bytes, without checking that it is JSON")
	id := fs.String("id", "", "the task `ID` and idempotency key (default: a new UUIDv7)")
	delay := fs.Duration("delay", 0, "run the task after this `duration`, e.g. 30s or 2h")
	runAt := fs.String("run-at", "", "run the task at this `time` (RFC 3339, e.g. 2030-01-02T15:04:05Z)")
	priority := fs.Int("priority", 0, "higher `number`s run first")
	maxAttempts := fs.Int("max-attempts", 0, "`n` attempts before the task is dead (default: the processor's retry.max_attempts)")
	uniqueKey := fs.String("unique-key", "", "store at most one live task with this `key`")
	headers := headerFlags{}
	fs.Var(headers, "header", "a task header as `key=value` (repeatable)")
	jsonl := fs.Bool("jsonl", false, "read tasks from stdin, one JSON object per line")
	jsonOut := fs.Bool("json", false, `print {"id", "duplicate"} per task instead of the bare ID`)
	args, err := c.parse(cmd, fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(args); err != nil {
		return err
	}

	var tasks []*peonify.Task
	var lines []int // input line of each task, for --jsonl messages
	if *jsonl {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, name := range []string{"type", "payload", "raw", "id", "delay", "run-at", "priority", "max-attempts", "unique-key", "header"} {
			if set[name] {
				return usagef("--%s cannot be used with --jsonl: each line sets its own fields", name)
			}
		}
		if tasks, lines, err = readJSONL(c.stdin); err != nil {
			return err
		}
		if len(tasks) == 0 {
			return usagef("--jsonl read no tasks from stdin")
		}
	} else {
		if *typ == "" {
			return usagef("--type is required: the task type, as named in the processor's task list")
		}
		t := &peonify.Task{Type: *typ, ID: *id, Priority: *priority, MaxAttempts: *maxAttempts, UniqueKey: *uniqueKey}
		if len(headers) > 0 {
			t.Headers = headers
		}
		if t.Payload, err = c.readPayload(*payloadArg, *raw); err != nil {
			return err
		}
		if t.RunAt, err = when(*delay, *runAt); err != nil {
			return err
		}
		tasks, lines = []*peonify.Task{t}, []int{0}
	}
	seen := make(map[string]int, len(tasks))
	for i, t := range tasks {
		if t.ID == "" {
			t.ID = peonify.NewID()
		}
		if err := t.Validate(); err != nil {
			return usagef("%s%s", lineRef(lines[i]), strings.TrimPrefix(err.Error(), "peonify: "))
		}
		if j, dup := seen[t.ID]; dup {
			return usagef("%sid %q repeats line %d: give each task its own ID", lineRef(lines[i]), t.ID, lines[j])
		}
		seen[t.ID] = i
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := sf.open(ctx, c, false)
	if err != nil {
		return err
	}
	defer st.close()
	enq, err := st.enqueuer()
	if err != nil {
		return err
	}

	out := bufio.NewWriter(c.stdout)
	defer out.Flush()
	stored, dups := 0, 0
	for start := 0; start < len(tasks); start += enqueueBatch {
		batch := tasks[start:min(start+enqueueBatch, len(tasks))]
		dup := map[string]bool{}
		if err := enq.Enqueue(ctx, batch...); err != nil {
			var de *peonify.DuplicateError
			if !errors.As(err, &de) {
				if stored > 0 {
					return fmt.Errorf("after %d tasks were stored: %w", stored, err)
				}
				return err
			}
			for _, id := range de.IDs {
				dup[id] = true
			}
		}
		for i, t := range batch {
			isDup := dup[t.ID]
			if isDup {
				dups++
				fmt.Fprintf(c.stderr, "peonify enqueue: %stask %s is already enqueued (same ID or unique key): not stored again\n", lineRef(lines[start+i]), t.ID)
			} else {
				stored++
			}
			if *jsonOut {
				b, _ := json.Marshal(struct {
					ID        string `json:"id"`
					Duplicate bool   `json:"duplicate"`
				}{t.ID, isDup})
				out.Write(append(b, '\n'))
			} else {
				fmt.Fprintln(out, t.ID)
			}
		}
	}
	if len(tasks) > 1 {
		fmt.Fprintf(c.stderr, "peonify enqueue: stored %d tasks in the %s (%d duplicates)\n", stored, st.desc, dups)
	}
	return out.Flush()
}

func lineRef(line int) string {
	if line == 0 {
		return ""
	}
	return fmt.Sprintf("line %d: ", line)
}

// readPayload reads --payload: JSON text, @file or - for stdin.
func (c *cli) readPayload(arg string, raw bool) ([]byte, error) {
	var (
		b    []byte
		from = "--payload"
		err  error
	)
	switch {
	case arg == "-":
		from = "stdin"
		if b, err = io.ReadAll(c.stdin); err != nil {
			return nil, fmt.Errorf("reading the payload from stdin: %w", err)
		}
	case strings.HasPrefix(arg, "@"):
		from = arg[1:]
		if b, err = os.ReadFile(arg[1:]); err != nil {
			return nil, usagef("--payload %s: %v", arg, err)
		}
	default:
		b = []byte(arg)
	}
	if !raw && len(b) > 0 && !json.Valid(b) {
		return nil, usagef("the payload from %s is not valid JSON: fix it, or pass --raw to store the bytes as they are", from)
	}
	return b, nil
}

// when returns the RunAt of --delay or --run-at.
func when(delay time.Duration, runAt string) (time.Time, error) {
	switch {
	case delay != 0 && runAt != "":
		return time.Time{}, usagef("give --delay or --run-at, not both")
	case delay < 0:
		return time.Time{}, usagef("--delay must not be negative")
	case delay > 0:
		return time.Now().Add(delay), nil
	case runAt != "":
		t, err := time.Parse(time.RFC3339, runAt)
		if err != nil {
			return time.Time{}, usagef("--run-at %q is not an RFC 3339 time like 2030-01-02T15:04:05Z", runAt)
		}
		return t, nil
	}
	return time.Time{}, nil
}

// readJSONL reads tasks, one JSON object per line; blank lines are
// skipped.
func readJSONL(r io.Reader) ([]*peonify.Task, []int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	var (
		tasks []*peonify.Task
		lines []int
		now   = time.Now()
	)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var jt jsonlTask
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&jt); err != nil {
			return nil, nil, usagef("line %d: %s (fields: type, payload, id, delay, run_at, priority, max_attempts, unique_key, headers)",
				n, strings.TrimPrefix(err.Error(), "json: "))
		}
		if dec.More() {
			return nil, nil, usagef("line %d: more than one JSON value: put one task per line", n)
		}
		if jt.Type == "" {
			return nil, nil, usagef(`line %d: "type" is required`, n)
		}
		t := &peonify.Task{Type: jt.Type, ID: jt.ID, Priority: jt.Priority, MaxAttempts: jt.MaxAttempts,
			UniqueKey: jt.UniqueKey, Headers: jt.Headers, RunAt: jt.RunAt}
		if len(jt.Payload) > 0 && !bytes.Equal(jt.Payload, []byte("null")) {
			t.Payload = []byte(jt.Payload)
		}
		if jt.Delay != "" {
			if !jt.RunAt.IsZero() {
				return nil, nil, usagef(`line %d: give "delay" or "run_at", not both`, n)
			}
			d, err := time.ParseDuration(jt.Delay)
			if err != nil || d < 0 {
				return nil, nil, usagef(`line %d: "delay" %q is not a duration like 30s or 2h`, n, jt.Delay)
			}
			t.RunAt = now.Add(d)
		}
		tasks = append(tasks, t)
		lines = append(lines, n)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("reading stdin: %w", err)
	}
	return tasks, lines, nil
}
