package webhookstream

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// A secret never shows in prints, logs or encodings, alone or inside a
// Config.
func TestSecretRedacted(t *testing.T) {
	const value = "super-secret-value"
	s := NewSecret(value)
	cfg := Config{Routes: map[string]Route{
		"/a": {Type: "a", Verifier: GitHub{Secrets: []Secret{s}}},
		"/b": {Type: "b", Verifier: &Stripe{Secrets: []Secret{s}}},
		"/c": {Type: "c", Verifier: HMAC{Header: "X", Secrets: []Secret{s}}},
		"/d": {Type: "d", Verifier: Slack{Secrets: []Secret{s}}},
		"/e": {Type: "e", Verifier: &Shopify{Secrets: []Secret{s}}},
	}}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		out = append(out, fmt.Sprintf(verb, s), fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, []Secret{s}))
	}
	out = append(out, s.String(), fmt.Sprint(s), fmt.Sprintln(cfg))
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(b))
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var buf bytes.Buffer
		slog.New(h(&buf)).Info("config", "secret", s, "cfg", cfg, "secrets", []Secret{s})
		out = append(out, buf.String())
	}
	for _, o := range out {
		if strings.Contains(o, value) || strings.Contains(o, fmt.Sprintf("%x", value)) {
			t.Fatalf("the secret leaks: %s", o)
		}
	}
	if !strings.Contains(fmt.Sprint(s), "[redacted]") || !strings.Contains(string(b), "[redacted]") {
		t.Fatalf("the secret does not show as [redacted]: %s %s", fmt.Sprint(s), b)
	}
}

// The handler's logs of refused requests do not show secrets or
// signatures' expected values.
func TestLogsNoSecret(t *testing.T) {
	var buf bytes.Buffer
	st := newStore(t)
	h := newHandler(t, st, Config{Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	r := githubRequest("x", []byte(`{}`))
	r.header["X-Hub-Signature-256"] = signGitHub("wrong", r.body)
	serve(t, h, r).want(t, 401)
	if !strings.Contains(buf.String(), "webhook refused") {
		t.Fatalf("no log line for a refused request: %q", buf.String())
	}
	if strings.Contains(buf.String(), githubSecret) || strings.Contains(buf.String(), signGitHub(githubSecret, r.body)) {
		t.Fatalf("the log shows the secret or the expected signature: %s", buf.String())
	}
}

// Respond reaches a waiting request only.
func TestRespond(t *testing.T) {
	if Respond(context.Background(), Reply{Body: []byte("x")}) {
		t.Fatal("Respond outside a synchronous task reported a waiting request")
	}
	results := NewResults()
	ch, cancel := results.wait("r1")
	defer cancel()
	body := []byte("reply")
	h := results.Middleware()(peonify.HandlerFunc(func(ctx context.Context, _ *peonify.Task) error {
		if !Respond(ctx, Reply{Status: 201, Body: body}) {
			t.Error("Respond did not see the waiting request")
		}
		body[0] = 'X' // the reply was copied
		return nil
	}))
	if err := h.Execute(context.Background(), &peonify.Task{ID: "r1"}); err != nil {
		t.Fatal(err)
	}
	o := <-ch
	if o.err != nil || o.reply == nil || string(o.reply.Body) != "reply" || o.reply.Status != 201 {
		t.Fatalf("outcome %+v %+v", o, o.reply)
	}
	// Once delivered, the wait is gone: a second run reports to no one.
	if results.waited("r1") {
		t.Fatal("the wait outlived its delivery")
	}
}

// MatchHMAC accepts a signature made with any of the secrets, over the
// concatenated parts and with the hash asked for, and nothing else.
func TestMatchHMAC(t *testing.T) {
	mac := func(key string, newHash func() hash.Hash, msg string) []byte {
		m := hmac.New(newHash, []byte(key))
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	keys := secrets("old", "new")
	for _, tc := range []struct {
		name  string
		sig   []byte
		parts []string
		want  bool
	}{
		{"new secret", mac("new", sha256.New, "t.body"), []string{"t", ".", "body"}, true},
		{"old secret", mac("old", sha256.New, "t.body"), []string{"t.body"}, true},
		{"other secret", mac("other", sha256.New, "t.body"), []string{"t.body"}, false},
		{"other message", mac("new", sha256.New, "t.bodx"), []string{"t.body"}, false},
		{"other hash", mac("new", sha1.New, "t.body"), []string{"t.body"}, false},
		{"truncated", mac("new", sha256.New, "t.body")[:16], []string{"t.body"}, false},
		{"empty", nil, []string{"t.body"}, false},
	} {
		parts := make([][]byte, len(tc.parts))
		for i, p := range tc.parts {
			parts[i] = []byte(p)
		}
		if got := MatchHMAC(keys, sha256.New, tc.sig, parts...); got != tc.want {
			t.Errorf("%s: MatchHMAC = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !MatchHMAC(keys, sha1.New, mac("old", sha1.New, "x"), []byte("x")) {
		t.Error("a SHA-1 HMAC did not match with sha1.New")
	}
	// An empty secret (an unset variable) never makes a signature under the
	// empty key, which anyone can compute, pass.
	if MatchHMAC([]Secret{{}, NewSecret("")}, sha256.New, mac("", sha256.New, "x"), []byte("x")) {
		t.Error("a zero Secret matched")
	}
	// Secret.HMAC is the HMAC under the secret.
	m := NewSecret("new").HMAC(sha256.New)
	m.Write([]byte("t.body"))
	if !hmac.Equal(m.Sum(nil), mac("new", sha256.New, "t.body")) {
		t.Error("Secret.HMAC is not the HMAC keyed with the secret")
	}
}

// The presets, used on their own without New, do not accept a signature
// under an empty key either.
func TestPresetsEmptySecret(t *testing.T) {
	body := []byte(`{"id":"evt_1"}`)
	now := time.Now()
	h := http.Header{}
	h.Set("X-Hub-Signature-256", signGitHub("", body))
	h.Set("Stripe-Signature", signStripe("", now.Unix(), body))
	h.Set("X-Slack-Request-Timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("X-Slack-Signature", signSlack("", now.Unix(), body))
	h.Set("X-Shopify-Hmac-Sha256", signShopify("", body))
	h.Set("X-Signature", signShopify("", body))
	empty := secrets("")
	for _, v := range []Verifier{GitHub{Secrets: empty}, Stripe{Secrets: empty}, Slack{Secrets: empty}, Shopify{Secrets: empty},
		HMAC{Header: "X-Signature", Encoding: Base64, Secrets: empty}} {
		if _, err := v.Verify(h, body, now); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%T with an empty secret: %v, want ErrBadSignature", v, err)
		}
	}
}

// Matches compares a token sent as is with the secret.
func TestSecretMatches(t *testing.T) {
	s := NewSecret("glpat-token")
	for token, want := range map[string]bool{"glpat-token": true, "glpat-toke": false, "glpat-token ": false, "GLPAT-TOKEN": false, "": false} {
		if got := s.Matches(token); got != want {
			t.Errorf("Matches(%q) = %v, want %v", token, got, want)
		}
	}
	if (Secret{}).Matches("") || NewSecret("").Matches("") {
		t.Error("a zero Secret matched the empty token")
	}
}

// A custom Verifier uses the secrets it was configured with through
// MatchHMAC, without a copy of their bytes, and rotates them like a preset.
func TestCustomVerifierSecrets(t *testing.T) {
	type acme struct{ Secrets []Secret }
	verify := func(v acme) Verifier {
		return verifierFunc(func(h http.Header, body []byte, _ time.Time) (Verified, error) {
			sig, err := hex.DecodeString(h.Get("Acme-Signature"))
			if err != nil || !MatchHMAC(v.Secrets, sha256.New, sig, []byte(h.Get("Acme-Id")), []byte{'.'}, body) {
				return Verified{}, ErrBadSignature
			}
			return Verified{ID: h.Get("Acme-Id")}, nil
		})
	}
	st := newStore(t)
	h := newHandler(t, st, Config{Routes: map[string]Route{"/acme": {Type: "acme", Verifier: verify(acme{Secrets: secrets("old", "new")})}}})
	req := func(id, key string) request {
		m := hmac.New(sha256.New, []byte(key))
		m.Write([]byte(id + ".{}"))
		return request{path: "/acme", body: []byte("{}"), header: map[string]string{"Acme-Id": id, "Acme-Signature": hex.EncodeToString(m.Sum(nil))}}
	}
	serve(t, h, req("a1", "old")).want(t, http.StatusAccepted)
	serve(t, h, req("a2", "new")).want(t, http.StatusAccepted)
	serve(t, h, req("a3", "guess")).want(t, http.StatusUnauthorized)
	r := req("a4", "new")
	r.header["Acme-Id"] = "a5" // the ID is signed
	serve(t, h, r).want(t, http.StatusUnauthorized)
	if n := st.stored(t); n != 2 {
		t.Fatalf("%d tasks stored, want 2", n)
	}
}
