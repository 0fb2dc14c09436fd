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
		usage:   "enqueue --type TYPE [--payload JSON|@FILE|-] [task flags] STORE\n  peonify enqueue --jsonl STORE < tasks.jsonl\n  peonify enqueue --workflow FILE.json STORE",
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
   "max_attempts": 3, "unique_key": "...", "key": "acme", "headers": {"tenant": "acme"}}
Only type is required; payload is any JSON value and is stored as its JSON
text. Every line is checked before any task is stored: a bad line (not
JSON, no type, an ID that an earlier line has, a payload larger than the
store takes) is reported with its number and stores nothing, with exit
status 2. A payload may be as large as the store takes: 1 GB on SQLite and
Postgres, 512 MiB on Redis, 128 MiB on RabbitMQ (its default
max_message_size), and the server's max_payload on NATS (1 MiB by
default). Memory use stays bounded by the longest line, however many lines
there are: a piped stdin is copied to a temporary file to be read twice.
Tasks are stored in batches; if the store fails midway, enqueue says up to
which line the tasks were stored.

With --workflow FILE.json (or - for stdin), enqueue stores a workflow: tasks
with dependencies, all of them or none, in a store that runs workflows
(sqlite, postgres, redis). It prints the workflow's ID. The file is one JSON
document:
  {"id": "nightly-2030-01-02", "tasks": [
    {"id": "fetch", "type": "fetch", "payload": {"day": "2030-01-02"}},
    {"id": "resize", "type": "resize", "parents": ["fetch"]},
    {"type": "report", "parents": ["fetch", "resize"], "allow_failed_parents": true}]}
A task starts once all its parents are done, and is cancelled if one of them
is dead or cancelled, unless it sets allow_failed_parents. Tasks take the
fields of a --jsonl line too. A workflow whose ID is stored already is not
stored again; enqueue says so and succeeds.`,
		example: `peonify enqueue --store peonify.db --type email --payload '{"to":"ada@example.com"}'
peonify enqueue --store peonify.db --type report --payload @report.json --delay 10m
generate-tasks | peonify enqueue -c peonify.yaml --stream orders --jsonl
peonify enqueue --store peonify.db --workflow nightly.json`,
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
	Key         string            `json:"key"`
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
	key := fs.String("key", "", "the task's flow-control `key` (a tenant, a customer) that per-key limits apply to")
	headers := headerFlags{}
	fs.Var(headers, "header", "a task header as `key=value` (repeatable)")
	jsonl := fs.Bool("jsonl", false, "read tasks from stdin, one JSON object per line")
	workflow := fs.String("workflow", "", "enqueue the workflow of this JSON `file` (- for stdin): its tasks and their parents, all or none")
	jsonOut := fs.Bool("json", false, `print {"id", "duplicate"} per task instead of the bare ID`)
	if err := c.parseFlags(cmd, fs, args); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := sf.resolve(c, false)
	if err != nil {
		return err
	}
	if *workflow != "" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, name := range []string{"jsonl", "type", "payload", "raw", "id", "delay", "run-at", "priority", "max-attempts", "unique-key", "key", "header"} {
			if set[name] {
				return usagef("--%s cannot be used with --workflow: the file sets each task's fields", name)
			}
		}
		w, err := c.readWorkflow(*workflow, time.Now())
		if err != nil {
			return err
		}
		if err := st.open(ctx); err != nil {
			return err
		}
		defer st.close()
		return c.enqueueWorkflow(ctx, st, w, *jsonOut)
	}
	var next func() (*peonify.Task, int, error) // the tasks to store, each with its input line
	if *jsonl {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, name := range []string{"type", "payload", "raw", "id", "delay", "run-at", "priority", "max-attempts", "unique-key", "key", "header"} {
			if set[name] {
				return usagef("--%s cannot be used with --jsonl: each line sets its own fields", name)
			}
		}
		in := &jsonlInput{st: st, in: c.stdin, now: time.Now()}
		defer in.close()
		if err := in.check(); err != nil {
			return err
		}
		if err := st.open(ctx); err != nil {
			return err
		}
		defer st.close()
		if err := in.checkOpen(); err != nil {
			return err
		}
		if next, err = in.reread(); err != nil {
			return err
		}
	} else {
		if *typ == "" {
			return usagef("--type is required: the task type, as named in the processor's task list")
		}
		t := &peonify.Task{Type: *typ, ID: *id, Priority: *priority, MaxAttempts: *maxAttempts, UniqueKey: *uniqueKey, Key: *key}
		if len(headers) > 0 {
			t.Headers = headers
		}
		if t.Payload, err = c.readPayload(*payloadArg, *raw); err != nil {
			return err
		}
		if t.RunAt, err = when(*delay, *runAt); err != nil {
			return err
		}
		if err := t.Validate(); err != nil {
			return usagef("%s", strings.TrimPrefix(err.Error(), "peonify: "))
		}
		if err := st.open(ctx); err != nil {
			return err
		}
		defer st.close()
		next = func() (*peonify.Task, int, error) {
			out := t
			t = nil
			return out, 0, nil
		}
	}
	enq, err := st.enqueuer()
	if err != nil {
		return err
	}
	return c.storeTasks(ctx, st, enq, next, *jsonOut)
}

// storeTasks stores the tasks that next returns, in batches of at most
// enqueueBatch tasks and about batchBytes bytes, and prints the ID of each.
func (c *cli) storeTasks(ctx context.Context, st *store, enq peonify.Enqueuer, next func() (*peonify.Task, int, error), jsonOut bool) error {
	out := bufio.NewWriter(c.stdout)
	defer out.Flush()
	var (
		stored, dups, total int
		lastStored          int // the input line of the last task of the stored batches
		tasks               []*peonify.Task
		lines               []int
	)
	flush := func() error {
		if len(tasks) == 0 {
			return nil
		}
		dup := map[string]bool{}
		if err := enq.Enqueue(ctx, tasks...); err != nil {
			var de *peonify.DuplicateError
			if !errors.As(err, &de) {
				switch {
				case total == 0:
					return err
				case lines[0] == 0:
					return fmt.Errorf("after %d tasks were stored: %w", total, err)
				default:
					return fmt.Errorf("storing the tasks of lines %d to %d: %w; the %d tasks of the lines up to %d were stored, and no line after them",
						lines[0], lines[len(lines)-1], err, total, lastStored)
				}
			}
			for _, id := range de.IDs {
				dup[id] = true
			}
		}
		for i, t := range tasks {
			isDup := dup[t.ID]
			if isDup {
				dups++
				fmt.Fprintf(c.stderr, "peonify enqueue: %stask %s is already enqueued (same ID or unique key): not stored again\n", lineRef(lines[i]), t.ID)
			} else {
				stored++
			}
			if jsonOut {
				b, _ := json.Marshal(struct {
					ID        string `json:"id"`
					Duplicate bool   `json:"duplicate"`
				}{t.ID, isDup})
				out.Write(append(b, '\n'))
			} else {
				fmt.Fprintln(out, t.ID)
			}
		}
		total += len(tasks)
		lastStored = lines[len(lines)-1]
		tasks, lines = tasks[:0], lines[:0]
		return nil
	}
	size := 0
	for {
		t, line, err := next()
		if err != nil {
			return err
		}
		if t == nil {
			break
		}
		if t.ID == "" {
			t.ID = peonify.NewID()
		}
		if len(tasks) > 0 && (len(tasks) == enqueueBatch || size+len(t.Payload) > batchBytes) {
			if err := flush(); err != nil {
				return err
			}
			size = 0
		}
		tasks, lines = append(tasks, t), append(lines, line)
		size += len(t.Payload)
	}
	if err := flush(); err != nil {
		return err
	}
	if total > 1 {
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

// Bounds of enqueue --jsonl.
const (
	// jsonlSlack is how much longer than the store's payload limit a line
	// may be: room for the task's other fields.
	jsonlSlack = 1 << 20
	// batchBytes bounds the payload bytes of one Enqueue call (a larger
	// task goes alone).
	batchBytes = 16 << 20
	// spoolMemory is how much of a piped stdin is kept in memory for the
	// second reading; the rest goes to a temporary file.
	spoolMemory = 32 << 20
)

// jsonlInput is the stdin of enqueue --jsonl. check reads it whole and
// checks every line before anything is stored, keeping no task; reread
// then reads it again, for storing. A stdin that is a file is read again
// from where it started; a pipe is copied aside (to memory, then to a
// temporary file) as check reads it. Memory use is bounded by the longest
// line and a batch, whatever the number of lines.
type jsonlInput struct {
	st  *store
	in  io.Reader
	now time.Time // of "delay" fields

	file   *os.File // stdin, when it is a file that can be read again ...
	offset int64    // ... from this offset
	spool  *spool   // a copy of stdin otherwise

	maxLine int64 // the longest line check took
	tasks   int
	largest struct { // the largest task, for a limit only known when the store is open
		line int
		size int64
	}
}

// check reads every line and checks its task, its ID (unique in the input)
// and its size against the store's payload limit.
func (in *jsonlInput) check() error {
	src := in.in
	if f, ok := in.in.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			if off, err := f.Seek(0, io.SeekCurrent); err == nil {
				in.file, in.offset = f, off
			}
		}
	}
	if in.file == nil {
		in.spool = &spool{}
		src = io.TeeReader(src, in.spool)
	}
	limit, _ := in.st.payloadLimit()
	in.maxLine = limit + jsonlSlack
	lr := &lineReader{r: bufio.NewReaderSize(src, 64<<10), max: in.maxLine}
	seen := make(map[string]int) // the line of each ID given
	for {
		line, n, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return in.lineError(err)
		}
		t, err := parseJSONLine(line, n, in.now)
		if err != nil {
			return err
		}
		if t == nil {
			continue
		}
		if err := t.Validate(); err != nil {
			return usagef("line %d: %s", n, strings.TrimPrefix(err.Error(), "peonify: "))
		}
		if t.ID != "" {
			if first, dup := seen[t.ID]; dup {
				return usagef("line %d: id %q repeats line %d: give each task its own ID", n, t.ID, first)
			}
			seen[t.ID] = n
		}
		size := in.st.taskSize(t)
		if size > limit {
			return in.sizeError(t, n, size)
		}
		if size > in.largest.size {
			in.largest.line, in.largest.size = n, size
		}
		in.tasks++
	}
	if in.tasks == 0 {
		return usagef("--jsonl read no tasks from stdin")
	}
	return nil
}

// lineError explains an error of lineReader.
func (in *jsonlInput) lineError(err error) error {
	var le *longLineError
	if !errors.As(err, &le) {
		return fmt.Errorf("reading stdin: %w", err)
	}
	limit, why := in.st.payloadLimit()
	return usagef("line %d is longer than %d bytes: the %s takes payloads of at most %d bytes (%s), and a line may add %d bytes for the other fields: nothing was stored",
		le.line, le.max, in.st.desc, limit, why, jsonlSlack)
}

// sizeError explains a task over the store's payload limit.
func (in *jsonlInput) sizeError(t *peonify.Task, line int, size int64) error {
	limit, why := in.st.payloadLimit()
	what := "the payload"
	if size != int64(len(t.Payload)) {
		what = "the payload with the task's headers"
	}
	return usagef("line %d: %s is %d bytes, more than the %d bytes the %s takes (%s): nothing was stored; store large data elsewhere and enqueue a reference to it",
		line, what, size, limit, in.st.desc, why)
}

// checkOpen checks the largest task against the payload limit of the
// opened store, which a NATS server sets.
func (in *jsonlInput) checkOpen() error {
	if limit, why := in.st.payloadLimit(); in.largest.size > limit {
		return usagef("line %d: the payload with the task's headers is %d bytes, more than the %d bytes the %s takes (%s): nothing was stored; store large data elsewhere and enqueue a reference to it",
			in.largest.line, in.largest.size, limit, in.st.desc, why)
	}
	return nil
}

// reread returns the tasks of the input again, one by one with their
// lines, and nil after the last.
func (in *jsonlInput) reread() (func() (*peonify.Task, int, error), error) {
	var src io.Reader
	if in.file != nil {
		if _, err := in.file.Seek(in.offset, io.SeekStart); err != nil {
			return nil, fmt.Errorf("reading stdin again: %w", err)
		}
		src = in.file
	} else {
		var err error
		if src, err = in.spool.reader(); err != nil {
			return nil, fmt.Errorf("reading the copy of stdin: %w", err)
		}
	}
	lr := &lineReader{r: bufio.NewReaderSize(src, 64<<10), max: in.maxLine}
	left := in.tasks
	return func() (*peonify.Task, int, error) {
		for left > 0 {
			line, n, err := lr.next()
			if err != nil {
				return nil, 0, fmt.Errorf("reading stdin again at line %d: %w (it changed while enqueue read it?)", n, err)
			}
			t, err := parseJSONLine(line, n, in.now)
			if err != nil {
				return nil, 0, err
			}
			if t != nil {
				left--
				return t, n, nil
			}
		}
		return nil, 0, nil
	}, nil
}

func (in *jsonlInput) close() {
	if in.spool != nil {
		in.spool.close()
	}
}

// lineReader reads lines of at most max bytes, without their line break,
// holding no more than one line.
type lineReader struct {
	r    *bufio.Reader
	max  int64
	n    int // the number of the last line read
	line []byte
}

// longLineError is a line longer than lineReader.max.
type longLineError struct {
	line int
	max  int64
}

func (e *longLineError) Error() string {
	return fmt.Sprintf("line %d is longer than %d bytes", e.line, e.max)
}

// next returns the next line and its number, or io.EOF after the last.
func (lr *lineReader) next() ([]byte, int, error) {
	lr.line = lr.line[:0]
	lr.n++
	for {
		chunk, err := lr.r.ReadSlice('\n')
		lr.line = append(lr.line, chunk...)
		line := bytes.TrimSuffix(lr.line, []byte("\n"))
		if int64(len(line)) > lr.max {
			return nil, lr.n, &longLineError{line: lr.n, max: lr.max}
		}
		switch {
		case err == nil:
			return line, lr.n, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, lr.n, nil
		default:
			return nil, lr.n, err
		}
	}
}

// parseJSONLine decodes line n of --jsonl into a task; a blank line gives
// nil.
func parseJSONLine(line []byte, n int, now time.Time) (*peonify.Task, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil, nil
	}
	var jt jsonlTask
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&jt); err != nil {
		return nil, usagef("line %d: %s (fields: type, payload, id, delay, run_at, priority, max_attempts, unique_key, key, headers)",
			n, strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return nil, usagef("line %d: more than one JSON value: put one task per line", n)
	}
	return jt.task(fmt.Sprintf("line %d", n), now)
}

// task returns the task that jt describes; where names it in errors.
func (jt *jsonlTask) task(where string, now time.Time) (*peonify.Task, error) {
	if jt.Type == "" {
		return nil, usagef(`%s: "type" is required`, where)
	}
	t := &peonify.Task{Type: jt.Type, ID: jt.ID, Priority: jt.Priority, MaxAttempts: jt.MaxAttempts,
		UniqueKey: jt.UniqueKey, Key: jt.Key, Headers: jt.Headers, RunAt: jt.RunAt}
	if len(jt.Payload) > 0 && !bytes.Equal(jt.Payload, []byte("null")) {
		t.Payload = []byte(jt.Payload)
	}
	if jt.Delay != "" {
		if !jt.RunAt.IsZero() {
			return nil, usagef(`%s: give "delay" or "run_at", not both`, where)
		}
		d, err := time.ParseDuration(jt.Delay)
		if err != nil || d < 0 {
			return nil, usagef(`%s: "delay" %q is not a duration like 30s or 2h`, where, jt.Delay)
		}
		t.RunAt = now.Add(d)
	}
	return t, nil
}

// spool keeps what is written to it, in memory up to spoolMemory bytes and
// then in a temporary file, which is removed at once and so never outlives
// the process.
type spool struct {
	mem  bytes.Buffer
	file *os.File
	err  error
}

func (s *spool) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.file == nil && s.mem.Len()+len(p) <= spoolMemory {
		return s.mem.Write(p)
	}
	if s.file == nil {
		f, err := os.CreateTemp("", "peonify-enqueue-*.jsonl")
		if err != nil {
			s.err = fmt.Errorf("keeping a copy of stdin: %w", err)
			return 0, s.err
		}
		os.Remove(f.Name())
		s.file = f
		if _, err := s.mem.WriteTo(f); err != nil {
			s.err = fmt.Errorf("keeping a copy of stdin: %w", err)
			return 0, s.err
		}
		s.mem = bytes.Buffer{}
	}
	n, err := s.file.Write(p)
	if err != nil {
		s.err = fmt.Errorf("keeping a copy of stdin: %w", err)
	}
	return n, s.err
}

// reader reads back what was written.
func (s *spool) reader() (io.Reader, error) {
	if s.file == nil {
		return &s.mem, nil
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return s.file, nil
}

func (s *spool) close() {
	if s.file != nil {
		s.file.Close()
	}
}
