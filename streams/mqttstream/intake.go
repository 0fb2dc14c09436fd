package mqttstream

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/backoff"
	"github.com/peonify/peonify/internal/intake"
	"github.com/peonify/peonify/internal/resend"
)

// Headers the intake sets on every task, besides the message's user
// properties.
const (
	HeaderTopic         = "mqtt-topic"          // the topic the message was published to
	HeaderContentType   = "content-type"        // the message's Content Type, when it has one
	HeaderResponseTopic = "mqtt-response-topic" // the message's Response Topic, when it has one
)

// IDProperty is the user property whose value becomes the task ID.
const IDProperty = "id"

// ackInterval is how often the MQTT client sends the acknowledgements
// marked since the last time, in the order the messages arrived.
const ackInterval = 5 * time.Millisecond

// Intake subscribes to MQTT topics and turns each message into a task in
// a durable store, acknowledging the message to the broker only after the
// store's Enqueue returned. Create one with New and call Run.
type Intake struct {
	store peonify.Enqueuer
	cfg   Config
	log   *slog.Logger

	servers  []*url.URL
	username string
	password string
	filters  []string // subscription filters, with the share group
	routes   []route

	started atomic.Bool
	ready   chan struct{}
	once    sync.Once
	resends *resend.Window // set by Run; nil when Config.ResendWindow is negative

	stats struct {
		received, enqueued, duplicates, dropped, storeErrors atomic.Uint64
		connected, everConnected                             atomic.Bool
		connectErr                                           atomic.Pointer[error]
	}
}

// ConnectError is the error of a Run that could not connect to any
// broker at start-up, without Config.WaitForBroker.
type ConnectError struct {
	Err error // why each server failed
}

// Error says why no broker could be reached and how to wait for one.
func (e *ConnectError) Error() string {
	return "mqttstream: cannot connect to the broker: " + e.Err.Error() + " (or set Config.WaitForBroker to wait for it)"
}

// Unwrap returns the errors of the servers tried.
func (e *ConnectError) Unwrap() error { return e.Err }

// joinErrs joins errors on one line, separated by semicolons.
func joinErrs(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return lineErrs(errs)
}

// lineErrs are errors shown on one line.
type lineErrs []error

func (e lineErrs) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e lineErrs) Unwrap() []error { return e }

// route is one entry of Config.Routes.
type route struct {
	filter string // without the share group
	typ    string
}

// New returns an Intake that stores the messages of cfg.Routes as tasks
// in store, which must be durable (sqlitestream, pgstream, or another
// stream whose Enqueue returns only once the tasks survive a crash). The
// Intake does not close store.
func New(store peonify.Enqueuer, cfg Config) (*Intake, error) {
	if store == nil {
		return nil, &peonify.ConfigError{Field: "mqttstream.New", Reason: "store is nil: pass a durable stream such as sqlitestream"}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	in := &Intake{store: store, cfg: cfg, log: cfg.Logger, ready: make(chan struct{}),
		username: cfg.Username, password: cfg.Password}
	for _, s := range cfg.Servers {
		u, _ := url.Parse(s) // validated
		if u.User != nil {
			if in.username == "" {
				in.username = u.User.Username()
				in.password, _ = u.User.Password()
			}
			u.User = nil
		}
		if u.Port() == "" {
			switch strings.ToLower(u.Scheme) {
			case "mqtt", "tcp":
				u.Host = net.JoinHostPort(u.Hostname(), "1883")
			case "mqtts", "tls", "ssl", "tcps", "mqtt+ssl":
				u.Host = net.JoinHostPort(u.Hostname(), "8883")
			}
		}
		in.servers = append(in.servers, u)
	}
	for f, typ := range cfg.Routes {
		group, filter := splitShare(f)
		if group == "" {
			group = cfg.ShareGroup
		}
		sub := filter
		if group != "" {
			sub = "$share/" + group + "/" + filter
		}
		in.filters = append(in.filters, sub)
		in.routes = append(in.routes, route{filter: filter, typ: typ})
	}
	slices.Sort(in.filters)
	return in, nil
}

// Ready returns a channel that is closed once the intake has subscribed to
// every route for the first time.
func (in *Intake) Ready() <-chan struct{} { return in.ready }

// Stats counts what an Intake did since it was created.
type Stats struct {
	Received    uint64 // messages received from the broker
	Enqueued    uint64 // messages stored as new tasks, and acknowledged
	Duplicates  uint64 // messages whose task was already stored, acknowledged
	Dropped     uint64 // messages acknowledged without a task: no route, or refused by the store as invalid
	StoreErrors uint64 // failed Enqueue calls, retried after a backoff
	Connected   bool   // whether a connection to the broker is up

	// ConnectError is why the last attempt to connect failed, while no
	// connection is up; nil when connected.
	ConnectError error
}

// Stats returns the intake's counters.
func (in *Intake) Stats() Stats {
	st := Stats{
		Received:    in.stats.received.Load(),
		Enqueued:    in.stats.enqueued.Load(),
		Duplicates:  in.stats.duplicates.Load(),
		Dropped:     in.stats.dropped.Load(),
		StoreErrors: in.stats.storeErrors.Load(),
		Connected:   in.stats.connected.Load(),
	}
	if p := in.stats.connectErr.Load(); p != nil && !st.Connected {
		st.ConnectError = *p
	}
	return st
}

// received is one message handed over by the MQTT client.
type received struct {
	pb  *paho.Publish
	cli *paho.Client // the connection it came on, which must acknowledge it
}

// Run connects to the broker, subscribes to the routes and stores
// messages as tasks until ctx ends. It reconnects, with jittered backoff,
// whenever the connection drops. When ctx ends it stops taking messages,
// lets the Enqueue in flight finish and acknowledges its messages, and
// disconnects, leaving its session with the broker: the messages it did
// not store, and those published while it is away, are delivered to the
// next Run with the same ClientID. Then it returns nil. It returns an
// error if the broker refuses a subscription, if Config.ResendLog cannot
// be opened, and, unless Config.WaitForBroker is set, a *ConnectError if
// it cannot connect to any of the servers at start-up. Run may be called
// once.
func (in *Intake) Run(ctx context.Context) error {
	if !in.started.CompareAndSwap(false, true) {
		return errors.New("mqttstream: Run called twice: an Intake runs once; create another with New")
	}
	resends, err := resend.OpenWindow(in.cfg.resendConfig(), in.log)
	if err != nil {
		return err
	}
	in.resends = resends
	defer resends.Close()
	// Messages wait here for the store. The broker sends at most
	// ReceiveMaximum unacknowledged QoS 1 messages; QoS 0 ones are not
	// counted, and the client waits for room for them.
	msgs := make(chan received, in.cfg.ReceiveMaximum)
	var stopping atomic.Bool
	stop := make(chan struct{})
	fatal := make(chan error, 1)

	// Without WaitForBroker, a first round of attempts that fails on
	// every server ends Run. OnConnectError runs on one goroutine.
	var startErrs []error
	onConnectErr := func(err error) {
		in.stats.connectErr.Store(&err)
		if in.cfg.WaitForBroker || in.stats.everConnected.Load() {
			in.logConnectErr(err)
			return
		}
		startErrs = append(startErrs, err)
		if len(startErrs) == len(in.servers) {
			select {
			case fatal <- &ConnectError{Err: joinErrs(startErrs)}:
			default:
			}
		}
	}

	var subs sync.WaitGroup
	connCtx, disconnect := context.WithCancel(context.WithoutCancel(ctx))
	defer disconnect()
	cm, err := autopaho.NewConnection(connCtx, in.clientConfig(func(pr paho.PublishReceived) (bool, error) {
		if stopping.Load() {
			return true, nil // not acknowledged: the broker sends it again to the next session
		}
		in.stats.received.Add(1)
		select {
		case msgs <- received{pb: pr.Packet, cli: pr.Client}:
		case <-stop:
		}
		return true, nil
	}, func(cm *autopaho.ConnectionManager) {
		subs.Go(func() {
			if err := in.subscribe(connCtx, cm); err != nil {
				select {
				case fatal <- err:
				default:
				}
			}
		})
	}, onConnectErr))
	if err != nil {
		return fmt.Errorf("mqttstream: %w", err)
	}

	var runErr error
loop:
	for {
		select {
		case m := <-msgs:
			in.process(ctx, intake.Batch(m, msgs, cap(msgs)))
		case runErr = <-fatal:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	// Stop taking messages; those already handed over but not stored are
	// not acknowledged either, so the broker redelivers them.
	stopping.Store(true)
	close(stop)
	// Let the client send the acknowledgements marked last before the
	// connection closes; otherwise their messages come again (duplicates,
	// not losses).
	time.Sleep(4 * ackInterval)
	disconnect()
	<-cm.Done()
	subs.Wait()
	in.stats.connected.Store(false)
	return runErr
}

// clientConfig is the MQTT client's configuration: QoS 1 subscriptions
// in a persistent session, with manual acknowledgements.
func (in *Intake) clientConfig(onPublish func(paho.PublishReceived) (bool, error), onUp func(*autopaho.ConnectionManager), onConnectErr func(error)) autopaho.ClientConfig {
	receiveMax := uint16(in.cfg.ReceiveMaximum)
	errLog := pahoLogger{in.log}
	return autopaho.ClientConfig{
		ServerUrls:                    in.servers,
		TlsCfg:                        in.cfg.TLSConfig,
		KeepAlive:                     uint16(in.cfg.KeepAlive / time.Second),
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         uint32(in.cfg.SessionExpiry / time.Second),
		ReconnectBackoff: func(attempt int) time.Duration {
			return backoff.Duration(attempt, in.cfg.MinBackoff, in.cfg.MaxBackoff)
		},
		ConnectTimeout:  in.cfg.ConnectTimeout,
		ConnectUsername: in.username,
		ConnectPassword: []byte(in.password),
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.ReceiveMaximum = &receiveMax
			return cp, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, ca *paho.Connack) {
			in.stats.connected.Store(true)
			in.stats.everConnected.Store(true)
			in.stats.connectErr.Store(nil)
			in.log.Info("mqttstream: connected", "client_id", in.cfg.ClientID, "session_present", ca.SessionPresent)
			onUp(cm)
		},
		OnConnectionDown: func() bool {
			in.stats.connected.Store(false)
			in.log.Warn("mqttstream: connection lost; reconnecting", "client_id", in.cfg.ClientID)
			return true
		},
		OnConnectError: onConnectErr,
		Errors:         errLog,
		PahoErrors:     errLog,
		ClientConfig: paho.ClientConfig{
			ClientID:                   in.cfg.ClientID,
			EnableManualAcknowledgment: true,
			SendAcksInterval:           ackInterval,
			OnPublishReceived:          []func(paho.PublishReceived) (bool, error){onPublish},
			OnServerDisconnect: func(d *paho.Disconnect) {
				reason := ""
				if d.Properties != nil {
					reason = d.Properties.ReasonString
				}
				in.log.Warn("mqttstream: broker closed the connection", "reason_code", fmt.Sprintf("0x%02x", d.ReasonCode), "reason", reason)
			},
		},
	}
}

// logConnectErr logs a failed connection attempt, which is retried.
func (in *Intake) logConnectErr(err error) {
	var ce *autopaho.ConnackError
	if errors.As(err, &ce) {
		in.log.Error("mqttstream: broker refused the connection; retrying", "client_id", in.cfg.ClientID,
			"reason_code", fmt.Sprintf("0x%02x", ce.ReasonCode), "reason", ce.Reason, "err", err)
		return
	}
	in.log.Warn("mqttstream: connecting failed; retrying", "err", err)
}

// subscribe subscribes to every route at QoS 1. A refused subscription is
// returned; a lost connection is not, since the next one subscribes again.
func (in *Intake) subscribe(ctx context.Context, cm *autopaho.ConnectionManager) error {
	s := &paho.Subscribe{}
	for _, f := range in.filters {
		// RetainHandling 1: retained messages are sent for a new
		// subscription only, not again on every reconnection.
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1, RetainHandling: 1})
	}
	ctx, cancel := context.WithTimeout(ctx, in.cfg.ConnectTimeout)
	defer cancel()
	ack, err := cm.Subscribe(ctx, s)
	switch {
	case ack != nil: // the broker answered; its reason codes say what failed
	case errors.Is(err, paho.ErrInvalidArguments):
		return fmt.Errorf("mqttstream: cannot subscribe to %v: %w", in.filters, err)
	default:
		in.log.Warn("mqttstream: subscribing failed; will subscribe again on the next connection", "err", err)
		return nil
	}
	for i, code := range ack.Reasons {
		if i >= len(in.filters) {
			break
		}
		switch {
		case code >= 0x80:
			return fmt.Errorf("mqttstream: broker refused the subscription to %q with reason 0x%02x (%s): check the broker's ACL and its support for shared subscriptions",
				in.filters[i], code, subackReason(code))
		case code == 0:
			return fmt.Errorf("mqttstream: broker granted only QoS 0 for %q, which can lose messages: allow QoS 1 for this client", in.filters[i])
		}
	}
	in.log.Info("mqttstream: subscribed", "filters", in.filters)
	in.once.Do(func() { close(in.ready) })
	return nil
}

func subackReason(code byte) string {
	switch code {
	case 0x80:
		return "unspecified error"
	case 0x83:
		return "implementation specific error"
	case 0x87:
		return "not authorized"
	case 0x8F:
		return "topic filter invalid"
	case 0x91:
		return "packet identifier in use"
	case 0x97:
		return "quota exceeded"
	case 0x9E:
		return "shared subscriptions not supported"
	case 0xA1:
		return "subscription identifiers not supported"
	case 0xA2:
		return "wildcard subscriptions not supported"
	}
	return "unknown"
}

// process stores a batch of messages and acknowledges each one once its
// task is stored. A store failure is retried with backoff until ctx
// ends; the messages not stored by then are left unacknowledged, and the
// broker delivers them again.
func (in *Intake) process(ctx context.Context, batch []received) {
	var (
		tasks []*peonify.Task
		keep  []received
		owned []bool // whether each task's ID came with its message
	)
	for _, m := range batch {
		t, own, ok, bad := in.task(m.pb)
		switch {
		case !ok:
			in.stats.dropped.Add(1)
			in.log.Error("mqttstream: message on a topic that matches no route; acknowledged and dropped (a subscription left in the session by an earlier configuration?)", "topic", m.pb.Topic)
			in.ack(m)
			continue
		case bad != nil:
			// No retry could store it: drop it, as the store would.
			in.stats.dropped.Add(1)
			in.log.Error("mqttstream: message with an unusable "+peonify.KeyHeader+" user property; acknowledged and dropped",
				"topic", m.pb.Topic, "id", t.ID, "err", bad)
			in.ack(m)
			continue
		case own && in.resends.Seen(t.ID):
			// Stored within the ResendWindow: the store may have forgotten it.
			in.stats.duplicates.Add(1)
			in.log.Debug("mqttstream: message redelivered within Config.ResendWindow; acknowledged without storing it again", "topic", m.pb.Topic, "id", t.ID)
			in.ack(m)
			continue
		}
		tasks = append(tasks, t)
		keep = append(keep, m)
		owned = append(owned, own)
	}
	if len(tasks) == 0 {
		return
	}
	err := in.enqueue(ctx, tasks...)
	if err == nil {
		in.record(tasks, owned)
		for _, m := range keep {
			in.ack(m)
		}
		return
	}
	// Store the tasks one by one, so that a failure stops at the first
	// task it concerns and an invalid task does not block the others.
	for i, t := range tasks {
		if !in.store1(ctx, t) {
			return // ctx ended: this message and those after it stay unacknowledged
		}
		in.record(tasks[i:i+1], owned[i:i+1])
		in.ack(keep[i])
	}
}

// record remembers the IDs of tasks that came with their messages (owned
// says which; a new random ID never comes again), once the tasks are
// stored and before the messages are acknowledged (see
// resend.Window.Record).
func (in *Intake) record(tasks []*peonify.Task, owned []bool) {
	if in.resends == nil {
		return
	}
	ids := make([]string, 0, len(tasks))
	for i, t := range tasks {
		if owned[i] {
			ids = append(ids, t.ID)
		}
	}
	in.resends.Record(ids...)
}

// store1 stores one task, retrying failures with backoff. It reports
// false if ctx ended first.
func (in *Intake) store1(ctx context.Context, t *peonify.Task) bool {
	for attempt := 0; ; attempt++ {
		err := in.enqueue(ctx, t)
		var ie *peonify.InvalidTaskError
		switch {
		case err == nil:
			return true
		case errors.As(err, &ie):
			in.stats.dropped.Add(1)
			in.log.Error("mqttstream: the store refused a message as an invalid task; acknowledged and dropped", "topic", t.Headers[HeaderTopic], "id", t.ID, "err", err)
			return true
		case ctx.Err() != nil:
			return false
		}
		wait := backoff.Duration(attempt, in.cfg.MinBackoff, in.cfg.MaxBackoff)
		in.log.Error("mqttstream: storing a message failed; holding it unacknowledged and retrying", "id", t.ID, "retry_in", wait, "err", err)
		if !backoff.Sleep(ctx, wait) {
			return false
		}
	}
}

// enqueue stores tasks; tasks already stored count as stored. An Enqueue
// in flight when ctx ends still completes, so that its messages can be
// acknowledged.
func (in *Intake) enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	dup, err := intake.Enqueue(context.WithoutCancel(ctx), in.store, in.cfg.EnqueueTimeout, tasks...)
	var de *peonify.DuplicateError
	switch {
	case err == nil && dup == nil:
		in.stats.enqueued.Add(uint64(len(tasks)))
		return nil
	case errors.As(dup, &de):
		in.stats.duplicates.Add(uint64(len(de.IDs)))
		in.stats.enqueued.Add(uint64(len(tasks) - min(len(de.IDs), len(tasks))))
		return nil
	case err == nil: // a bare peonify.ErrDuplicate: every task was stored before
		in.stats.duplicates.Add(uint64(len(tasks)))
		return nil
	}
	if !isInvalid(err) {
		in.stats.storeErrors.Add(1)
	}
	return err
}

// ack acknowledges a message on the connection it came on. If that
// connection is gone, the acknowledgement is not sent, and the broker
// delivers the message again on the next one (a duplicate, not a loss).
func (in *Intake) ack(m received) {
	if err := m.cli.Ack(m.pb); err != nil {
		in.log.Debug("mqttstream: acknowledgement not sent; the broker will redeliver", "topic", m.pb.Topic, "err", err)
	}
}

// task turns a message into a task; it reports whether the task's ID
// came with the message (rather than a new random one), false when no
// route matches its topic, and bad when the message's peonify-key user
// property cannot be the task's Key.
func (in *Intake) task(pb *paho.Publish) (t *peonify.Task, own, ok bool, bad error) {
	typ := ""
	for _, r := range in.routes {
		if match(r.filter, pb.Topic) {
			typ = r.typ
			break
		}
	}
	if typ == "" {
		return nil, false, false, nil
	}
	t = &peonify.Task{Type: typ, Headers: map[string]string{HeaderTopic: pb.Topic}}
	if len(pb.Payload) > 0 {
		t.Payload = append([]byte(nil), pb.Payload...)
	}
	var corr []byte
	if p := pb.Properties; p != nil {
		for _, up := range p.User {
			if old, ok := t.Headers[up.Key]; ok && up.Key != HeaderTopic {
				t.Headers[up.Key] = old + ", " + up.Value
			} else {
				t.Headers[up.Key] = up.Value
			}
		}
		t.Headers[HeaderTopic] = pb.Topic
		if p.ContentType != "" {
			t.Headers[HeaderContentType] = p.ContentType
		}
		if p.ResponseTopic != "" {
			t.Headers[HeaderResponseTopic] = p.ResponseTopic
		}
		corr = p.CorrelationData
		if id := p.User.Get(IDProperty); id != "" {
			t.ID = clampID(id)
		}
		t.Key, bad = intake.Key("", t.Headers)
	}
	switch {
	case t.ID != "":
	case len(corr) > 0:
		t.ID = correlationID(corr)
	case in.cfg.ContentIDs:
		t.ID = contentID(pb)
	default:
		t.ID = peonify.NewID()
		return t, false, true, bad
	}
	return t, true, true, bad
}

// clampID keeps an ID of at most peonify.MaxIDLen bytes as it is, and
// replaces a longer one with a hash of it.
func clampID(id string) string {
	if len(id) <= peonify.MaxIDLen {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "mqtt-" + hex.EncodeToString(sum[:16])
}

// correlationID turns correlation data into an ID: printable text as it
// is, other bytes in hex.
func correlationID(b []byte) string {
	if utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return !unicode.IsPrint(r) }) {
		return clampID(string(b))
	}
	if len(b) <= 127 {
		return hex.EncodeToString(b)
	}
	sum := sha256.Sum256(b)
	return "mqtt-" + hex.EncodeToString(sum[:16])
}

// contentID hashes what identifies a message: topic, payload, and the
// properties a publisher sets.
func contentID(pb *paho.Publish) string {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte(pb.Topic))
	field(pb.Payload)
	if p := pb.Properties; p != nil {
		field([]byte(p.ContentType))
		field([]byte(p.ResponseTopic))
		for _, up := range p.User {
			field([]byte(up.Key))
			field([]byte(up.Value))
		}
	}
	return "mqtt-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// pahoLogger sends the MQTT client's error log to slog at debug level;
// the intake logs what matters itself.
type pahoLogger struct{ log *slog.Logger }

func (l pahoLogger) Println(v ...any) {
	l.log.Debug("mqttstream: client: " + strings.TrimSpace(fmt.Sprintln(v...)))
}

func (l pahoLogger) Printf(format string, v ...any) {
	l.log.Debug("mqttstream: client: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func isInvalid(err error) bool {
	var ie *peonify.InvalidTaskError
	return errors.As(err, &ie)
}
