// Package wsstream is Peonify's WebSocket intake: clients keep a
// WebSocket open to a Handler and send tasks over it, each acknowledged
// once it is stored durably. The package also has the Go client (Dial).
//
// # Design: a push intake in front of a durable store
//
// A WebSocket client cannot be polled, and it forgets a task once the
// server acknowledged it. So the Handler is not a peonify.Stream: it
// writes each task it receives into a durable store through
// peonify.Enqueuer (sqlitestream, pgstream, or any stream whose Enqueue
// returns only once the tasks survive a crash), and sends the client
// {"ack": id} only after Enqueue returned. A processor then runs the task
// from that store like any other, with its retries, leases and dead
// letters. If the store fails, the client gets a retryable nack and sends
// the task again later; if the connection drops before the ack, the client
// sends it again after reconnecting, and the server acknowledges a task it
// already holds without storing it twice (the task ID is the idempotency
// key). No task that was acknowledged can be lost, and none that was not
// is dropped by a well-behaved client.
//
// # Resends
//
// A resend of a task, recognised by its ID, is acknowledged and not
// stored again for Config.ResendWindow (24 hours by default) after the
// Handler stored the task, whatever the store keeps: also after the task
// ran and a store that keeps no finished tasks deleted it (sqlitestream
// or pgstream without KeepDone, Redis or NATS past their duplicate
// windows), and in RabbitMQ, which detects no duplicates. The Handler
// remembers the IDs it stored (at most Config.ResendMaxIDs, 1,000,000 by
// default) in memory and, with Config.ResendLog, in a file synced before
// each acknowledgement, so that the window also holds across restarts and
// crashes of the server. A resend that arrives while the first send of
// the task is still being stored, on the connection that dropped, waits
// for that Enqueue instead of storing the task a second time. A message
// that the connection's end cut short, even between two fragments, is
// neither stored nor answered. Without ResendLog a resend after a restart is
// recognised only while the store still holds the task. Each Handler
// remembers its own IDs: behind a load balancer, a resend that reaches
// another server is recognised by the store alone (give the store a
// retention, such as KeepDone, as long as the window).
//
// # Flow control
//
// A message's "key" field (or, without it, a "peonify-key" entry of its
// "headers") is the task's Key, which limits per key (peonify.Limit with
// PerKey) are enforced on by the processors running from the store; the
// Handler only carries it. A key longer than peonify.MaxKeyLen is nacked
// as a bad field.
//
// The protocol (JSON messages, one task per message) is described in the
// package's README.md, for clients in other languages.
//
//	store, err := sqlitestream.Open("tasks.db", sqlitestream.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	intake, err := wsstream.New(store, wsstream.Config{
//		OriginPatterns: []string{"app.example.com"},
//		Authenticate: func(r *http.Request) error {
//			if r.Header.Get("Authorization") != "Bearer "+os.Getenv("INTAKE_TOKEN") {
//				return errors.New("missing or wrong bearer token")
//			}
//			return nil
//		},
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	srv := &http.Server{Addr: ":8080", Handler: intake}
//	go func() {
//		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
//			log.Print(err)
//		}
//	}()
//	go func() {
//		<-ctx.Done()
//		_ = intake.Shutdown(context.Background()) // answer what was read, close with 1001
//		_ = srv.Shutdown(context.Background())
//	}()
//
//	p, err := peonify.New(peonify.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddTaskList(peonify.TaskList{"email": emailHandler}); err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddStream(store); err != nil { // the processor closes store when Run returns
//		log.Fatal(err)
//	}
//	if err := p.Run(ctx); err != nil {
//		log.Fatal(err)
//	}
//
// And a producer:
//
//	c, err := wsstream.Dial(ctx, "wss://tasks.example.com/ws", wsstream.DialOptions{
//		HTTPHeader: http.Header{"Authorization": {"Bearer " + token}},
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer c.Close()
//	err = c.Send(ctx, &peonify.Task{Type: "email", Payload: []byte(`{"to":"ada@example.com"}`)})
//
// # Security
//
// The handshake is checked in two steps: Config.Authenticate (401 when it
// returns an error), then the origin allow-list, Config.OriginPatterns
// (403 for a browser page from any other origin, which stops cross-site
// WebSocket hijacking with the user's cookies). Each message is limited to
// Config.ReadLimit bytes; a larger one closes the connection with status
// 1009 and nothing of it is stored.
//
// # Flow control and batching
//
// The Handler reads up to Config.MaxInFlight messages of a connection
// ahead of their answers, and stores the messages waiting together with
// one Enqueue, so that a busy connection shares store commits. Answers
// keep the order of the messages. A task in a batch that the store refuses
// as invalid does not fail the others.
//
// # Shutdown
//
// Handler.Shutdown refuses new handshakes, answers every message already
// read once its Enqueue returns, and closes each connection with 1001
// (going away). Clients reconnect, to this server once it is back or to
// another behind the same address, and resend what was not acknowledged.
// Call it before the http.Server's own Shutdown, which does not wait for
// hijacked (WebSocket) connections.
package wsstream
