package webhookstream

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Slack verifies requests from a Slack app (Events API, slash commands,
// interactivity, options loads) as Slack's "Verifying requests from Slack"
// describes: X-Slack-Signature holds "v0=" and the hex HMAC-SHA256 of
// "v0:<timestamp>:<body>" under the app's signing secret, where timestamp
// is the X-Slack-Request-Timestamp header (Unix seconds). A request signed
// longer ago, or further in the future, than Tolerance is rejected, so a
// captured request cannot be replayed later.
//
// Slack gives a delivery no ID header, so the delivery ID is chosen from
// what is signed:
//
//   - An Events API callback (a JSON body with an "event_id", such as
//     "Ev0PV52K21") takes its event_id. Slack keeps it when it retries an
//     event (with X-Slack-Retry-Num: three times, within about five
//     minutes), so a retry of a stored event is a duplicate, as long as
//     the store keeps finished tasks longer than that.
//   - Any other request (a slash command, an interaction, the
//     url_verification handshake) has no ID of its own, and Slack does not
//     retry it. Its ID is "<timestamp>-<digest>", the digest being the
//     first 16 bytes, in hex, of the SHA-256 of the signature (not the
//     signature itself, which must not be shown). Two requests get the same
//     ID only when they carry the same timestamp and body: an identical
//     replay. A replay within Tolerance is therefore a duplicate (if the
//     store keeps finished tasks longer than Tolerance) and a later one is
//     refused as stale, so no request is run twice.
//
// The event type is the Events API's inner event type ("app_mention"), or
// the body's "type" ("url_verification"), a slash command's "command"
// ("/deploy"), or an interaction payload's "type" ("block_actions").
//
// Slack expects a 2xx answer within 3 seconds, which the 202 Accepted of
// a stored task is. Answering the url_verification
// handshake, or answering a slash command with text, needs a synchronous
// route (Route.Sync) whose task replies with Respond.
type Slack struct {
	// Secrets are the app's signing secrets (Basic Information, App
	// Credentials), used as written. A request signed with any of them is
	// accepted, so that a secret can be rotated: add the new one, then
	// remove the old one once Slack signs with the new one. Required.
	Secrets []Secret

	// Tolerance is how far the signed timestamp may be from the
	// receiver's clock. Defaults to DefaultTolerance (5 minutes), which
	// Slack recommends.
	Tolerance time.Duration
}

const (
	slackSignatureHeader = "X-Slack-Signature"
	slackTimestampHeader = "X-Slack-Request-Timestamp"
)

// Verify implements Verifier.
func (s Slack) Verify(h http.Header, body []byte, now time.Time) (Verified, error) {
	v, ts := h.Values(slackSignatureHeader), h.Values(slackTimestampHeader)
	switch {
	case len(v) == 0:
		return Verified{}, fmt.Errorf("%w: no %s header", ErrNoSignature, slackSignatureHeader)
	case len(v) > 1:
		return Verified{}, fmt.Errorf("%w: more than one %s header", ErrBadSignature, slackSignatureHeader)
	case len(ts) != 1:
		return Verified{}, fmt.Errorf("%w: one %s header is required with %s", ErrBadSignature, slackTimestampHeader, slackSignatureHeader)
	}
	unix, ok := parseUnix(ts[0])
	if !ok {
		return Verified{}, fmt.Errorf("%w: %s is not a Unix time in seconds", ErrBadSignature, slackTimestampHeader)
	}
	sig, err := parseSlackSignature(v[0])
	if err != nil {
		return Verified{}, err
	}
	if !matchAny(secretKeys(s.Secrets), [][]byte{sig}, []byte("v0:"), []byte(ts[0]), []byte{':'}, body) {
		return Verified{}, fmt.Errorf("%w: %s does not match the timestamp and body with any configured secret", ErrBadSignature, slackSignatureHeader)
	}
	if err := checkTimestamp(unix, now, s.Tolerance); err != nil {
		return Verified{}, err
	}
	id, event := slackDelivery(body)
	if id == "" {
		d := sha256.Sum256(sig)
		id = ts[0] + "-" + hex.EncodeToString(d[:16])
	}
	return Verified{ID: id, Event: event}, nil
}

func (s Slack) check() error {
	if err := checkSecrets(s.Secrets); err != nil {
		return err
	}
	return checkTolerance(s.Tolerance)
}

// parseSlackSignature parses "v0=<64 hex digits>" into the 32-byte MAC.
func parseSlackSignature(v string) ([]byte, error) {
	hexSig, ok := strings.CutPrefix(v, "v0=")
	if !ok {
		return nil, fmt.Errorf("%w: %s must start with \"v0=\"", ErrBadSignature, slackSignatureHeader)
	}
	if len(hexSig) != 2*sha256Size {
		return nil, fmt.Errorf("%w: %s must hold %d hex digits after \"v0=\"", ErrBadSignature, slackSignatureHeader, 2*sha256Size)
	}
	sig, err := hex.DecodeString(hexSig)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not hexadecimal", ErrBadSignature, slackSignatureHeader)
	}
	return sig, nil
}

// slackDelivery reads the event_id and the event type from a verified
// Slack body: a JSON Events API callback, or a form-encoded slash command
// or interaction. What it cannot read, or would not be a usable ID or
// header, it leaves empty.
func slackDelivery(body []byte) (id, event string) {
	var ev struct {
		EventID string          `json:"event_id"`
		Type    string          `json:"type"`
		Event   json.RawMessage `json:"event"`
	}
	if json.Unmarshal(body, &ev) == nil {
		var inner struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(ev.Event, &inner) != nil || inner.Type == "" {
			inner.Type = ev.Type
		}
		if !slackToken(ev.EventID) {
			ev.EventID = ""
		}
		return ev.EventID, plainText(inner.Type)
	}
	form, _ := url.ParseQuery(string(body)) // what parses is enough for metadata
	if c := form.Get("command"); c != "" {
		return "", plainText(c)
	}
	var payload struct {
		Type string `json:"type"`
	}
	if json.Unmarshal([]byte(form.Get("payload")), &payload) == nil {
		return "", plainText(payload.Type)
	}
	return "", ""
}

// slackToken reports whether s can be a task ID as it is: 1 to 64 ASCII
// letters, digits, '.', '_' or '-', as Slack's event IDs are.
func slackToken(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// plainText returns s if it is short, valid UTF-8 text without control
// characters, fit for a task header, and "" otherwise.
func plainText(s string) string {
	if len(s) > 128 || !utf8.ValidString(s) {
		return ""
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return ""
		}
	}
	return s
}
