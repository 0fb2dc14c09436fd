package natsstream

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/peonify/peonify"
)

// The NATS headers of a task message. The body of the message is the
// task's payload. Every other header whose name does not start with
// "Nats-" or "Peonify-" is a task header (Task.Headers). See README.md for
// the format that producers in any language use.
const (
	// HeaderMsgID is JetStream's deduplication header; a producer sets it
	// to the task ID. JetStream drops a second message with the same ID
	// within the stream's duplicate window.
	HeaderMsgID = "Nats-Msg-Id"

	// HeaderType is the task type, which selects the handler. Required.
	HeaderType = "Peonify-Type"

	// HeaderID is the task ID when it differs from Nats-Msg-Id: the
	// stream sets it on the copies it publishes for retries, releases and
	// dead letters. Producers set Nats-Msg-Id instead.
	HeaderID = "Peonify-Id"

	// HeaderEnqueuedAt is when the task was first stored, in RFC 3339.
	// Without it, the time JetStream stored the message is used.
	HeaderEnqueuedAt = "Peonify-Enqueued-At"

	// HeaderRunAt, in RFC 3339, holds the task until that time.
	HeaderRunAt = "Peonify-Run-At"

	// HeaderMaxAttempts overrides the processor's RetryPolicy.MaxAttempts
	// for this task (a decimal integer).
	HeaderMaxAttempts = "Peonify-Max-Attempts"

	// HeaderPriority is Task.Priority, carried but not used for ordering:
	// JetStream delivers in the order of storage.
	HeaderPriority = "Peonify-Priority"

	// HeaderUniqueKey is Task.UniqueKey, carried but not enforced.
	HeaderUniqueKey = "Peonify-Unique-Key"

	// HeaderAttempts is the number of attempts counted before this copy of
	// the task was published. The stream sets it; producers leave it out.
	HeaderAttempts = "Peonify-Attempts"

	// HeaderLastError is the error of the last failed attempt.
	HeaderLastError = "Peonify-Last-Error"

	// HeaderDeadReason is why a task was dead-lettered, on the copies in
	// the dead-letter stream.
	HeaderDeadReason = "Peonify-Dead-Reason"

	// HeaderDeadAt is when a task was dead-lettered, in RFC 3339.
	HeaderDeadAt = "Peonify-Dead-At"
)

// maxReason caps the length of an error kept in a header.
const maxReason = 4 << 10

// decoded is a task read from a message, with the stream's own fields.
type decoded struct {
	task       peonify.Task
	attempts   int    // counted before this copy (HeaderAttempts)
	deadReason string // HeaderDeadReason
	deadAt     time.Time
	hasID      bool // the ID came from a header, not from the sequence
}

// decodeTask reads a task from a message's headers and body. stored is
// when JetStream stored the message and seq its stream sequence; they
// stand in for a missing enqueue time and ID. It fails on a message that
// is not a valid task, such as one without a type. Payload aliases data.
func decodeTask(h nats.Header, data []byte, stored time.Time, seq uint64) (decoded, error) {
	var (
		d          decoded
		msgID, id  string
		typeSeen   bool
		user       map[string]string
		firstError error
	)
	fail := func(err error) {
		if firstError == nil {
			firstError = err
		}
	}
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		v := vs[0]
		switch {
		case hasPrefixFold(k, "Nats-"):
			if strings.EqualFold(k, HeaderMsgID) {
				msgID = v
			}
		case hasPrefixFold(k, "Peonify-"):
			switch {
			case strings.EqualFold(k, HeaderType):
				d.task.Type, typeSeen = v, true
			case strings.EqualFold(k, HeaderID):
				id = v
			case strings.EqualFold(k, HeaderEnqueuedAt):
				t, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					fail(fmt.Errorf("header %s: %q is not an RFC 3339 time", HeaderEnqueuedAt, v))
				}
				d.task.EnqueuedAt = t
			case strings.EqualFold(k, HeaderRunAt):
				t, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					fail(fmt.Errorf("header %s: %q is not an RFC 3339 time", HeaderRunAt, v))
				}
				d.task.RunAt = t
			case strings.EqualFold(k, HeaderMaxAttempts):
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					fail(fmt.Errorf("header %s: %q is not a non-negative integer", HeaderMaxAttempts, v))
				}
				d.task.MaxAttempts = max(n, 0)
			case strings.EqualFold(k, HeaderPriority):
				n, err := strconv.Atoi(v)
				if err != nil {
					fail(fmt.Errorf("header %s: %q is not an integer", HeaderPriority, v))
				}
				d.task.Priority = n
			case strings.EqualFold(k, HeaderUniqueKey):
				d.task.UniqueKey = v
			case strings.EqualFold(k, HeaderAttempts):
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					fail(fmt.Errorf("header %s: %q is not a non-negative integer", HeaderAttempts, v))
				}
				d.attempts = max(n, 0)
			case strings.EqualFold(k, HeaderLastError):
				d.task.LastError = v
			case strings.EqualFold(k, HeaderDeadReason):
				d.deadReason = v
			case strings.EqualFold(k, HeaderDeadAt):
				d.deadAt, _ = time.Parse(time.RFC3339Nano, v)
			}
		default:
			if user == nil {
				user = make(map[string]string, len(h))
			}
			user[k] = v
		}
	}
	d.task.Headers = user
	d.task.Payload = data
	switch {
	case id != "":
		d.task.ID, d.hasID = id, true
	case msgID != "":
		d.task.ID, d.hasID = msgID, true
	default:
		d.task.ID = "seq-" + strconv.FormatUint(seq, 10)
	}
	if d.task.EnqueuedAt.IsZero() {
		d.task.EnqueuedAt = stored
	}
	if firstError == nil {
		switch {
		case !typeSeen || d.task.Type == "":
			firstError = fmt.Errorf("the message has no %s header: a producer must name the task type", HeaderType)
		case len(d.task.Type) > 255:
			firstError = fmt.Errorf("header %s is longer than 255 bytes", HeaderType)
		case len(d.task.ID) > 255:
			firstError = errors.New("the task ID is longer than 255 bytes")
		}
	}
	return d, firstError
}

// hasPrefixFold reports whether s starts with prefix, ignoring case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// encodeTask returns the message that stores t (already prepared) on
// subject.
func encodeTask(t *peonify.Task, subject string) *nats.Msg {
	m := &nats.Msg{Subject: subject, Data: t.Payload, Header: make(nats.Header, 4+len(t.Headers))}
	for k, v := range t.Headers {
		m.Header[k] = []string{v}
	}
	m.Header[HeaderMsgID] = []string{t.ID}
	m.Header[HeaderType] = []string{t.Type}
	m.Header[HeaderEnqueuedAt] = []string{formatTime(t.EnqueuedAt)}
	if !t.RunAt.IsZero() {
		m.Header[HeaderRunAt] = []string{formatTime(t.RunAt)}
	}
	if t.MaxAttempts > 0 {
		m.Header[HeaderMaxAttempts] = []string{strconv.Itoa(t.MaxAttempts)}
	}
	if t.Priority != 0 {
		m.Header[HeaderPriority] = []string{strconv.Itoa(t.Priority)}
	}
	if t.UniqueKey != "" {
		m.Header[HeaderUniqueKey] = []string{t.UniqueKey}
	}
	return m
}

// checkHeaders reports task headers that NATS cannot carry unchanged.
func checkHeaders(t *peonify.Task) error {
	for k, v := range t.Headers {
		if err := checkHeader(k, v); err != nil {
			return &peonify.InvalidTaskError{ID: t.ID, Reason: err.Error()}
		}
	}
	for _, f := range []struct{ name, v string }{{"ID", t.ID}, {"Type", t.Type}, {"UniqueKey", t.UniqueKey}} {
		if strings.ContainsAny(f.v, "\r\n") || strings.HasPrefix(f.v, " ") || strings.HasPrefix(f.v, "\t") {
			return &peonify.InvalidTaskError{ID: t.ID, Reason: "task " + f.name +
				" contains a line break or starts with white space, which a NATS header cannot carry"}
		}
	}
	return nil
}

// checkHeader reports a task header that NATS cannot carry unchanged.
func checkHeader(k, v string) error {
	if k == "" {
		return errors.New("a task header has an empty name")
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return fmt.Errorf("task header name %q has a character NATS headers do not allow (control, space, ':' or non-ASCII)", k)
		}
	}
	if hasPrefixFold(k, "Nats-") || hasPrefixFold(k, "Peonify-") {
		return fmt.Errorf("task header name %q starts with a prefix kept for NATS and Peonify (Nats-, Peonify-)", k)
	}
	if strings.ContainsAny(v, "\r\n") {
		return fmt.Errorf("task header %q has a line break in its value, which a NATS header cannot carry", k)
	}
	if strings.HasPrefix(v, " ") || strings.HasPrefix(v, "\t") {
		return fmt.Errorf("task header %q has a value starting with white space, which NATS drops", k)
	}
	return nil
}

// headerText makes s fit in a header value: line breaks become spaces,
// leading white space goes, and it is cut at maxReason bytes.
func headerText(s string) string {
	if len(s) > maxReason {
		s = s[:maxReason]
	}
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(s)
	}
	return strings.TrimLeft(s, " \t")
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// copyHeaders returns h without JetStream's own headers, for a copy of a
// message published anew.
func copyHeaders(h nats.Header) nats.Header {
	c := make(nats.Header, len(h)+4)
	for k, vs := range h {
		if !hasPrefixFold(k, "Nats-") {
			c[k] = vs
		}
	}
	return c
}

// setHeader replaces every spelling of name in h by one value.
func setHeader(h nats.Header, name, v string) {
	delHeader(h, name)
	h[name] = []string{v}
}

// delHeader removes every spelling of name from h.
func delHeader(h nats.Header, name string) {
	for k := range h {
		if strings.EqualFold(k, name) {
			delete(h, k)
		}
	}
}
