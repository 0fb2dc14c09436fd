// Package mqttstream is Peonify's MQTT intake: it subscribes to MQTT
// topics (MQTT 5, through the Eclipse Paho client) and turns each message
// into a task in a durable store.
//
// # Design: a push intake in front of a durable store
//
// An MQTT broker pushes messages and forgets each one once the subscriber
// acknowledges it (PUBACK). Acknowledging on receipt, as MQTT clients do
// by default, would lose every message in memory at a crash. So the
// Intake is not a peonify.Stream: it writes each message, as a task, into
// a durable store through peonify.Enqueuer (sqlitestream, pgstream, or any
// stream whose Enqueue returns only once the tasks survive a crash), and
// sends the PUBACK only after Enqueue returned. A processor then runs the
// task from that store like any other, with its retries, leases and dead
// letters.
//
//	store, err := sqlitestream.Open("tasks.db", sqlitestream.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	intake, err := mqttstream.New(store, mqttstream.Config{
//		Servers:    []string{"mqtt://broker:1883"},
//		ClientID:   "peonify-" + hostname, // stable across restarts, unique per process
//		Routes:     map[string]string{"devices/+/events": "device-event"},
//		ShareGroup: "peonify", // processors on other hosts split the messages
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	intakeDone := make(chan error, 1)
//	go func() { intakeDone <- intake.Run(ctx) }()
//
//	p, err := peonify.New(peonify.Config{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddTaskList(peonify.TaskList{"device-event": eventHandler}); err != nil {
//		log.Fatal(err)
//	}
//	if err := p.AddStream(store); err != nil { // the processor closes store when Run returns
//		log.Fatal(err)
//	}
//	if err := p.Run(ctx); err != nil {
//		log.Fatal(err)
//	}
//	if err := <-intakeDone; err != nil { // a refused subscription
//		log.Fatal(err)
//	}
//
// Run the intake and the processor on the same ctx: the intake stops
// taking messages at once, and the processor closes the store only after
// draining its running tasks.
//
// # Delivery guarantees
//
// The intake subscribes at QoS 1 in a persistent session: it connects
// with Clean Start off, a Session Expiry Interval (Config.SessionExpiry,
// a day by default) and a stable Config.ClientID, so that the broker keeps
// its subscriptions and queues the QoS 1 messages published while it is
// away. Acknowledgements are manual, sent in the order the messages
// arrived, as MQTT requires.
//
// The broker's own limits still apply: Mosquitto, for one, queues at most
// max_queued_messages (1000 by default) for a session, counting the
// messages waiting for a connected intake that is slower than its
// publishers, and drops the rest. Size that limit for the longest outage
// and the largest burst to be absorbed (0 means no limit). A message published at QoS 0 is
// delivered at QoS 0: the broker may drop it, and publishers that need
// the guarantee must publish at QoS 1 (or 2, delivered at 1).
//
// A message is therefore stored at least once: if the intake crashes, or
// its connection drops, after Enqueue and before the PUBACK reached the
// broker, the broker delivers the message again to the next session, and
// it is stored again unless its task ID is the same (see below).
//
// # Start-up
//
// If Run cannot connect to any of Config.Servers at start-up (refused,
// unreachable within Config.ConnectTimeout, or the credentials refused),
// it returns a *ConnectError at once, so that a wrong address or password
// shows when the program starts. With Config.WaitForBroker it keeps
// trying instead, with backoff, and Stats.ConnectError says why meanwhile.
// Once connected, a lost connection is always retried.
//
// # Store failures
//
// MQTT does not redeliver a message on the connection it was sent on, so
// leaving it unacknowledged does not bring it back until the next session.
// The intake therefore holds a message whose Enqueue failed and retries
// the Enqueue, with jittered exponential backoff between
// Config.MinBackoff and Config.MaxBackoff, until the store takes it. The
// messages behind it wait (their acknowledgements must follow its own);
// Config.ReceiveMaximum (100 by default) bounds how many the broker sends
// before it stops and queues the rest for the session. If the intake
// stops meanwhile, the held messages are not acknowledged, and the broker
// delivers them to the next Run with the same ClientID: nothing is lost. A
// message the store refuses as an invalid task is logged, counted in
// Stats.Dropped and acknowledged, since no retry could store it.
//
// # Task IDs, types and headers
//
// Config.Routes maps topic filters to task types; the filters must not
// overlap, so that each message has exactly one type. The task ID is, in
// order:
//
//  1. the value of the MQTT 5 user property "id" (IDProperty), if present
//     (hashed if longer than peonify.MaxIDLen, 255 bytes);
//  2. else the message's correlation data, as text if it is printable
//     UTF-8, else in hex;
//  3. else, with Config.ContentIDs, "mqtt-" and a hash of the topic, the
//     payload, the content type, the response topic and the user
//     properties;
//  4. else a new random ID (peonify.NewID).
//
// # Flow control
//
// The user property peonify-key (peonify.KeyHeader) is the task's Key,
// which limits per key (peonify.Limit with PerKey) are enforced on by the
// processors running from the store; the intake only carries it. A
// message whose key is longer than peonify.MaxKeyLen is logged, counted as
// dropped and acknowledged.
//
// # Redeliveries and resends
//
// With an ID from 1 to 3, a message delivered or published again within
// Config.ResendWindow (24 hours by default, as long as the default
// SessionExpiry for which the broker may redeliver it) of the moment its
// task was stored is acknowledged without a second task, whatever the
// store keeps: also after the task ran and a store that keeps no finished
// tasks deleted it (sqlitestream or pgstream without KeepDone, Redis or
// NATS past their duplicate windows), and in RabbitMQ, which detects no
// duplicates. The intake remembers the IDs it stored (at most
// Config.ResendMaxIDs, 1,000,000 by default) in memory and, with
// Config.ResendLog, in a file synced before each acknowledgement, so that
// the window also holds across restarts and crashes; without ResendLog a
// redelivery after a restart is recognised only while the store still
// holds the task. After the window, the store alone decides. Each intake
// remembers its own IDs, so with a ShareGroup a message that reaches
// another member is recognised only by the store.
//
// With 4, the default for messages that carry no ID, a redelivery becomes
// a second task: handlers must be idempotent, as they must anyway under
// at-least-once delivery. ContentIDs avoids that duplicate, at a cost:
// two distinct messages with the same content (a sensor sending the same
// reading twice) within the ResendWindow, or while the first is in the
// store, become one task. Publishers that can should set the "id" user
// property.
//
// The payload is kept byte for byte. The message's user properties become
// the task's headers (a key given twice keeps both values, joined with
// ", "), and the intake adds the topic (HeaderTopic), the Content Type
// (HeaderContentType) and the Response Topic (HeaderResponseTopic).
//
// # Shared subscriptions
//
// With Config.ShareGroup, the intake subscribes to
// "$share/<group>/<filter>": the intakes of every processor in the group
// split the messages between them, each message going to one of them.
// Each intake needs its own ClientID. Brokers differ in what they do with
// a group's messages while a member with a persistent session is away:
// some send them all to the members still connected, some queue a share
// in the absent member's session until it returns.
//
// # Changing routes
//
// The broker keeps the subscriptions of a persistent session. After a
// route is removed from the configuration, its old subscription may still
// deliver messages, which match no route: the intake logs them, counts
// them in Stats.Dropped and acknowledges them. To drop old subscriptions,
// use a new ClientID or let the session expire.
package mqttstream
