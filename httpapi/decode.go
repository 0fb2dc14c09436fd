package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intake"
)

// Task headers the API sets on a task enqueued with an Idempotency-Key.
// A request may not set them itself.
const (
	// HeaderIdempotencyKey holds a hash of the token's name and the
	// Idempotency-Key: a retry with the same key finds its task by it.
	HeaderIdempotencyKey = "peonify-idempotency-key"
	// HeaderRequestHash holds a hash of the request (route and body): a
	// retry with the same key and another body is refused with 422.
	HeaderRequestHash = "peonify-request-hash"
)

// readBody reads the request body within Config.MaxBody.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := h.cfg.MaxBody
	if r.ContentLength > limit {
		w.Header().Set("Connection", "close")
		return nil, errorf(http.StatusRequestEntityTooLarge, "", "the body is %d bytes, more than the %d bytes this API accepts (Config.MaxBody): split the work into several requests", r.ContentLength, limit)
	}
	var buf bytes.Buffer
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, errorf(http.StatusRequestEntityTooLarge, "", "the body is more than the %d bytes this API accepts (Config.MaxBody): split the work into several requests", limit)
	case err != nil:
		return nil, errorf(http.StatusBadRequest, "", "reading the body: %v", err)
	}
	return buf.Bytes(), nil
}

// object is a decoded JSON object whose fields are read one by one, so
// that an error names its path.
type object struct {
	path   string
	fields map[string]json.RawMessage
}

// parseObject decodes raw, which must be a JSON object, at path ("" for
// the body), refusing fields that are not in allowed.
func parseObject(raw json.RawMessage, path string, allowed ...string) (*object, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		what := "the body"
		if path != "" {
			what = path
		}
		return nil, errorf(http.StatusBadRequest, path, "%s must be a JSON object", what)
	}
	o := &object{path: path}
	if err := json.Unmarshal(raw, &o.fields); err != nil {
		return nil, errorf(http.StatusBadRequest, path, "%s is not a valid JSON object: %v", cmpOr(path, "the body"), err)
	}
	for name := range o.fields {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			return nil, errorf(http.StatusBadRequest, o.field(name), "unknown field %q: the fields are %s", name, strings.Join(allowed, ", "))
		}
	}
	return o, nil
}

// parseBody decodes a request body that must be a JSON object.
func parseBody(body []byte, allowed ...string) (*object, error) {
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v)
		msg := "the body is not valid JSON"
		var se *json.SyntaxError
		field := syntaxErrorField(body)
		switch {
		case errors.As(err, &se) && field != "":
			msg = fmt.Sprintf("the body is not valid JSON: %v (at byte %d, in %s)", se, se.Offset, field)
		case errors.As(err, &se):
			msg = fmt.Sprintf("the body is not valid JSON: %v (at byte %d)", se, se.Offset)
		case len(bytes.TrimSpace(body)) == 0:
			msg = "the body is empty: send a JSON object"
		}
		return nil, errorf(http.StatusBadRequest, field, "%s", msg)
	}
	return parseObject(body, "", allowed...)
}

// syntaxErrorField returns the JSON path of the innermost value being
// read where body's first syntax error is, such as "tasks[1].priority"
// (or "tasks[1]" for an error between two of its fields), or "" when the
// error is in the body's object itself (a missing closing brace, say).
func syntaxErrorField(body []byte) string {
	type frame struct {
		object  bool
		key     string // the object's current key
		haveKey bool   // the key's value is being read
		index   int    // the array's current element
	}
	var stack []frame
	// done marks the value being read in the innermost container read.
	done := func() {
		if len(stack) == 0 {
			return
		}
		top := &stack[len(stack)-1]
		if top.object {
			top.haveKey = false
		} else {
			top.index++
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{object: true})
			continue
		case json.Delim('['):
			stack = append(stack, frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			done()
			continue
		}
		if n := len(stack); n > 0 && stack[n-1].object && !stack[n-1].haveKey {
			stack[n-1].key, stack[n-1].haveKey = tok.(string), true
			continue
		}
		done()
	}
	// The path of the value being read when the error came: each
	// container's element, up to the last one whose value is pending.
	if len(stack) == 0 || !stack[0].object {
		return "" // the body is not an object: no field
	}
	var path strings.Builder
	for _, f := range stack {
		switch {
		case f.object && !f.haveKey:
			return path.String()
		case f.object:
			if path.Len() > 0 {
				path.WriteByte('.')
			}
			path.WriteString(f.key)
		default:
			fmt.Fprintf(&path, "[%d]", f.index)
		}
	}
	return path.String()
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// field is the JSON path of a field of o.
func (o *object) field(name string) string {
	if o.path == "" {
		return name
	}
	return o.path + "." + name
}

// has reports whether the field is present and not null.
func (o *object) has(name string) bool {
	raw, ok := o.fields[name]
	return ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// get decodes a field into v, if present and not null; what describes the
// expected value for the error.
func (o *object) get(name string, v any, what string) error {
	if !o.has(name) {
		return nil
	}
	if err := json.Unmarshal(o.fields[name], v); err != nil {
		return errorf(http.StatusBadRequest, o.field(name), "%s must be %s", o.field(name), what)
	}
	return nil
}

// taskFields are the fields of a task in a request.
var taskFields = []string{"type", "id", "payload", "payload_base64", "headers", "key", "unique_key", "priority",
	"max_attempts", "run_at", "delay", "store"}

// workflowTaskFields are those of a task of a workflow.
var workflowTaskFields = append(append([]string(nil), taskFields...), "parents", "allow_failed_parents")

// taskRequest is one task of a request.
type taskRequest struct {
	task  *peonify.Task
	store string // "" for the default
	field string // the JSON path of the task, "" for the body
}

// parseTask reads a task at path from raw; inWorkflow allows parents.
func parseTask(o *object, now time.Time, inWorkflow bool) (*taskRequest, error) {
	t := &peonify.Task{}
	tr := &taskRequest{task: t, field: o.path}
	var (
		payloadB64, runAt string
		key, store        string
	)
	steps := []error{
		o.get("type", &t.Type, "a string"),
		o.get("id", &t.ID, "a string"),
		o.get("payload_base64", &payloadB64, "a string of standard base64"),
		o.get("headers", &t.Headers, "an object of strings"),
		o.get("key", &key, "a string"),
		o.get("unique_key", &t.UniqueKey, "a string"),
		o.get("priority", &t.Priority, "an integer"),
		o.get("max_attempts", &t.MaxAttempts, "an integer"),
		o.get("run_at", &runAt, "an RFC 3339 time string"),
		o.get("store", &store, "a string"),
	}
	if inWorkflow {
		steps = append(steps,
			o.get("parents", &t.Parents, "an array of task IDs"),
			o.get("allow_failed_parents", &t.AllowFailedParents, "a boolean"))
	}
	for _, err := range steps {
		if err != nil {
			return nil, err
		}
	}
	tr.store = store
	switch {
	case !o.has("type") || t.Type == "":
		return nil, errorf(http.StatusBadRequest, o.field("type"), "%s is required: the task type, a name registered in the processor's TaskList", o.field("type"))
	case len(t.Type) > peonify.MaxTypeLen:
		return nil, errorf(http.StatusUnprocessableEntity, o.field("type"), "%s is longer than %d bytes", o.field("type"), peonify.MaxTypeLen)
	case o.has("id") && t.ID == "":
		return nil, errorf(http.StatusUnprocessableEntity, o.field("id"), "%s is empty: leave it out to have one generated", o.field("id"))
	case len(t.ID) > peonify.MaxIDLen:
		return nil, errorf(http.StatusUnprocessableEntity, o.field("id"), "%s is longer than %d bytes", o.field("id"), peonify.MaxIDLen)
	case hasControl(t.ID):
		return nil, errorf(http.StatusUnprocessableEntity, o.field("id"), "%s holds control characters", o.field("id"))
	case len(t.UniqueKey) > peonify.MaxUniqueKeyLen:
		return nil, errorf(http.StatusUnprocessableEntity, o.field("unique_key"), "%s is longer than %d bytes", o.field("unique_key"), peonify.MaxUniqueKeyLen)
	case t.MaxAttempts < 0:
		return nil, errorf(http.StatusUnprocessableEntity, o.field("max_attempts"), "%s is negative: leave it out (or 0) for the processor's default", o.field("max_attempts"))
	case o.has("payload") && o.has("payload_base64"):
		return nil, errorf(http.StatusUnprocessableEntity, o.field("payload_base64"), "send either %s or %s, not both", o.field("payload"), o.field("payload_base64"))
	case o.has("run_at") && o.has("delay"):
		return nil, errorf(http.StatusUnprocessableEntity, o.field("delay"), "send either %s or %s, not both", o.field("run_at"), o.field("delay"))
	}
	if o.has("payload") {
		var buf bytes.Buffer
		if err := json.Compact(&buf, o.fields["payload"]); err != nil {
			return nil, errorf(http.StatusBadRequest, o.field("payload"), "%s is not valid JSON", o.field("payload"))
		}
		t.Payload = buf.Bytes()
	}
	if payloadB64 != "" {
		b, err := base64.StdEncoding.DecodeString(payloadB64)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, o.field("payload_base64"), "%s is not standard base64 (RFC 4648, with padding): %v", o.field("payload_base64"), err)
		}
		t.Payload = b
	}
	for name := range t.Headers {
		if strings.EqualFold(name, HeaderIdempotencyKey) || strings.EqualFold(name, HeaderRequestHash) {
			return nil, errorf(http.StatusUnprocessableEntity, o.field("headers")+"."+name, "header %q is set by the API for Idempotency-Key requests; a request may not set it", name)
		}
		if name == "" {
			return nil, errorf(http.StatusUnprocessableEntity, o.field("headers"), "%s has an empty header name", o.field("headers"))
		}
	}
	k, err := intake.Key(key, t.Headers)
	if err != nil {
		return nil, errorf(http.StatusUnprocessableEntity, o.field("key"), "%s: %v", o.field("key"), err)
	}
	t.Key = k
	if runAt != "" {
		at, err := time.Parse(time.RFC3339Nano, runAt)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, o.field("run_at"), "%s is not an RFC 3339 time such as \"2026-01-02T15:04:05Z\": %v", o.field("run_at"), err)
		}
		t.RunAt = at
	}
	if o.has("delay") {
		d, err := parseDuration(o.fields["delay"])
		if err != nil {
			return nil, errorf(http.StatusBadRequest, o.field("delay"), "%s must be a duration such as \"30s\" or \"1h30m\", or a number of seconds: %v", o.field("delay"), err)
		}
		if d < 0 {
			return nil, errorf(http.StatusUnprocessableEntity, o.field("delay"), "%s is negative", o.field("delay"))
		}
		if d > 0 {
			t.RunAt = now.Add(d)
		}
	}
	for i, p := range t.Parents {
		if p == "" || len(p) > peonify.MaxIDLen {
			return nil, errorf(http.StatusUnprocessableEntity, fmt.Sprintf("%s[%d]", o.field("parents"), i), "a parent ID must be 1 to %d bytes", peonify.MaxIDLen)
		}
	}
	return tr, nil
}

func hasControl(s string) bool {
	for _, c := range s {
		if c < ' ' || c == 0x7f || c == utf8.RuneError {
			return true
		}
	}
	return false
}

// parseDuration reads a Go duration string or a number of seconds.
func parseDuration(raw json.RawMessage) (time.Duration, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return time.ParseDuration(s)
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, errors.New("neither a string nor a number")
	}
	if f > float64(1<<62)/float64(time.Second) || f < -float64(1<<62)/float64(time.Second) {
		return 0, errors.New("out of range")
	}
	return time.Duration(f * float64(time.Second)), nil
}

// parseWait reads ?wait=: a Go duration or a number of seconds.
func parseWait(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f > 1e9 {
		return 0, errors.New("bad wait")
	}
	return time.Duration(f * float64(time.Second)), nil
}
