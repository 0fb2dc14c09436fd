package webhookstream

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"hash"
	"io"
	"log/slog"
)

// redacted is what a Secret shows in place of its value.
const redacted = "[redacted]"

// Secret is a signing secret shared with a webhook sender. Its value is
// never shown: printing it with any fmt verb, logging it with log/slog, or
// encoding it as JSON or text gives "[redacted]", so a Config can be logged
// or dumped without leaking it.
//
// A custom Verifier uses its secrets without reading their bytes: MatchHMAC
// (or Secret.HMAC, for a scheme it does not fit) computes signatures with
// them, and Secret.Matches compares a token sent as is. Like the presets, a
// custom Verifier holds a []Secret and accepts a request that any of them
// signed, so that a secret can be rotated.
type Secret struct {
	b []byte
}

// NewSecret returns the secret s, used as the HMAC key exactly as written.
// GitHub, Stripe, Slack, Shopify and most generic senders use the
// secret's text itself as the key (a Stripe secret keeps its "whsec_"
// prefix). For Standard Webhooks, pass the "whsec_<base64>" string as
// shown by the sender; the StandardWebhooks verifier decodes it.
func NewSecret(s string) Secret { return Secret{b: []byte(s)} }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return len(s.b) == 0 }

// HMAC returns a new HMAC keyed with the secret, over the hash function
// newHash (such as sha256.New), for a custom Verifier whose scheme
// MatchHMAC does not fit: write the signed message to it, then compare
// its Sum with the request's signature using hmac.Equal, never bytes.Equal
// or ==, which take longer the more leading bytes match. The secret's bytes
// stay inside the HMAC.
//
// The HMAC of a zero Secret is keyed with nothing, so anyone can compute
// it: check IsZero when the Verifier is built (MatchHMAC skips zero
// secrets).
func (s Secret) HMAC(newHash func() hash.Hash) hash.Hash { return hmac.New(newHash, s.b) }

// Matches reports whether token is the secret itself, for schemes in which
// the sender sends the shared secret as is rather than a signature (such
// as GitLab's X-Gitlab-Token). It compares SHA-256 digests in constant
// time, so the time taken tells neither the secret's bytes nor its length.
// A zero Secret matches nothing, not even an empty token.
func (s Secret) Matches(token string) bool {
	want, got := sha256.Sum256(s.b), sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(want[:], got[:]) == 1 && !s.IsZero()
}

// MatchHMAC reports whether sig is the HMAC, over the hash function newHash
// (such as sha256.New), of the message under any of secrets. The message is
// the concatenation of parts, so that a scheme that signs, say, a timestamp
// and the body need not copy them into one slice. Zero secrets are skipped:
// an HMAC under an empty key proves nothing.
//
// Every secret is tried and each comparison takes constant time, so the
// time taken tells only how many secrets there are, not which one matched
// or how close a forged signature came. A custom Verifier calls it with its
// own []Secret (see Secret):
//
//	func (v Acme) Verify(h http.Header, body []byte, now time.Time) (webhookstream.Verified, error) {
//		sig, err := hex.DecodeString(h.Get("Acme-Signature"))
//		if err != nil || !webhookstream.MatchHMAC(v.Secrets, sha256.New, sig, body) {
//			return webhookstream.Verified{}, webhookstream.ErrBadSignature
//		}
//		return webhookstream.Verified{ID: h.Get("Acme-Delivery")}, nil
//	}
func MatchHMAC(secrets []Secret, newHash func() hash.Hash, sig []byte, parts ...[]byte) bool {
	ok := false
	for _, s := range secrets {
		if s.IsZero() {
			continue
		}
		m := s.HMAC(newHash)
		for _, p := range parts {
			m.Write(p)
		}
		if hmac.Equal(m.Sum(nil), sig) {
			ok = true
		}
	}
	return ok
}

// String returns "[redacted]".
func (s Secret) String() string { return redacted }

// GoString returns "[redacted]", also for the %#v verb.
func (s Secret) GoString() string { return redacted }

// Format writes "[redacted]" for every fmt verb.
func (s Secret) Format(f fmt.State, verb rune) { _, _ = io.WriteString(f, redacted) }

// LogValue makes log/slog record "[redacted]".
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText returns "[redacted]", so that encoding/json and other text
// encoders never write the secret.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

var (
	_ fmt.Formatter  = Secret{}
	_ fmt.GoStringer = Secret{}
	_ slog.LogValuer = Secret{}
)
