// Package httpapi is Peonify's HTTP API: an http.Handler that lets a
// service in any language enqueue tasks and workflows, read their state,
// results and progress, wait for them, and cancel, retry or delete them,
// with JSON over HTTP and no client library. `peonify run` mounts it on
// its http listener when its config has an api section; a Go service
// mounts it on a mux of its own:
//
//	api, err := httpapi.New(httpapi.Config{
//		Stores: []httpapi.Store{{Name: "main", Stream: store}},
//		Tokens: []httpapi.Token{{Name: "billing", Secret: os.Getenv("BILLING_API_TOKEN"),
//			Scopes: []httpapi.Scope{httpapi.ScopeEnqueue, httpapi.ScopeRead}}},
//	})
//	...
//	mux.Handle("/v1/", api)
//
// The routes, their bodies and answers are described by an OpenAPI 3.1
// document, httpapi/openapi.json in the repository, returned by OpenAPI
// and served at GET /v1/openapi.json:
//
//	POST   /v1/tasks                  enqueue one task              (scope enqueue)
//	POST   /v1/tasks/batch            enqueue many tasks            (scope enqueue)
//	GET    /v1/tasks/{id}?wait=30s    a task, long-polled           (scope read)
//	POST   /v1/tasks/{id}/cancel      cancel a task                 (scope admin)
//	POST   /v1/tasks/{id}/retry       retry a dead task             (scope admin)
//	DELETE /v1/tasks/{id}             delete a task                 (scope admin)
//	GET    /v1/stores                 stores and counts by state    (scope read)
//	POST   /v1/workflows              enqueue a workflow            (scope enqueue)
//	GET    /v1/workflows/{id}         a workflow                    (scope read)
//	POST   /v1/workflows/{id}/cancel  cancel a workflow             (scope admin)
//	GET    /v1/openapi.json           the OpenAPI document          (no token)
//
// # Authentication
//
// A request carries "Authorization: Bearer <secret>" with the secret of
// one of Config.Tokens; secrets are compared in constant time over their
// SHA-256 hashes, so neither their content nor their length leaks. A
// token's scopes say what it may do; admin implies read and enqueue. A
// request without a token (or with an unknown one) is refused with 401
// and WWW-Authenticate: Bearer, one whose token lacks the scope with 403.
// Config.Anonymous grants scopes to requests without an Authorization
// header: use it only on a listener that trusted clients alone can reach.
//
// # Errors
//
// Every error answer is JSON, {"error": "...", "field": "..."}: error says
// what is wrong and how to fix it, field is the JSON path of the request
// field at fault (such as "tasks[2].delay") when there is one, also for
// a syntax error inside a field's value. 400 is a body that is not JSON
// or a field of the wrong type, 401 and 403 are as above, 404 an unknown
// task, workflow or store, 409 a task ID or unique key already stored (or a task in a state the operation does not apply
// to, such as retrying a task that is not dead), 413 a body over
// Config.MaxBody, 422 a request that is well formed but invalid (an
// unknown parent, a cycle, an Idempotency-Key reused with another body),
// 501 an operation the store cannot do (cancel on a store that is not a
// peonify.Tracker), and 503 with Retry-After a store that failed or did
// not answer within Config.StoreTimeout.
//
// A request is checked in full before the first store call, so an error
// found in it stores nothing. A 503 of an enqueue means the outcome is
// unknown: the store may have stored the task before failing. Retry with
// the same Idempotency-Key, which makes that safe.
//
// # Idempotency-Key
//
// A POST /v1/tasks, /v1/tasks/batch or /v1/workflows with an
// Idempotency-Key header can be retried safely: a retry with the same key
// (from the same token) and the same body is answered with the first
// request's status and body, and the header Idempotent-Replayed: true; it
// never stores a second task, also when several retries race. The same key
// with another body (or route) is refused with 422.
//
// This holds across restarts of the Handler and across several Handlers
// (daemons) on one store, because it rests on the store's detection of
// duplicate task IDs: a task without an "id" gets one derived from the
// token's name and the key ("idem-" and 32 hex digits; a batch's tasks add
// "-<index>"), and every task of such a request carries two headers,
// HeaderIdempotencyKey and HeaderRequestHash, that tell a retry from a
// reuse of the key. In addition, each Handler remembers its answers for
// Config.IdempotencyWindow (24h), in memory, and serialises the requests
// of one key, so that a retry is recognised even after the store forgot
// the task (it ran and its store keeps no done tasks) and, within one
// Handler, on a store that detects no duplicates. What holds per store:
//
//   - sqlitestream, pgstream, memstream: duplicates are detected while the
//     task is stored (pending to dead, and done while KeepDone or, for a
//     task with a result, ResultRetention keeps it).
//   - redisstream: as above, and for DedupWindow (5 minutes) after the
//     task finished.
//   - natsstream: within the stream's duplicate window.
//   - amqpstream (RabbitMQ) detects no duplicates: only the Handler's own
//     memory applies, so a retry sent to another daemon, or after a
//     restart, may store a second task.
//
// # Batches
//
// POST /v1/tasks/batch takes up to MaxBatch tasks for one store, checks
// them all, then stores them with one Enqueue call: on sqlitestream and
// pgstream that is one transaction, all or nothing; on redisstream one
// atomic script run per chunk of at most 500 tasks and about 4 MiB of
// payloads, the runs in one pipeline, so a batch of up to 500 tasks whose
// payloads total less than 4 MiB is all or nothing and a larger one may
// be cut between chunks by a failure; on memstream one step under its
// lock; on natsstream and amqpstream one publish per task, not atomic.
// A task whose ID or unique key is already stored is not stored again
// and is marked "duplicate": true in the answer, while the others are
// stored, so that retrying a batch is safe. After a 503,
// retry the batch (with its Idempotency-Key): the tasks stored before the
// failure come back as duplicates.
//
// # Waiting
//
// GET /v1/tasks/{id}?wait=30s answers when the task is done, dead or
// cancelled, or when the wait ends (at most Config.MaxWait), with the task
// as it is then. It is woken by the store (peonify.Tracker.Wait), not by
// polling; on a store that is not a Tracker it answers at once. Serve the
// Handler from an http.Server whose BaseContext ends at shutdown, or
// Shutdown waits for the open long polls.
package httpapi
