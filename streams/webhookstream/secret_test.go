package webhookstream

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

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
