package webhookstream

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/peonify/peonify"
)

// Encoding says how a generic HMAC header writes the signature's bytes.
type Encoding int

const (
	// Hex is lower- or upper-case hexadecimal. It is the zero value.
	Hex Encoding = iota
	// Base64 is standard base64 with padding (RFC 4648 section 4).
	Base64
)

// HMAC verifies a generic signature header: the hex or base64 HMAC-SHA256
// of the body, optionally after a fixed prefix such as "sha256=". It signs
// no timestamp, so it cannot reject a replayed request by age; set
// IDHeader when the sender gives each delivery an ID, so that a replay is
// not enqueued twice.
type HMAC struct {
	// Header is the request header with the signature, such as
	// "X-Signature". Required.
	Header string

	// Prefix is text before the signature in the header, such as
	// "sha256=". The header must start with it. Defaults to none.
	Prefix string

	// Encoding is how the signature is written. Defaults to Hex.
	Encoding Encoding

	// Secrets are the shared secrets, used as written. A request signed
	// with any of them is accepted, so that a secret can be rotated.
	// Required.
	Secrets []Secret

	// IDHeader is the request header with the sender's delivery ID, used
	// to deduplicate redeliveries. The signature does not cover it.
	// Defaults to none: every request is a new task.
	IDHeader string

	// EventHeader is the request header with the event type, copied to the
	// task's "event" header. Defaults to none.
	EventHeader string
}

// Verify implements Verifier.
func (m HMAC) Verify(h http.Header, body []byte, _ time.Time) (Verified, error) {
	v := h.Values(m.Header)
	switch {
	case len(v) == 0:
		return Verified{}, fmt.Errorf("%w: no %s header", ErrNoSignature, m.Header)
	case len(v) > 1:
		return Verified{}, fmt.Errorf("%w: more than one %s header", ErrBadSignature, m.Header)
	}
	sig, err := m.parse(v[0])
	if err != nil {
		return Verified{}, err
	}
	if !matchAny(secretKeys(m.Secrets), [][]byte{sig}, body) {
		return Verified{}, fmt.Errorf("%w: %s does not match the body with any configured secret", ErrBadSignature, m.Header)
	}
	var out Verified
	if m.IDHeader != "" {
		out.ID = h.Get(m.IDHeader)
	}
	if m.EventHeader != "" {
		out.Event = h.Get(m.EventHeader)
	}
	return out, nil
}

func (m HMAC) parse(v string) ([]byte, error) {
	enc, ok := strings.CutPrefix(v, m.Prefix)
	if !ok {
		return nil, fmt.Errorf("%w: %s must start with %q", ErrBadSignature, m.Header, m.Prefix)
	}
	var sig []byte
	var err error
	switch m.Encoding {
	case Base64:
		if len(enc) == base64.StdEncoding.EncodedLen(sha256Size) {
			sig, err = base64.StdEncoding.Strict().DecodeString(enc) // canonical only, as senders write it
		}
	default:
		if len(enc) == 2*sha256Size {
			sig, err = hex.DecodeString(enc)
		}
	}
	if err != nil || len(sig) != sha256Size { // 44 base64 digits without padding decode to 33 bytes
		return nil, fmt.Errorf("%w: %s is not a %s HMAC-SHA256", ErrBadSignature, m.Header, m.Encoding)
	}
	return sig, nil
}

func (m HMAC) check() error {
	switch {
	case m.Header == "":
		return &peonify.ConfigError{Field: "Header", Reason: "is empty: name the request header that carries the signature"}
	case m.Encoding != Hex && m.Encoding != Base64:
		return &peonify.ConfigError{Field: "Encoding", Reason: "must be Hex or Base64"}
	}
	return checkSecrets(m.Secrets)
}

// String returns "hex" or "base64".
func (e Encoding) String() string {
	switch e {
	case Hex:
		return "hex"
	case Base64:
		return "base64"
	}
	return fmt.Sprintf("Encoding(%d)", int(e))
}
