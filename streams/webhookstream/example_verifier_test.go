package webhookstream_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/peonify/peonify/streams/webhookstream"
)

// Acme is a custom Verifier for a sender that signs "<id>.<body>". It holds
// its secrets as Secret values, like the presets, and never reads their
// bytes: MatchHMAC computes the signatures.
type Acme struct {
	Secrets []webhookstream.Secret
}

// Verify implements webhookstream.Verifier.
func (a Acme) Verify(h http.Header, body []byte, _ time.Time) (webhookstream.Verified, error) {
	sig, err := hex.DecodeString(h.Get("Acme-Signature"))
	id := h.Get("Acme-Id")
	if err != nil || !webhookstream.MatchHMAC(a.Secrets, sha256.New, sig, []byte(id), []byte("."), body) {
		return webhookstream.Verified{}, fmt.Errorf("%w: Acme-Signature", webhookstream.ErrBadSignature)
	}
	return webhookstream.Verified{ID: id}, nil
}

// A custom Verifier checks signatures with the secrets it is given, old
// and new during a rotation, through MatchHMAC.
func ExampleMatchHMAC() {
	v := Acme{Secrets: []webhookstream.Secret{
		webhookstream.NewSecret("old-secret"),
		webhookstream.NewSecret("new-secret"),
	}}
	body := []byte(`{"order":42}`)
	for _, key := range []string{"new-secret", "old-secret", "guess"} {
		mac := hmac.New(sha256.New, []byte(key)) // what the sender computes
		mac.Write([]byte("d-1." + string(body)))
		h := http.Header{}
		h.Set("Acme-Id", "d-1")
		h.Set("Acme-Signature", hex.EncodeToString(mac.Sum(nil)))
		got, err := v.Verify(h, body, time.Now())
		fmt.Printf("%s: %q %v\n", key, got.ID, err)
	}
	fmt.Println(v)
	// Output:
	// new-secret: "d-1" <nil>
	// old-secret: "d-1" <nil>
	// guess: "" webhookstream: signature does not match: Acme-Signature
	// {[[redacted] [redacted]]}
}
