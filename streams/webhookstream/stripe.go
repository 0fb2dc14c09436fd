package webhookstream

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Stripe verifies Stripe webhooks: the Stripe-Signature header holds
// "t=<unix time>,v1=<hex>" (with one v1 per active secret while Stripe
// rolls a secret), where each v1 is the hex HMAC-SHA256 of "<t>.<body>"
// under the endpoint's signing secret. A request signed longer ago, or
// further in the future, than Tolerance is rejected, so a captured request
// cannot be replayed later. The delivery ID is the event's "id" field and
// the event type its "type" field, read from the JSON body after the
// signature matched.
type Stripe struct {
	// Secrets are the endpoint's signing secrets ("whsec_…", used as
	// written). A request signed with any of them is accepted, so that a
	// secret can be rotated. Required.
	Secrets []Secret

	// Tolerance is how far the signed timestamp may be from the
	// receiver's clock. Defaults to DefaultTolerance (5 minutes).
	Tolerance time.Duration
}

const stripeSignatureHeader = "Stripe-Signature"

// Verify implements Verifier.
func (s Stripe) Verify(h http.Header, body []byte, now time.Time) (Verified, error) {
	v := h.Values(stripeSignatureHeader)
	switch {
	case len(v) == 0:
		return Verified{}, fmt.Errorf("%w: no %s header", ErrNoSignature, stripeSignatureHeader)
	case len(v) > 1:
		return Verified{}, fmt.Errorf("%w: more than one %s header", ErrBadSignature, stripeSignatureHeader)
	}
	ts, sigs, err := parseStripeHeader(v[0])
	if err != nil {
		return Verified{}, err
	}
	t := []byte(strconv.FormatInt(ts, 10))
	if !matchAny(secretKeys(s.Secrets), sigs, t, []byte{'.'}, body) {
		return Verified{}, fmt.Errorf("%w: no v1 signature in %s matches the body with any configured secret", ErrBadSignature, stripeSignatureHeader)
	}
	if err := checkTimestamp(ts, now, s.Tolerance); err != nil {
		return Verified{}, err
	}
	var event struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	_ = json.Unmarshal(body, &event) // a body that is not an event has no ID; Route.JSON rejects non-JSON
	return Verified{ID: event.ID, Event: event.Type}, nil
}

func (s Stripe) check() error {
	if err := checkSecrets(s.Secrets); err != nil {
		return err
	}
	return checkTolerance(s.Tolerance)
}

// parseStripeHeader parses a Stripe-Signature header: comma-separated
// key=value pairs with exactly one t (the Unix time) and at least one v1
// (a 64-digit hex MAC). Other keys, such as v0 or future schemes, are
// ignored, and so are v1 values that are not 32-byte hex MACs (they cannot
// match).
func parseStripeHeader(v string) (ts int64, sigs [][]byte, err error) {
	haveT := false
	for part := range strings.SplitSeq(v, ",") {
		key, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch key {
		case "t":
			if haveT {
				return 0, nil, fmt.Errorf("%w: %s has more than one t=", ErrBadSignature, stripeSignatureHeader)
			}
			if ts, ok = parseUnix(val); !ok {
				return 0, nil, fmt.Errorf("%w: t= in %s is not a Unix time", ErrBadSignature, stripeSignatureHeader)
			}
			haveT = true
		case "v1":
			if len(val) != 2*sha256Size {
				continue
			}
			if sig, err := hex.DecodeString(val); err == nil {
				sigs = append(sigs, sig)
			}
		}
	}
	switch {
	case !haveT:
		return 0, nil, fmt.Errorf("%w: %s has no t= timestamp", ErrBadSignature, stripeSignatureHeader)
	case len(sigs) == 0:
		return 0, nil, fmt.Errorf("%w: %s has no v1= signature", ErrNoSignature, stripeSignatureHeader)
	}
	return ts, sigs, nil
}
