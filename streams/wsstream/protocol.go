package wsstream

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intake"
)

// Subprotocol is the WebSocket subprotocol name of the protocol described
// in the package's README. The Handler selects it when a client offers it;
// a client that offers none is served the same protocol.
const Subprotocol = "peonify.v1"

// message is a task as a client sends it.
type message struct {
	ID          string            `json:"id"`
	Type        string            `json:"type"`
	Payload     json.RawMessage   `json:"payload,omitempty"`
	PayloadB64  *string           `json:"payload_b64,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Priority    int               `json:"priority,omitempty"`
	MaxAttempts int               `json:"max_attempts,omitempty"`
	RunAt       *time.Time        `json:"run_at,omitempty"`
	UniqueKey   string            `json:"unique_key,omitempty"`
	Key         string            `json:"key,omitempty"`
}

// reply is the server's answer to one message: an ack or a nack.
type reply struct {
	Ack       *string `json:"ack,omitempty"`
	Nack      *string `json:"nack,omitempty"`
	Error     string  `json:"error,omitempty"`
	Retryable bool    `json:"retryable,omitempty"`
}

// decodeError is a message that cannot become a task. ID is the message's
// id when it could be read, so that the nack names it.
type decodeError struct {
	ID     string
	Reason string
}

func (e *decodeError) Error() string { return e.Reason }

// decode turns one client message into a task. Payload keeps the exact
// bytes of the "payload" value, or the decoded bytes of "payload_b64".
func decode(data []byte) (*peonify.Task, *decodeError) {
	if !utf8.Valid(data) {
		return nil, &decodeError{Reason: "message is not valid UTF-8: send JSON text, and binary payloads in payload_b64"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m message
	if err := dec.Decode(&m); err != nil {
		return nil, &decodeError{ID: peekID(data), Reason: "message is not a task object: " + describeJSONError(err)}
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return nil, &decodeError{ID: m.ID, Reason: "message has data after its JSON object: send one task per message"}
	}
	switch {
	case m.ID == "":
		return nil, &decodeError{Reason: `message has no "id": give every task a unique id, the key that makes resending safe`}
	case m.Type == "":
		return nil, &decodeError{ID: m.ID, Reason: `message has no "type": name a task type the processor handles`}
	case m.Payload != nil && m.PayloadB64 != nil:
		return nil, &decodeError{ID: m.ID, Reason: `message has both "payload" and "payload_b64": send one of them`}
	}
	key, err := intake.Key(m.Key, m.Headers)
	if err != nil {
		return nil, &decodeError{ID: m.ID, Reason: `"key": ` + err.Error()}
	}
	t := &peonify.Task{
		ID:          m.ID,
		Key:         key,
		Type:        m.Type,
		Headers:     m.Headers,
		Priority:    m.Priority,
		MaxAttempts: m.MaxAttempts,
		UniqueKey:   m.UniqueKey,
	}
	if m.Payload != nil {
		t.Payload = m.Payload
	}
	if m.PayloadB64 != nil {
		p, err := base64.StdEncoding.DecodeString(*m.PayloadB64)
		if err != nil {
			return nil, &decodeError{ID: m.ID, Reason: `"payload_b64" is not standard base64 (RFC 4648, with padding): ` + err.Error()}
		}
		t.Payload = p
	}
	if m.RunAt != nil {
		t.RunAt = *m.RunAt
	}
	if err := t.Validate(); err != nil {
		var ie *peonify.InvalidTaskError
		if errors.As(err, &ie) {
			return nil, &decodeError{ID: m.ID, Reason: ie.Reason}
		}
		return nil, &decodeError{ID: m.ID, Reason: err.Error()}
	}
	return t, nil
}

// peekID returns the "id" of a message that did not decode as a task, if
// it is at least a JSON object with a string id, so that the nack can name
// it; otherwise "".
func peekID(data []byte) string {
	var m struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(data, &m) != nil {
		return ""
	}
	return m.ID
}

// describeJSONError rewords encoding/json errors for a client that is not
// written in Go.
func describeJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("JSON syntax error at byte %d: %v", se.Offset, se.Error())
	case errors.As(err, &te):
		if te.Field == "" {
			return "want a JSON object, got " + te.Value
		}
		return fmt.Sprintf("field %q must not be a %s", te.Field, te.Value)
	case errors.Is(err, io.EOF):
		return "empty message"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON text ends too early"
	}
	return err.Error()
}

// encode returns the message that sends t. A payload that is valid JSON
// with no surrounding white space travels as "payload" and arrives
// byte-exact; any other payload travels as "payload_b64".
func encode(t *peonify.Task) ([]byte, error) {
	if err := checkUTF8(t); err != nil {
		return nil, err
	}
	if len(t.Headers) > 0 {
		// The server would refuse a peonify-key header that is not the key.
		if _, err := intake.Key(t.Key, maps.Clone(t.Headers)); err != nil {
			return nil, &peonify.InvalidTaskError{ID: t.ID, Reason: "task Key: " + err.Error()}
		}
	}
	var b bytes.Buffer
	b.WriteString(`{"id":`)
	writeString(&b, t.ID)
	b.WriteString(`,"type":`)
	writeString(&b, t.Type)
	switch p := t.Payload; {
	case len(p) == 0:
	case rawJSON(p):
		b.WriteString(`,"payload":`)
		b.Write(p)
	default:
		b.WriteString(`,"payload_b64":"`)
		b.WriteString(base64.StdEncoding.EncodeToString(p))
		b.WriteByte('"')
	}
	if len(t.Headers) > 0 {
		h, err := json.Marshal(t.Headers)
		if err != nil {
			return nil, fmt.Errorf("wsstream: encoding headers of task %s: %w", t.ID, err)
		}
		b.WriteString(`,"headers":`)
		b.Write(h)
	}
	if t.Priority != 0 {
		b.WriteString(`,"priority":`)
		b.WriteString(strconv.Itoa(t.Priority))
	}
	if t.MaxAttempts != 0 {
		b.WriteString(`,"max_attempts":`)
		b.WriteString(strconv.Itoa(t.MaxAttempts))
	}
	if !t.RunAt.IsZero() {
		at, err := t.RunAt.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("wsstream: task %s has a RunAt that JSON cannot carry: %w", t.ID, err)
		}
		b.WriteString(`,"run_at":`)
		b.Write(at)
	}
	if t.UniqueKey != "" {
		b.WriteString(`,"unique_key":`)
		writeString(&b, t.UniqueKey)
	}
	if t.Key != "" {
		b.WriteString(`,"key":`)
		writeString(&b, t.Key)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// rawJSON reports whether p can travel as a raw JSON value and come back
// with the same bytes.
func rawJSON(p []byte) bool {
	if !json.Valid(p) {
		return false
	}
	first, last := p[0], p[len(p)-1]
	return !isSpace(first) && !isSpace(last)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// writeString writes s as a JSON string. s must be valid UTF-8.
func writeString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s) // a string always marshals
	b.Write(q)
}

// checkUTF8 refuses text fields that JSON would silently alter.
func checkUTF8(t *peonify.Task) error {
	bad := func(what string) error {
		return &peonify.InvalidTaskError{ID: t.ID, Reason: what + " is not valid UTF-8, which JSON cannot carry unchanged"}
	}
	switch {
	case !utf8.ValidString(t.ID):
		return bad("task ID")
	case !utf8.ValidString(t.Type):
		return bad("task Type")
	case !utf8.ValidString(t.UniqueKey):
		return bad("task UniqueKey")
	case !utf8.ValidString(t.Key):
		return bad("task Key")
	}
	for k, v := range t.Headers {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return bad(fmt.Sprintf("header %q", k))
		}
	}
	return nil
}
