// Package webhookstream is Peonify's HTTP webhook intake: an http.Handler
// that turns authenticated POST requests from webhook senders (GitHub,
// Stripe, Slack, Shopify, Standard Webhooks senders, or any HMAC-signing
// service) into tasks.
//
// # Design: a push intake in front of a durable store
//
// A webhook sender considers an event delivered as soon as it gets a 2xx
// answer, and does not send it again. So a webhook intake must never answer
// 2xx for an event that a crash could still lose. The Handler therefore is
// not a peonify.Stream holding tasks in memory: it writes each accepted
// request, as a task, into a durable store through peonify.Enqueuer
// (sqlitestream, pgstream, or any durable stream), and answers 202 Accepted
// only after Enqueue returned. The processor then runs the task from that
// store like any other, with its retries, leases and dead letters. If the
// store fails or is too slow, the Handler answers 503 with Retry-After, so
// the sender tries again later.
//
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
//	defer stop()
//	store, err := sqlitestream.Open("tasks.db", sqlitestream.Config{KeepDone: 24 * time.Hour})
//	if err != nil {
//		log.Fatal(err)
//	}
//	hooks, err := webhookstream.New(store, webhookstream.Config{
//		Routes: map[string]webhookstream.Route{
//			"/hooks/github": {
//				Type:     "github-event",
//				Verifier: webhookstream.GitHub{Secrets: []webhookstream.Secret{webhookstream.NewSecret(os.Getenv("GITHUB_WEBHOOK_SECRET"))}},
//				JSON:     true,
//			},
//		},
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	srv := webhookstream.Server(":8080", hooks)
//	go func() {
//		<-ctx.Done()
//		_ = srv.Shutdown(context.Background()) // stop the intake first; Run below then drains
//	}()
//	go func() {
//		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
//			log.Print(err)
//		}
//	}()
//
//	p, err := peonify.New(peonify.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddTaskList(peonify.TaskList{"github-event": githubHandler}); err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddStream(store); err != nil { // the processor closes store when Run returns
//		log.Fatal(err)
//	}
//	if err := p.Run(ctx); err != nil {
//		log.Fatal(err)
//	}
//
// The Handler can also be mounted in the program's own server or mux; its
// Config.Routes are then the full request paths.
//
// # Verification
//
// Each route has a Verifier that checks the request's signature over the
// raw body, in constant time, before anything parses the body. The presets:
//
//   - GitHub: X-Hub-Signature-256, the hex HMAC-SHA256 of the body.
//   - Stripe: Stripe-Signature, a signed timestamp and hex HMAC-SHA256s.
//   - StandardWebhooks: webhook-id, webhook-timestamp, webhook-signature
//     (Svix and the senders that follow the specification).
//   - Slack: X-Slack-Signature, the hex HMAC-SHA256 of
//     "v0:<X-Slack-Request-Timestamp>:<body>".
//   - Shopify: X-Shopify-Hmac-Sha256, the base64 HMAC-SHA256 of the body.
//   - HMAC: any header holding the hex or base64 HMAC-SHA256 of the body,
//     after an optional prefix.
//
// Each accepts several secrets, so a secret can be rotated without
// refusing deliveries. Secrets are held in the Secret type, which prints
// and logs as "[redacted]".
//
// A custom Verifier holds its secrets as Secret values too, and uses them
// without reading their bytes: MatchHMAC checks a signature against all of
// them in constant time (Secret.HMAC serves schemes it does not fit, and
// Secret.Matches those that send the secret itself). The bytes never leave
// the Secret, so a custom Verifier cannot log or leak them by mistake, and
// it rotates its secrets as the presets do, by listing the old and the new
// one. See the MatchHMAC example.
//
// # Replays and redeliveries
//
// Where the scheme signs a timestamp (Stripe, Standard Webhooks, Slack), a
// request signed more than the tolerance (5 minutes by default) before or
// after the receiver's clock is refused. And where the sender gives each
// delivery an ID (X-GitHub-Delivery, the Stripe event's "id", webhook-id,
// the Slack event's "event_id", X-Shopify-Webhook-Id), that ID, after
// Route.IDPrefix, becomes the task's ID: a redelivery of an event the
// store still holds is answered 200 OK with the Peonify-Duplicate header
// and is not enqueued again. A replay with a bad signature is refused like
// any other forged request.
//
// Slack gives no ID to a slash command or an interaction (and does not
// retry them): the Slack preset makes their ID from the signed timestamp
// and a digest of the signature, so only an identical replay, within the
// tolerance, is a duplicate, and a later one is refused as stale. A user
// who runs the same command twice gets two tasks.
//
// A store forgets a task's ID when the task is deleted, which sqlitestream
// does when the task is acked unless its Config.KeepDone keeps finished
// tasks. Keep them at least as long as the sender may redeliver (longer
// than the timestamp tolerance for Stripe, Standard Webhooks and Slack;
// Shopify retries for 4 hours), or a late redelivery runs again. Task handlers must be idempotent anyway: a
// processor delivers at least once.
//
// # Tasks
//
// The raw body becomes Task.Payload, byte for byte. Task.Headers gets the
// request's Content-Type (HeaderContentType), the delivery ID
// (HeaderDeliveryID) and the event type (HeaderEvent) when known, and the
// request headers named in Route.Headers under their lower-case names.
// The Peonify-Key request header (or Route.KeyHeader) is Task.Key, which
// limits per key (peonify.Limit with PerKey) are enforced on by the
// processors running from the store; a key longer than peonify.MaxKeyLen
// is answered 400 Bad Request.
//
// # Answers
//
//   - 202 Accepted: the task is stored; the JSON body and the
//     Peonify-Task-Id header give its ID.
//   - 200 OK: a redelivery of a stored task (Peonify-Duplicate: true), or
//     the reply of a synchronous route's task.
//   - 400 Bad Request: malformed JSON on a JSON route, or an unusable
//     delivery ID or header.
//   - 401 Unauthorized: a missing, malformed or wrong signature, or a
//     timestamp outside the tolerance.
//   - 404 Not Found, 405 Method Not Allowed: no route, or not a POST.
//   - 408 Request Timeout, 413 Request Entity Too Large: the body came too
//     slowly or is too large.
//   - 503 Service Unavailable with Retry-After: the store failed or timed
//     out; the sender should retry.
//
// # Synchronous routes
//
// Some senders expect the result in the answer (chat slash commands, for
// example). A route with Sync waits, up to Route.SyncTimeout, for the
// task's first attempt and answers with the Reply its handler set with
// Respond (200 OK with a small JSON body if it set none). It needs a Results
// registry shared by the Handler (Config.Results) and a processor in the
// same process (Results.Middleware). A task that fails its first attempt,
// or does not finish in time, is answered 202 Accepted and runs on.
package webhookstream
