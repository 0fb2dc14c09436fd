package webhookstream

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/peonify/peonify"
)

// Verifier authenticates a webhook request before anything else reads it.
// The presets GitHub, Stripe, StandardWebhooks, Slack, Shopify and HMAC
// implement it; a custom scheme can too, using its secrets through
// MatchHMAC, Secret.HMAC or Secret.Matches.
type Verifier interface {
	// Verify checks the request's signature over body, the raw bytes as
	// received, and returns what it learned about the delivery. now is the
	// handler's clock, for schemes that sign a timestamp. An error rejects
	// the request with 401 Unauthorized; errors that wrap ErrNoSignature,
	// ErrBadSignature or ErrTimestamp are shown to the sender, others are
	// replaced by a generic message.
	Verify(h http.Header, body []byte, now time.Time) (Verified, error)
}

// Verified is what a Verifier learned from a request it accepted.
type Verified struct {
	// ID is the sender's identifier of this delivery, which stays the same
	// when the sender delivers the event again. The handler makes it the
	// task's ID (after Route.IDPrefix), so a redelivery is not enqueued a
	// second time. Empty when the scheme has none: the task then gets a
	// new ID.
	ID string

	// Event is the event type, when the scheme tells it (GitHub's
	// X-GitHub-Event header, the "type" field of a Stripe event). It is
	// copied to the task's "event" header.
	Event string
}

// The errors a preset Verifier returns, wrapped with the detail of what is
// wrong. Their text is safe to show to the sender.
var (
	// ErrNoSignature means the request carries no signature the scheme
	// recognises: the sender has no secret configured, or another scheme.
	ErrNoSignature = errors.New("webhookstream: missing signature")

	// ErrBadSignature means the signature is malformed or does not match
	// the body with any of the secrets: a wrong secret, a body altered on
	// the way, or a forged request.
	ErrBadSignature = errors.New("webhookstream: signature does not match")

	// ErrTimestamp means the signed timestamp is outside the tolerance: a
	// replay of an old request, or a sender (or receiver) clock that is
	// off.
	ErrTimestamp = errors.New("webhookstream: timestamp outside tolerance")
)

// DefaultTolerance is how far a signed timestamp may be from the
// receiver's clock, in either direction, when a preset's Tolerance is
// zero. It matches what Stripe, Standard Webhooks and Slack recommend.
const DefaultTolerance = 5 * time.Minute

// checker is implemented by the presets so that New reports a wrong
// verifier configuration at once rather than on every request. check
// returns nil or a *peonify.ConfigError whose Field names the preset's
// field at fault, such as "Secrets[1]"; Config.Validate puts the route's
// Verifier in front of it.
type checker interface {
	check() error
}

// checkSecrets reports a verifier without secrets or with an empty one.
func checkSecrets(secrets []Secret) error {
	if len(secrets) == 0 {
		return &peonify.ConfigError{Field: "Secrets", Reason: "is empty: set the endpoint's signing secret (several during a rotation)"}
	}
	for i, s := range secrets {
		if s.IsZero() {
			return &peonify.ConfigError{Field: fmt.Sprintf("Secrets[%d]", i), Reason: "is empty"}
		}
	}
	return nil
}

func checkTolerance(d time.Duration) error {
	if d < 0 {
		return &peonify.ConfigError{Field: "Tolerance", Reason: fmt.Sprintf("must not be negative (0 means the default, %s)", DefaultTolerance)}
	}
	return nil
}

// sign returns HMAC-SHA256 of the parts under key.
func sign(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// matchAny reports whether any of sigs equals the MAC of parts under any of
// keys. Each comparison takes constant time (hmac.Equal); the loop reveals
// only how many keys and signatures there are.
// Empty keys are skipped: anyone can sign under an empty key, and New
// refuses empty secrets only for a Verifier that goes through it.
func matchAny(keys [][]byte, sigs [][]byte, parts ...[]byte) bool {
	ok := false
	for _, k := range keys {
		if len(k) == 0 {
			continue
		}
		mac := sign(k, parts...)
		for _, s := range sigs {
			if hmac.Equal(mac, s) {
				ok = true
			}
		}
	}
	return ok
}

// secretKeys returns the secrets' bytes as HMAC keys.
func secretKeys(secrets []Secret) [][]byte {
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		keys[i] = s.b
	}
	return keys
}

// parseUnix parses a Unix time in seconds written as decimal digits only:
// no sign, no spaces, at most 12 digits (far beyond year 9999).
func parseUnix(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 12 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// checkTimestamp rejects a signed Unix time further than tolerance from
// now, in the past (a replay) or the future.
func checkTimestamp(unix int64, now time.Time, tolerance time.Duration) error {
	if tolerance == 0 {
		tolerance = DefaultTolerance
	}
	skew := now.Sub(time.Unix(unix, 0))
	switch {
	case skew > tolerance:
		return fmt.Errorf("%w: signed %s ago, more than the %s allowed (a replayed request, or a clock that is off)",
			ErrTimestamp, skew.Truncate(time.Second), tolerance)
	case -skew > tolerance:
		return fmt.Errorf("%w: signed %s in the future, more than the %s allowed (a clock that is off)",
			ErrTimestamp, (-skew).Truncate(time.Second), tolerance)
	}
	return nil
}
