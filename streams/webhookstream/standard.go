package webhookstream

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/peonify/peonify"
)

// StandardWebhooks verifies webhooks signed as the Standard Webhooks
// specification says (the scheme of Svix and of many API providers). The
// request carries webhook-id, webhook-timestamp (Unix seconds) and
// webhook-signature, a space-separated list of "v1,<base64>" signatures,
// each the base64 HMAC-SHA256 of "<id>.<timestamp>.<body>". A request
// signed longer ago, or further in the future, than Tolerance is
// rejected. The delivery ID is webhook-id; the event type is the body's
// "type" field when the body is a JSON object that has one.
type StandardWebhooks struct {
	// Secrets are the endpoint's secrets as the sender shows them:
	// "whsec_" followed by the base64 key (the prefix may be left out). A
	// request signed with any of them is accepted, so that a secret can
	// be rotated. Required.
	Secrets []Secret

	// Tolerance is how far the signed timestamp may be from the
	// receiver's clock. Defaults to DefaultTolerance (5 minutes).
	Tolerance time.Duration
}

// Verify implements Verifier.
func (s StandardWebhooks) Verify(h http.Header, body []byte, now time.Time) (Verified, error) {
	sigHeader := h.Get("Webhook-Signature")
	if sigHeader == "" {
		return Verified{}, fmt.Errorf("%w: no webhook-signature header", ErrNoSignature)
	}
	id, ts := h.Get("Webhook-Id"), h.Get("Webhook-Timestamp")
	if id == "" || ts == "" {
		return Verified{}, fmt.Errorf("%w: webhook-id and webhook-timestamp headers are required with webhook-signature", ErrBadSignature)
	}
	unix, ok := parseUnix(ts)
	if !ok {
		return Verified{}, fmt.Errorf("%w: webhook-timestamp is not a Unix time in seconds", ErrBadSignature)
	}
	sigs, err := parseStandardSignatures(sigHeader)
	if err != nil {
		return Verified{}, err
	}
	keys, bad := standardKeys(s.Secrets)
	if bad >= 0 { // New rejects such secrets; only a Verifier used on its own gets here
		return Verified{}, fmt.Errorf("StandardWebhooks.Secrets[%d] %s", bad, notStandardSecret)
	}
	if !matchAny(keys, sigs, []byte(id), []byte{'.'}, []byte(ts), []byte{'.'}, body) {
		return Verified{}, fmt.Errorf("%w: no v1 signature in webhook-signature matches with any configured secret", ErrBadSignature)
	}
	if err := checkTimestamp(unix, now, s.Tolerance); err != nil {
		return Verified{}, err
	}
	var event struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(body, &event) // the type is optional metadata
	return Verified{ID: id, Event: event.Type}, nil
}

func (s StandardWebhooks) check() error {
	if err := checkSecrets(s.Secrets); err != nil {
		return err
	}
	if _, bad := standardKeys(s.Secrets); bad >= 0 {
		return &peonify.ConfigError{Field: fmt.Sprintf("Secrets[%d]", bad), Reason: notStandardSecret}
	}
	return checkTolerance(s.Tolerance)
}

const notStandardSecret = `is not "whsec_" followed by a base64 key`

// standardKeys decodes "whsec_<base64>" secrets into HMAC keys. bad is the
// index of the first secret that is not one, or -1.
func standardKeys(secrets []Secret) (keys [][]byte, bad int) {
	keys = make([][]byte, len(secrets))
	for i, s := range secrets {
		b64 := strings.TrimPrefix(string(s.b), "whsec_")
		k, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(k) == 0 {
			return nil, i
		}
		keys[i] = k
	}
	return keys, -1
}

// parseStandardSignatures parses a webhook-signature header: signatures
// separated by spaces, each "<version>,<base64>". Only v1 (HMAC-SHA256)
// signatures are kept; other versions (such as v1a, asymmetric) and v1
// values that are not base64 32-byte MACs are ignored, since they cannot
// match.
func parseStandardSignatures(v string) ([][]byte, error) {
	var sigs [][]byte
	for _, f := range strings.Fields(v) {
		b64, ok := strings.CutPrefix(f, "v1,")
		if !ok || len(b64) != base64.StdEncoding.EncodedLen(sha256Size) {
			continue
		}
		if sig, err := base64.StdEncoding.Strict().DecodeString(b64); err == nil && len(sig) == sha256Size {
			sigs = append(sigs, sig)
		}
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w: webhook-signature has no v1 signature", ErrNoSignature)
	}
	return sigs, nil
}
