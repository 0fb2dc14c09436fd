package webhookstream

import (
	"fmt"
	"io"
	"log/slog"
)

// redacted is what a Secret shows in place of its value.
const redacted = "[redacted]"

// Secret is a signing secret shared with a webhook sender. Its value is
// never shown: printing it with any fmt verb, logging it with log/slog, or
// encoding it as JSON or text gives "[redacted]", so a Config can be logged
// or dumped without leaking it.
type Secret struct {
	b []byte
}

// NewSecret returns the secret s, used as the HMAC key exactly as written.
// GitHub, Stripe and most generic senders use the secret's text itself as
// the key (a Stripe secret keeps its "whsec_" prefix). For Standard
// Webhooks, pass the "whsec_<base64>" string as shown by the sender; the
// StandardWebhooks verifier decodes it.
func NewSecret(s string) Secret { return Secret{b: []byte(s)} }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return len(s.b) == 0 }

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
