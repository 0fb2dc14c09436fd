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

	// HeaderKey is Task.Key, what the task belongs to for flow control (a
	// customer, a tenant): peonify.KeyHeader, matched in any case, at most
	// peonify.MaxKeyLen bytes. The stream carries it; it does not enforce
	// limits (see README.md, "Flow control").
	HeaderKey = peonify.KeyHeader

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

// decoded is a task read from a message, with the stream's own fields.
type decoded struct {
	task       peonify.Task
	attempts   int    // counted before this copy (HeaderAttempts)
	deadReason string // HeaderDeadReason
	deadAt     time.Time
}

// decodeTask reads a task from a message's headers and body. stored is
// when JetStream stored the message and seq its stream sequence; they
// stand in for a missing enqueue time and ID. It fails on a message that
// is not a valid task, such as one without a type. Payload aliases data.
//
// Header names are matched in any case; when one is given in several
// spellings, the exact one wins, else the one that sorts first.
func decodeTask(h nats.Header, data []byte, stored time.Time, seq uint64) (decoded, error) {
	var (
		d    decoded
		user map[string]string
		// The values of the headers decodeTask reads, by index in names.
		vals   [len(names)]string
		folded bool // a Nats- or Peonify- header not spelled as in names
	)
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		if i, ok := nameIndex(k); ok {
			vals[i] = vs[0]
			continue
		}
		if hasPrefixFold(k, "Nats-") || hasPrefixFold(k, "Peonify-") {
			folded = true
			continue
		}
		if user == nil {
			user = make(map[string]string, len(h))
		}
		user[k] = vs[0]
	}
	if folded {
		for i, name := range names {
			if vals[i] == "" {
				vals[i] = foldValue(h, name)
			}
		}
	}
	var errs []error
	t := &d.task
	t.Type = vals[iType]
	t.Headers = user
	t.Payload = data
	t.UniqueKey = vals[iUniqueKey]
	t.Key = vals[iKey]
	t.LastError = vals[iLastError]
	d.deadReason = vals[iDeadReason]
	if v := vals[iDeadAt]; v != "" {
		d.deadAt, _ = time.Parse(time.RFC3339Nano, v)
	}
	if v := vals[iEnqueuedAt]; v != "" {
		var err error
		if t.EnqueuedAt, err = time.Parse(time.RFC3339Nano, v); err != nil {
			errs = append(errs, fmt.Errorf("header %s: %q is not an RFC 3339 time", HeaderEnqueuedAt, v))
		}
	}
	if v := vals[iRunAt]; v != "" {
		var err error
		if t.RunAt, err = time.Parse(time.RFC3339Nano, v); err != nil {
			errs = append(errs, fmt.Errorf("header %s: %q is not an RFC 3339 time", HeaderRunAt, v))
		}
	}
	if v := vals[iMaxAttempts]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("header %s: %q is not a non-negative integer", HeaderMaxAttempts, v))
		}
		t.MaxAttempts = max(n, 0)
	}
	if v := vals[iPriority]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("header %s: %q is not an integer", HeaderPriority, v))
		}
		t.Priority = n
	}
	if v := vals[iAttempts]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("header %s: %q is not a non-negative integer", HeaderAttempts, v))
		}
		d.attempts = max(n, 0)
	}
	if id := vals[iID]; id != "" {
		t.ID = id
	} else if id := vals[iMsgID]; id != "" {
		t.ID = id
	} else {
		t.ID = "seq-" + strconv.FormatUint(seq, 10)
	}
	if t.EnqueuedAt.IsZero() {
		t.EnqueuedAt = stored
	}
	switch {
	case len(errs) > 0:
		return d, errs[0]
	case t.Type == "":
		return d, fmt.Errorf("the message has no %s header: a producer must name the task type", HeaderType)
	case len(t.Type) > peonify.MaxTypeLen:
		return d, fmt.Errorf("header %s is longer than %d bytes", HeaderType, peonify.MaxTypeLen)
	case len(t.ID) > peonify.MaxIDLen:
		return d, fmt.Errorf("the task ID is longer than %d bytes", peonify.MaxIDLen)
	case len(t.Key) > peonify.MaxKeyLen:
		return d, fmt.Errorf("header %s is longer than %d bytes", HeaderKey, peonify.MaxKeyLen)
	}
	return d, nil
}

// names are the headers decodeTask reads, indexed by the i constants.
var names = [...]string{
	iMsgID: HeaderMsgID, iType: HeaderType, iID: HeaderID, iEnqueuedAt: HeaderEnqueuedAt, iRunAt: HeaderRunAt,
	iMaxAttempts: HeaderMaxAttempts, iPriority: HeaderPriority, iUniqueKey: HeaderUniqueKey, iAttempts: HeaderAttempts,
	iLastError: HeaderLastError, iDeadReason: HeaderDeadReason, iDeadAt: HeaderDeadAt, iKey: HeaderKey,
}

const (
	iMsgID = iota
	iType
	iID
	iEnqueuedAt
	iRunAt
	iMaxAttempts
	iPriority
	iUniqueKey
	iAttempts
	iLastError
	iDeadReason
	iDeadAt
	iKey
)

// nameIndex returns the index in names of header k, spelled exactly.
func nameIndex(k string) (int, bool) {
	switch k {
	case HeaderMsgID:
		return iMsgID, true
	case HeaderType:
		return iType, true
	case HeaderID:
		return iID, true
	case HeaderEnqueuedAt:
		return iEnqueuedAt, true
	case HeaderRunAt:
		return iRunAt, true
	case HeaderMaxAttempts:
		return iMaxAttempts, true
	case HeaderPriority:
		return iPriority, true
	case HeaderUniqueKey:
		return iUniqueKey, true
	case HeaderAttempts:
		return iAttempts, true
	case HeaderLastError:
		return iLastError, true
	case HeaderDeadReason:
		return iDeadReason, true
	case HeaderDeadAt:
		return iDeadAt, true
	case HeaderKey:
		return iKey, true
	}
	return 0, false
}

// foldValue returns the first value of the spelling of name, in any case,
// that sorts first.
func foldValue(h nats.Header, name string) string {
	var key, v string
	for k, vs := range h {
		if len(vs) > 0 && strings.EqualFold(k, name) && (key == "" || k < key) {
			key, v = k, vs[0]
		}
	}
	return v
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
	if t.Key != "" {
		m.Header[HeaderKey] = []string{t.Key}
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
	for _, f := range []struct{ name, v string }{{"ID", t.ID}, {"Type", t.Type}, {"UniqueKey", t.UniqueKey}, {"Key", t.Key}} {
		if strings.ContainsAny(f.v, "\r\n") || untrimmed(f.v) {
			return &peonify.InvalidTaskError{ID: t.ID, Reason: "task " + f.name +
				" contains a line break or starts or ends with white space, which a NATS header does not keep"}
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
	if untrimmed(v) {
		return fmt.Errorf("task header %q has a value starting or ending with white space, which NATS headers drop", k)
	}
	return nil
}

// untrimmed reports whether s starts or ends with the white space that
// NATS trims from header values.
func untrimmed(s string) bool {
	return s != "" && (isBlank(s[0]) || isBlank(s[len(s)-1]))
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

// headerText makes s fit in a header value: line breaks become spaces,
// white space at either end goes, and it is cut by
// peonify.TruncateReason, never inside a UTF-8 character.
func headerText(s string) string {
	s = peonify.TruncateReason(s)
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(s)
	}
	return strings.Trim(s, " \t")
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
