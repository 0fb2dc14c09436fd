package chaostest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/peonify/peonify"
)

// Record kinds. Each record is one line: the kind, the writer's process
// ID, the time in microseconds since the Unix epoch, then fields, all
// separated by single spaces.
const (
	kindClaim  = 'C' // task ID and attempt, for each task a Poll returned
	kindDone   = 'D' // task ID and attempt of a handler run that completed
	kindAck    = 'A' // task IDs of an Ack that returned nil
	kindAckErr = 'a' // task IDs of an Ack that returned an error
	kindNack   = 'N' // outcome and task ID of a Nack that returned nil
	kindQueued = 'Q' // task IDs of an Enqueue that returned nil
	kindBegin  = 'b' // task ID, attempt and key of a handler run that began
	kindEnd    = 'e' // task ID, attempt and "ok" or "err" of a handler run that returned
	kindMark   = 'm' // a name and fields of the writer's own (Ledger.Mark)
)

// LedgerConfig configures a Ledger. The zero value is valid.
type LedgerConfig struct {
	// Sync makes every record wait until it is on disk. Without it a record
	// is in the operating system's cache when the write returns: it
	// survives the death of the writing process, even by SIGKILL, which
	// is what chaos tests inflict, but not a crash of the machine.
	// Defaults to false.
	Sync bool
}

// Ledger is an append-only file in which processor processes record what
// happens to their tasks: each claim, each completed handler run, each ack
// and nack. Any number of processes may append to the same file at once;
// each record is one write to a file opened with O_APPEND, so records never
// interleave, and a record written before a process is killed is kept.
//
// A test reads the file back with ReadLedger and checks, with
// History.Verify, that no task was lost, none appeared from nowhere, and
// no task ran more often than the faults it suffered allow.
//
// A Ledger is safe for concurrent use.
type Ledger struct {
	f    *os.File
	pid  []byte // "<pid> ", the prefix of every record after its kind
	sync bool
}

// OpenLedger opens the ledger file at path for appending, creating it if
// it does not exist.
func OpenLedger(path string, cfg LedgerConfig) (*Ledger, error) {
	if path == "" {
		return nil, errors.New("chaostest: empty ledger path: give the name of a file that every process of the test can append to")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("chaostest: opening ledger: %w", err)
	}
	return &Ledger{f: f, pid: []byte(" " + strconv.Itoa(os.Getpid())), sync: cfg.Sync}, nil
}

// Close closes the ledger file.
func (l *Ledger) Close() error { return l.f.Close() }

// write appends one record made of kind, the process ID and fields.
func (l *Ledger) write(kind byte, fields ...string) error {
	n := 22 + len(l.pid)
	for _, f := range fields {
		n += 1 + len(f)
	}
	b := make([]byte, 0, n)
	b = append(b, kind)
	b = append(b, l.pid...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, time.Now().UnixMicro(), 10)
	for _, f := range fields {
		b = append(b, ' ')
		b = append(b, f...)
	}
	b = append(b, '\n')
	if _, err := l.f.Write(b); err != nil {
		return fmt.Errorf("chaostest: writing ledger: %w", err)
	}
	if l.sync {
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("chaostest: syncing ledger: %w", err)
		}
	}
	return nil
}

// Done records that a run of t completed. The Middleware calls it; call it
// yourself from a handler to record a completion at another point.
func (l *Ledger) Done(t *peonify.Task) error {
	return l.write(kindDone, escape(t.ID), strconv.Itoa(t.Attempt))
}

// Enqueued records that an Enqueue of the tasks with these IDs returned
// nil: for a producer process that the test may kill, so that the test
// learns which tasks must complete (History.Enqueued).
func (l *Ledger) Enqueued(ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	fields := make([]string, len(ids))
	for i, id := range ids {
		fields[i] = escape(id)
	}
	return l.write(kindQueued, fields...)
}

// Middleware returns a middleware that records each handler run that
// returns nil, before it returns to the processor, so that a run the
// processor never acknowledged (its process died first) is still on
// record. A run whose record cannot be written fails with that error and
// is retried. Put it first in Config.Middleware so that it sees the result
// of every other middleware.
func (l *Ledger) Middleware() peonify.Middleware {
	return func(next peonify.Handler) peonify.Handler {
		return peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			if err := next.Execute(ctx, t); err != nil {
				return err
			}
			return l.Done(t)
		})
	}
}

// Timed returns a middleware that records when each handler run begins,
// with the task's key, and when it returns, with whether it failed, so
// that a test can tell which runs overlapped and in what order they
// started (History.Runs): the flow-control tests check concurrency, rate
// and ordering limits with it. A run whose begin cannot be recorded fails
// with that error and is retried. Put it last in Config.Middleware, next
// to the handler, so that its times are the handler's own.
func (l *Ledger) Timed() peonify.Middleware {
	return func(next peonify.Handler) peonify.Handler {
		return peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			id, attempt := escape(t.ID), strconv.Itoa(t.Attempt)
			if err := l.write(kindBegin, id, attempt, escape(t.Key)); err != nil {
				return err
			}
			err := next.Execute(ctx, t)
			outcome := "ok"
			if err != nil {
				outcome = "err"
			}
			if werr := l.write(kindEnd, id, attempt, outcome); werr != nil && err == nil {
				return werr
			}
			return err
		})
	}
}

// Mark records an event of the test's own: name (one word, no spaces)
// and fields, with the writer's process ID and the time, read back with
// History.Marks. Fields are escaped as task IDs are, so they may hold
// any text.
func (l *Ledger) Mark(name string, fields ...string) error {
	out := make([]string, 0, 1+len(fields))
	out = append(out, escape(name))
	for _, f := range fields {
		out = append(out, escape(f))
	}
	return l.write(kindMark, out...)
}

// Wrap returns s with every claim, ack and nack recorded, so that a test
// knows which tasks a process held when it was killed or stopped (see
// History.Held). Claims are recorded before Poll returns them; acks and
// nacks after the stream accepted them. The wrapper intercepts only Poll,
// Ack and Nack; its Unwrap returns s, through which peonify.As, and with
// it the processor, finds s's optional interfaces and name.
func (l *Ledger) Wrap(s peonify.Stream) peonify.Stream {
	return &recorded{s: s, l: l}
}

// recorded is a Stream that writes its claims, acks and nacks to a Ledger.
type recorded struct {
	s peonify.Stream
	l *Ledger
}

func (r *recorded) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	ds, err := r.s.Poll(ctx, limit)
	if len(ds) > 0 {
		fields := make([]string, 0, 2*len(ds))
		for _, d := range ds {
			fields = append(fields, escape(d.Task.ID), strconv.Itoa(d.Task.Attempt))
		}
		if werr := r.l.write(kindClaim, fields...); werr != nil {
			// Unrecorded claims would make the duplicate bound too tight:
			// hand the tasks back and report the failure instead.
			for _, d := range ds {
				_ = r.s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeReleased, Reason: werr.Error()})
			}
			return nil, errors.Join(err, werr)
		}
	}
	return ds, err
}

func (r *recorded) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	err := r.s.Ack(ctx, ds...)
	if len(ds) == 0 {
		return err
	}
	kind := byte(kindAck)
	if err != nil {
		kind = kindAckErr
	}
	fields := make([]string, len(ds))
	for i, d := range ds {
		fields[i] = escape(d.Task.ID)
	}
	if werr := r.l.write(kind, fields...); werr != nil && err == nil {
		// The ack is done; a missing record only widens the bound.
		return nil
	}
	return err
}

func (r *recorded) Nack(ctx context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	err := r.s.Nack(ctx, d, opts)
	if err == nil {
		_ = r.l.write(kindNack, opts.Outcome.String(), escape(d.Task.ID))
	}
	return err
}

func (r *recorded) Close(ctx context.Context) error { return r.s.Close(ctx) }

// Unwrap returns the wrapped stream.
func (r *recorded) Unwrap() peonify.Stream { return r.s }

// escape makes a task ID safe to write as one field: bytes that would
// split it (space, control characters) and '%' are percent-encoded. IDs
// without them, as generated by peonify.NewID, are written as they are.
func escape(id string) string {
	if id == "" {
		return "%"
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c == '%' || c == 0x7f {
			return escapeSlow(id)
		}
	}
	return id
}

func escapeSlow(id string) string {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c == '%' || c == 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// unescape reverses escape.
func unescape(s string) string {
	if s == "%" {
		return ""
	}
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
