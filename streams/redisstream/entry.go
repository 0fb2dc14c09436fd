package redisstream

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamkit"
)

// The fields of a stream entry: the format documented in README.md for
// producers in other languages. Only type is required.
const (
	fieldID          = "id"                   // task ID; defaults to the entry ID
	fieldType        = "type"                 // handler name
	fieldPayload     = "payload"              // bytes, usually JSON
	fieldHeaders     = "headers"              // JSON object of string values
	fieldPriority    = "priority"             // decimal integer, carried but not ordered on
	fieldMaxAttempts = "max_attempts"         // decimal integer
	fieldUniqueKey   = "unique_key"           // Task.UniqueKey
	fieldKey         = "key"                  // Task.Key, for flow control
	fieldEnqueuedAt  = "enqueued_at"          // Unix milliseconds; defaults to the entry ID's time
	fieldRunAt       = "run_at"               // Unix milliseconds, as the producer asked
	fieldAttempts    = "attempts"             // attempts counted before this entry was added
	fieldLastError   = "last_error"           // error of the last failed attempt, or the dead reason
	fieldDeadAt      = "dead_at"              // Unix milliseconds, in the dead stream
	fieldOrd         = "ord"                  // the task's place in its key's order, kept by retries (flow control)
	fieldWorkflow    = "workflow"             // Task.Workflow
	fieldParents     = "parents"              // Task.Parents, a JSON array of strings
	fieldAllowFailed = "allow_failed_parents" // "1" for Task.AllowFailedParents
)

// entry holds the fields of a stream entry or scheduled hash that Peonify
// reads. Unknown fields are ignored here and kept by the scripts.
type entry struct {
	id, typ, payload, headers, priority, maxAttempts  string
	uniqueKey, enqueuedAt, runAt, attempts, lastError string
	deadAt, key                                       string
	workflow, parents, allowFailed                    string
	hasPayload                                        bool
}

// set records one field.
func (e *entry) set(name, value string) {
	switch name {
	case fieldID:
		e.id = value
	case fieldType:
		e.typ = value
	case fieldPayload:
		e.payload, e.hasPayload = value, true
	case fieldHeaders:
		e.headers = value
	case fieldPriority:
		e.priority = value
	case fieldMaxAttempts:
		e.maxAttempts = value
	case fieldUniqueKey:
		e.uniqueKey = value
	case fieldEnqueuedAt:
		e.enqueuedAt = value
	case fieldRunAt:
		e.runAt = value
	case fieldAttempts:
		e.attempts = value
	case fieldLastError:
		e.lastError = value
	case fieldDeadAt:
		e.deadAt = value
	case fieldKey:
		e.key = value
	case fieldWorkflow:
		e.workflow = value
	case fieldParents:
		e.parents = value
	case fieldAllowFailed:
		e.allowFailed = value
	}
}

// entryFromMap reads the field map of go-redis' XMessage.
func entryFromMap(m map[string]any) entry {
	var e entry
	for k, v := range m {
		if s, ok := v.(string); ok {
			e.set(k, s)
		}
	}
	return e
}

// entryFromList reads a flat field-value list, as scripts and HGETALL
// through Do return it.
func entryFromList(l []any) entry {
	var e entry
	for i := 0; i+1 < len(l); i += 2 {
		k, _ := l[i].(string)
		v, _ := l[i+1].(string)
		e.set(k, v)
	}
	return e
}

// task builds the task of the entry with ID eid. counted is the number of
// attempts this delivery brings the task to (0 when it is not delivered).
// A malformed field never fails: it is read as its zero value, so that a
// task from another producer is always delivered and, if it cannot run,
// dead-lettered by the processor with a clear reason.
func (e *entry) task(eid string) *peonify.Task {
	t := &peonify.Task{
		ID:        e.id,
		Type:      e.typ,
		UniqueKey: e.uniqueKey,
		Key:       e.key,
		Workflow:  e.workflow,
		LastError: e.lastError,

		AllowFailedParents: e.allowFailed == "1",
		Headers:            streamkit.DecodeHeaders([]byte(e.headers)),
	}
	if e.parents != "" {
		_ = json.Unmarshal([]byte(e.parents), &t.Parents) // malformed: no parents
	}
	if t.Key == "" {
		// A producer that set the header rather than the field.
		t.Key = t.Headers[peonify.KeyHeader]
	}
	if t.ID == "" {
		t.ID = eid
	}
	if e.hasPayload {
		t.Payload = []byte(e.payload)
	}
	t.Priority = atoi(e.priority)
	t.MaxAttempts = max(atoi(e.maxAttempts), 0)
	if ms, ok := parseMs(e.enqueuedAt); ok {
		t.EnqueuedAt = ms
	} else if ms, _, ok := parseEntryID(eid); ok {
		t.EnqueuedAt = time.UnixMilli(int64(ms))
	}
	if ms, ok := parseMs(e.runAt); ok {
		t.RunAt = ms
	}
	return t
}

// counted returns the attempts counted before this entry was added.
func (e *entry) counted() int { return max(atoi(e.attempts), 0) }

// atoi reads a decimal integer, or 0.
func atoi(s string) int {
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0
	}
	return n
}

// parseMs reads Unix milliseconds.
func parseMs(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(n), true
}

// parseEntryID splits a stream entry ID "ms-seq".
func parseEntryID(id string) (ms, seq uint64, ok bool) {
	i := strings.IndexByte(id, '-')
	if i <= 0 {
		return 0, 0, false
	}
	ms, err := strconv.ParseUint(id[:i], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	seq, err = strconv.ParseUint(id[i+1:], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return ms, seq, true
}

// entryLess orders entry IDs as Redis does.
func entryLess(a, b string) bool {
	am, as, _ := parseEntryID(a)
	bm, bs, _ := parseEntryID(b)
	return am < bm || am == bm && as < bs
}

// checkTask refuses what the entry format cannot carry unchanged.
func checkTask(t *peonify.Task) error {
	if err := t.Validate(); err != nil {
		return err
	}
	return checkHeaders(t)
}

// checkHeaders refuses headers that JSON cannot carry unchanged.
func checkHeaders(t *peonify.Task) error {
	for k, v := range t.Headers {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return &peonify.InvalidTaskError{ID: t.ID, Reason: "header " + strconv.Quote(k) +
				" is not valid UTF-8: headers are stored as JSON, so encode binary values (base64, for example)"}
		}
	}
	return nil
}

// fields returns the entry fields of a task that Prepare has filled, as
// alternating names and values.
func fields(t *peonify.Task) ([]any, error) {
	f := make([]any, 0, 16)
	f = append(f, fieldID, t.ID, fieldType, t.Type)
	if len(t.Payload) > 0 {
		f = append(f, fieldPayload, t.Payload)
	}
	f = append(f, fieldEnqueuedAt, strconv.FormatInt(t.EnqueuedAt.UnixMilli(), 10))
	if len(t.Headers) > 0 {
		b, err := json.Marshal(t.Headers)
		if err != nil {
			return nil, &peonify.InvalidTaskError{ID: t.ID, Reason: "headers do not encode as JSON: " + err.Error()}
		}
		f = append(f, fieldHeaders, b)
	}
	if t.Priority != 0 {
		f = append(f, fieldPriority, strconv.Itoa(t.Priority))
	}
	if t.MaxAttempts != 0 {
		f = append(f, fieldMaxAttempts, strconv.Itoa(t.MaxAttempts))
	}
	if t.UniqueKey != "" {
		f = append(f, fieldUniqueKey, t.UniqueKey)
	}
	if t.Key != "" {
		f = append(f, fieldKey, t.Key)
	}
	if !t.RunAt.IsZero() {
		f = append(f, fieldRunAt, strconv.FormatInt(t.RunAt.UnixMilli(), 10))
	}
	if t.Workflow != "" {
		f = append(f, fieldWorkflow, t.Workflow)
	}
	if len(t.Parents) > 0 {
		b, _ := json.Marshal(t.Parents) // strings always encode
		f = append(f, fieldParents, b)
	}
	if t.AllowFailedParents {
		f = append(f, fieldAllowFailed, "1")
	}
	return f, nil
}
