package webhookstream_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
	"github.com/peonify/peonify/streams/webhookstream"
)

// A GitHub webhook becomes a task in a store, and a processor runs it from
// there. A real program uses a durable store (sqlitestream, pgstream) and
// serves the handler with webhookstream.Server; memstream and httptest keep
// this example self-contained.
func Example() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	store := memstream.New(memstream.Config{})

	secret := webhookstream.NewSecret("It's a Secret to Everybody")
	hooks, err := webhookstream.New(store, webhookstream.Config{
		Routes: map[string]webhookstream.Route{
			"/hooks/github": {
				Type:     "github-push",
				Verifier: webhookstream.GitHub{Secrets: []webhookstream.Secret{secret}},
				JSON:     true,
			},
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	// What GitHub sends.
	body := `{"ref":"refs/heads/main"}`
	mac := hmac.New(sha256.New, []byte("It's a Secret to Everybody"))
	mac.Write([]byte(body))
	req := httptest.NewRequest(http.MethodPost, "/hooks/github", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	rec := httptest.NewRecorder()
	hooks.ServeHTTP(rec, req)
	fmt.Print(rec.Code, " ", rec.Body.String())

	// GitHub redelivers the same event: it is not stored again.
	req = httptest.NewRequest(http.MethodPost, "/hooks/github", strings.NewReader(body))
	req.Header.Set("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	rec = httptest.NewRecorder()
	hooks.ServeHTTP(rec, req)
	fmt.Print(rec.Code, " ", rec.Body.String())

	type push struct{ Ref string }
	p, err := peonify.New(peonify.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{
		"github-push": peonify.JSON(func(ctx context.Context, ev push) error {
			fmt.Println("pushed to", ev.Ref)
			stop() // a real program runs until SIGTERM
			return nil
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.AddStream(store); err != nil {
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// 202 {"status":"accepted","task_id":"github-push:72d3162e-cc78-11e3-81ab-4c9367dc0958"}
	// 200 {"status":"duplicate","task_id":"github-push:72d3162e-cc78-11e3-81ab-4c9367dc0958"}
	// pushed to refs/heads/main
}

// A synchronous route answers with what the task's handler replied. The
// handler and the processor share one Results registry.
func ExampleResults() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	store := memstream.New(memstream.Config{})
	results := webhookstream.NewResults()

	p, err := peonify.New(peonify.Config{
		Middleware: []peonify.Middleware{results.Middleware()},
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{
		"greet": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			webhookstream.Respond(ctx, webhookstream.Reply{ContentType: "text/plain", Body: []byte("hello, " + string(t.Payload))})
			return nil
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.AddStream(store); err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	hooks, err := webhookstream.New(store, webhookstream.Config{
		Results: results,
		Routes: map[string]webhookstream.Route{
			"/greet": {
				Type:     "greet",
				Verifier: webhookstream.HMAC{Header: "X-Signature", Secrets: []webhookstream.Secret{webhookstream.NewSecret("s3cret")}},
				Sync:     true,
			},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write([]byte("ada"))
	req := httptest.NewRequest(http.MethodPost, "/greet", strings.NewReader("ada"))
	req.Header.Set("X-Signature", hex.EncodeToString(mac.Sum(nil)))
	rec := httptest.NewRecorder()
	hooks.ServeHTTP(rec, req)
	fmt.Println(rec.Code, rec.Body.String())

	stop()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// 200 hello, ada
}

// A Secret never prints or logs its value.
func ExampleSecret() {
	s := webhookstream.NewSecret("whsec_abc")
	fmt.Println(s)
	fmt.Printf("%+v\n", webhookstream.Stripe{Secrets: []webhookstream.Secret{s}})
	// Output:
	// [redacted]
	// {Secrets:[[redacted]] Tolerance:0s}
}
