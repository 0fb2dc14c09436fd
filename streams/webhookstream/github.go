package webhookstream

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// GitHub verifies GitHub webhooks: the X-Hub-Signature-256 header holds
// "sha256=" and the hex HMAC-SHA256 of the body under the webhook's secret.
// The delivery ID comes from X-GitHub-Delivery and the event type from
// X-GitHub-Event.
//
// GitHub signs the body only, with no timestamp: the delivery ID header is
// not covered by the signature, so deduplication on it stops GitHub's own
// redeliveries, not an attacker who captured a request. Serve the endpoint
// over HTTPS only.
type GitHub struct {
	// Secrets are the webhook's secrets. A request signed with any of them
	// is accepted, so that a secret can be rotated: add the new one, change
	// it in GitHub, then remove the old one. Required.
	Secrets []Secret
}

const githubSignatureHeader = "X-Hub-Signature-256"

// Verify implements Verifier.
func (g GitHub) Verify(h http.Header, body []byte, _ time.Time) (Verified, error) {
	v := h.Values(githubSignatureHeader)
	switch {
	case len(v) == 0:
		return Verified{}, fmt.Errorf("%w: no %s header; set a secret in the GitHub webhook's settings", ErrNoSignature, githubSignatureHeader)
	case len(v) > 1:
		return Verified{}, fmt.Errorf("%w: more than one %s header", ErrBadSignature, githubSignatureHeader)
	}
	sig, err := parseGitHubSignature(v[0])
	if err != nil {
		return Verified{}, err
	}
	if !matchAny(secretKeys(g.Secrets), [][]byte{sig}, body) {
		return Verified{}, fmt.Errorf("%w: %s does not match the body with any configured secret", ErrBadSignature, githubSignatureHeader)
	}
	return Verified{ID: h.Get("X-GitHub-Delivery"), Event: h.Get("X-GitHub-Event")}, nil
}

func (g GitHub) check() error { return checkSecrets(g.Secrets) }

// parseGitHubSignature parses "sha256=<64 hex digits>" into the 32-byte
// MAC.
func parseGitHubSignature(v string) ([]byte, error) {
	hexSig, ok := strings.CutPrefix(v, "sha256=")
	if !ok {
		return nil, fmt.Errorf("%w: %s must start with \"sha256=\"", ErrBadSignature, githubSignatureHeader)
	}
	if len(hexSig) != 2*sha256Size {
		return nil, fmt.Errorf("%w: %s must hold %d hex digits after \"sha256=\"", ErrBadSignature, githubSignatureHeader, 2*sha256Size)
	}
	sig, err := hex.DecodeString(hexSig)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not hexadecimal", ErrBadSignature, githubSignatureHeader)
	}
	return sig, nil
}

// sha256Size is the length of an HMAC-SHA256 in bytes.
const sha256Size = 32
