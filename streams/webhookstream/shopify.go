package webhookstream

import (
	"net/http"
	"time"
)

// Shopify verifies Shopify webhooks delivered over HTTPS: the
// X-Shopify-Hmac-Sha256 header holds the base64 HMAC-SHA256 of the body
// under the app's client secret. The delivery ID comes from
// X-Shopify-Webhook-Id, which Shopify keeps when it retries a delivery, and
// the event type from X-Shopify-Topic ("orders/create").
//
// Shopify signs the body only, with no timestamp, and the ID header is not
// covered by the signature: deduplication on it stops Shopify's own retries
// (up to 8 over 4 hours: keep finished tasks longer), not an attacker who
// captured a request. Serve the endpoint over HTTPS only. To deduplicate on
// X-Shopify-Event-Id instead (the same for every subscription of one
// event), use HMAC with Header "X-Shopify-Hmac-Sha256", Encoding Base64 and
// IDHeader "X-Shopify-Event-Id".
type Shopify struct {
	// Secrets are the app's client secrets, used as written. A request
	// signed with any of them is accepted, so that a secret can be
	// rotated: Shopify may sign with the old one for up to an hour after a
	// rotation. Required.
	Secrets []Secret
}

// Verify implements Verifier.
func (s Shopify) Verify(h http.Header, body []byte, now time.Time) (Verified, error) {
	return s.hmac().Verify(h, body, now)
}

func (s Shopify) hmac() HMAC {
	return HMAC{Header: "X-Shopify-Hmac-Sha256", Encoding: Base64, Secrets: s.Secrets,
		IDHeader: "X-Shopify-Webhook-Id", EventHeader: "X-Shopify-Topic"}
}

func (s Shopify) check() error { return checkSecrets(s.Secrets) }
