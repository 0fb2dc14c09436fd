package wsstream

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intake"
	"github.com/peonify/peonify/internal/resend"
)

// Defaults of Config.
const (
	DefaultReadLimit      = 1 << 20 // 1 MiB
	DefaultMaxInFlight    = 256
	DefaultEnqueueTimeout = 10 * time.Second
	DefaultWriteTimeout   = 10 * time.Second
	DefaultPingInterval   = 30 * time.Second
	DefaultResendWindow   = resend.DefaultWindow // 24h
	DefaultResendMaxIDs   = resend.DefaultMaxIDs // 1,000,000
)

// Config configures a Handler. The zero value is valid.
type Config struct {
	// OriginPatterns lists the origins, besides the request's own host,
	// that browsers may connect from: host patterns such as
	// "app.example.com" or "*.example.com", or "https://app.example.com"
	// to match the scheme too (path.Match syntax). A handshake whose Origin
	// header matches neither is refused with 403 Forbidden. Requests
	// without an Origin header (programs, not browsers) are not checked.
	// Defaults to none: same-origin browsers only.
	OriginPatterns []string

	// Authenticate, when set, checks each handshake before the upgrade,
	// for example a bearer token or a session cookie. An error refuses the
	// connection with 401 Unauthorized and the error's text. Defaults to
	// none: every client that passes the origin check may connect.
	Authenticate func(r *http.Request) error

	// ReadLimit is the largest message, in bytes, that the Handler reads.
	// A larger message closes the connection with status 1009 (message
	// too big) and is not enqueued. Defaults to DefaultReadLimit (1 MiB).
	ReadLimit int64

	// MaxInFlight is how many messages of one connection may be read and
	// not yet answered. When it is reached the Handler stops reading, and
	// the client's writes wait. Defaults to DefaultMaxInFlight (256).
	MaxInFlight int

	// EnqueueTimeout bounds one Enqueue; a store slower than that is
	// answered with a retryable nack. Defaults to DefaultEnqueueTimeout
	// (10s).
	EnqueueTimeout time.Duration

	// WriteTimeout bounds writing one answer; a client that does not read
	// its answers for that long is disconnected. Defaults to
	// DefaultWriteTimeout (10s).
	WriteTimeout time.Duration

	// PingInterval is how often the Handler pings each client, which keeps
	// proxies from closing idle connections and finds dead clients. A
	// client that does not answer within the interval is disconnected.
	// Defaults to DefaultPingInterval (30s); negative disables pings.
	PingInterval time.Duration

	// ResendWindow is how long after a task was stored a resend of its
	// ID is recognised and acknowledged without storing the task again,
	// whatever the store keeps: also after the task ran and the store
	// deleted it (sqlitestream or pgstream without KeepDone), and in a
	// store that does not detect duplicates (RabbitMQ). The Handler
	// remembers the IDs itself, in memory and in ResendLog. Defaults to
	// DefaultResendWindow (24h); negative turns this off, and then only
	// the store detects resends, for as long as it keeps the task's ID.
	ResendWindow time.Duration

	// ResendLog is the file in which the Handler records the IDs it
	// stored, synced before each acknowledgement, so that the
	// ResendWindow holds across restarts and crashes. One Handler per
	// file. Defaults to none: the IDs are remembered in memory only, and
	// after a restart a resend is recognised only while the store still
	// holds the task.
	ResendLog string

	// ResendMaxIDs is the most IDs remembered (about 80 bytes of memory
	// and 24 bytes of ResendLog each); beyond it the oldest are forgotten
	// before their ResendWindow ends. Defaults to DefaultResendMaxIDs
	// (1,000,000: a day's window at 11 tasks a second).
	ResendMaxIDs int

	// Logger receives the Handler's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

func (c Config) validate() error {
	switch {
	case c.ReadLimit < 0:
		return &peonify.ConfigError{Field: "wsstream.Config.ReadLimit", Reason: "must not be negative (0 means the default, 1 MiB)"}
	case c.MaxInFlight < 0:
		return &peonify.ConfigError{Field: "wsstream.Config.MaxInFlight", Reason: "must not be negative (0 means the default, 256)"}
	case c.EnqueueTimeout < 0:
		return &peonify.ConfigError{Field: "wsstream.Config.EnqueueTimeout", Reason: "must not be negative (0 means the default, 10s)"}
	case c.WriteTimeout < 0:
		return &peonify.ConfigError{Field: "wsstream.Config.WriteTimeout", Reason: "must not be negative (0 means the default, 10s)"}
	}
	if err := c.resendConfig().Check(); err != nil {
		return err
	}
	for i, p := range c.OriginPatterns {
		if p == "" || p == "*" {
			return &peonify.ConfigError{Field: "wsstream.Config.OriginPatterns[" + strconv.Itoa(i) + "]",
				Reason: "must name hosts (e.g. *.example.com); an empty pattern or * would let any web page connect"}
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.ReadLimit == 0 {
		c.ReadLimit = DefaultReadLimit
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.EnqueueTimeout == 0 {
		c.EnqueueTimeout = DefaultEnqueueTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// resendConfig is the resend window that c configures.
func (c Config) resendConfig() resend.Config {
	return resend.Config{Intake: "wsstream", Resend: "resend", Window: c.ResendWindow, Path: c.ResendLog, MaxIDs: c.ResendMaxIDs}
}

// Handler is the WebSocket intake: an http.Handler that upgrades each
// request to a WebSocket, reads tasks from it, stores each one with the
// store's Enqueue, and only then acknowledges it to the client. Mount it
// on any path of a server; stop it with Shutdown.
type Handler struct {
	store   peonify.Enqueuer
	cfg     Config
	log     *slog.Logger
	accept  websocket.AcceptOptions
	resends *resend.Window // nil when Config.ResendWindow is negative

	mu        sync.Mutex
	closing   bool
	goingAway chan struct{} // closed when Shutdown starts
	conns     map[*serverConn]struct{}
	storing   map[string]chan struct{} // IDs being stored, by the connection that claimed them; closed when done
	wg        sync.WaitGroup           // one per connection being served
}

var _ http.Handler = (*Handler)(nil)

// New returns a Handler that stores the tasks it receives in store, which
// must be durable (sqlitestream, pgstream, or another stream whose Enqueue
// returns only once the tasks survive a crash): the client is told a task
// is accepted only after store.Enqueue returned. The Handler does not close
// store. New opens Config.ResendLog, if any; Shutdown closes it.
func New(store peonify.Enqueuer, cfg Config) (*Handler, error) {
	if store == nil {
		return nil, &peonify.ConfigError{Field: "wsstream.New", Reason: "store is nil: pass a durable stream such as sqlitestream"}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	resends, err := resend.OpenWindow(cfg.resendConfig(), cfg.Logger)
	if err != nil {
		return nil, err
	}
	return &Handler{
		store:   store,
		cfg:     cfg,
		resends: resends,
		log:     cfg.Logger,
		accept: websocket.AcceptOptions{
			Subprotocols:   []string{Subprotocol},
			OriginPatterns: cfg.OriginPatterns,
		},
		goingAway: make(chan struct{}),
		conns:     make(map[*serverConn]struct{}),
		storing:   make(map[string]chan struct{}),
	}, nil
}

// ServeHTTP checks the handshake (authentication, then origin), upgrades
// the connection and serves it until the client leaves or Shutdown.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.isClosing() {
		http.Error(w, "wsstream: server shutting down; connect again later", http.StatusServiceUnavailable)
		return
	}
	if h.cfg.Authenticate != nil {
		if err := h.cfg.Authenticate(r); err != nil {
			h.log.Debug("wsstream: handshake not authenticated", "remote", r.RemoteAddr, "err", err)
			http.Error(w, "wsstream: unauthorized: "+err.Error(), http.StatusUnauthorized)
			return
		}
	}
	hw := &hijackWriter{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, &h.accept) // answers 403 for a foreign origin
	if err != nil {
		h.log.Debug("wsstream: handshake refused", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "err", err)
		return
	}
	ws.SetReadLimit(h.cfg.ReadLimit)

	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	c := &serverConn{h: h, ws: ws, tcp: hw.conn, cancel: cancel, remote: r.RemoteAddr,
		in: make(chan inbound, h.cfg.MaxInFlight), done: make(chan struct{})}
	if !h.register(c) {
		_ = ws.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	defer h.unregister(c)
	c.serve(ctx)
}

func (h *Handler) isClosing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closing
}

func (h *Handler) register(c *serverConn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.conns[c] = struct{}{}
	h.wg.Add(1)
	return true
}

func (h *Handler) unregister(c *serverConn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
	h.wg.Done()
}

// Shutdown stops the intake gracefully: new handshakes are refused with
// 503, each connection stops taking messages, answers every message it
// already read (after its Enqueue returned), and is closed with status
// 1001 (going away), which tells clients to reconnect, to this server
// once it is back or to another. Messages that clients sent after that
// point are not acknowledged, so clients send them again.
//
// If ctx ends first, Shutdown cancels the enqueues in flight, closes the
// remaining connections at once and returns ctx's error; unanswered
// messages are then resent by their clients too. Shutdown does not close
// the store; it closes Config.ResendLog once every connection ended. Call
// it before the http.Server's Shutdown, which does not wait for WebSocket
// connections.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	if !h.closing {
		h.closing = true
		close(h.goingAway)
	}
	h.mu.Unlock()

	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return h.resends.Close()
	case <-ctx.Done():
	}
	h.mu.Lock()
	for c := range h.conns {
		c.cancel()
		_ = c.ws.CloseNow()
	}
	h.mu.Unlock()
	<-done
	return errors.Join(ctx.Err(), h.resends.Close())
}

// serverConn is one client connection.
type serverConn struct {
	h      *Handler
	ws     *websocket.Conn
	tcp    *endConn           // the connection ws runs on
	cancel context.CancelFunc // aborts the connection's reads, writes and enqueues
	remote string

	in   chan inbound  // messages read and not yet answered
	done chan struct{} // closed when the answering loop ends
}

// inbound is one message read: a task to store, or the reason it is
// refused.
type inbound struct {
	task *peonify.Task
	bad  *decodeError
}

// serve reads messages on this goroutine and answers them on another,
// so that a store commit can carry every message that arrived meanwhile.
func (c *serverConn) serve(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.answer(ctx) })
	if c.h.cfg.PingInterval > 0 {
		wg.Go(func() { c.ping(ctx) })
	}
	c.read(ctx)
	close(c.in)
	wg.Wait()
	_ = c.ws.CloseNow()
}

// read reads messages until the connection ends.
func (c *serverConn) read(ctx context.Context) {
	for {
		_, data, err := c.ws.Read(ctx)
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) {
				c.h.log.Warn("wsstream: message over Config.ReadLimit; closed the connection with 1009", "remote", c.remote, "limit", c.h.cfg.ReadLimit)
			} else if st := websocket.CloseStatus(err); st != websocket.StatusNormalClosure && st != websocket.StatusGoingAway && ctx.Err() == nil {
				c.h.log.Debug("wsstream: connection ended", "remote", c.remote, "err", err)
			}
			return
		}
		if c.tcp.ended.Load() {
			// The connection ended while the message was read, which
			// the WebSocket library takes for the message's end when it
			// comes between two fragments or right after a frame's
			// header: what was read may be cut short. Nothing is stored
			// and nothing answered; the client sends it again.
			c.h.log.Debug("wsstream: connection ended in the middle of a message; the message is dropped", "remote", c.remote, "bytes", len(data))
			return
		}
		t, bad := decode(data)
		select {
		case c.in <- inbound{task: t, bad: bad}:
		case <-c.done:
			return
		}
	}
}

// answer stores the messages that read hands over, in batches, and
// answers each one. At Shutdown it answers what was read, then closes the
// connection with 1001.
func (c *serverConn) answer(ctx context.Context) {
	defer close(c.done)
	defer c.cancelOnPanic()
	for {
		select {
		case in, ok := <-c.in:
			if !ok {
				return
			}
			c.process(ctx, intake.Batch(in, c.in, cap(c.in)))
		case <-c.h.goingAway:
			if c.drain(ctx) {
				_ = c.ws.Close(websocket.StatusGoingAway, "server shutting down; reconnect and resend unacknowledged tasks")
			}
			return
		}
	}
}

// drain answers the messages already read. It reports false if the
// connection ended meanwhile.
func (c *serverConn) drain(ctx context.Context) bool {
	for {
		select {
		case in, ok := <-c.in:
			if !ok {
				return false
			}
			c.process(ctx, intake.Batch(in, c.in, cap(c.in)))
		default:
			return true
		}
	}
}

// cancelOnPanic turns a panic in a store's Enqueue into a closed
// connection instead of a crashed server; the client resends.
func (c *serverConn) cancelOnPanic() {
	if v := recover(); v != nil {
		c.h.log.Error("wsstream: panic while storing tasks; closed the connection", "remote", c.remote, "panic", v)
		c.cancel()
	}
}

// process stores the tasks of a batch and answers every message of it in
// order.
func (c *serverConn) process(ctx context.Context, batch []inbound) {
	results := c.store(ctx, batch)
	for i, in := range batch {
		var r reply
		switch {
		case in.bad != nil:
			r = reply{Nack: &in.bad.ID, Error: in.bad.Reason}
		case results[i] == nil:
			r = reply{Ack: &in.task.ID}
		default:
			r = reply{Nack: &in.task.ID, Error: results[i].msg, Retryable: results[i].retryable}
		}
		if !c.write(ctx, r) {
			return // the connection is gone; the client resends what it has not seen answered
		}
	}
}

// failure is why a task was not stored.
type failure struct {
	msg       string
	retryable bool
}

// store enqueues the tasks of a batch and returns, by position, nil for
// each task that is stored (now or before) and the failure of the others.
// A task whose ID the Handler stored within Config.ResendWindow is
// answered as stored without asking the store, which may have forgotten
// it. A task that another connection is storing at the moment (the first
// send of a task whose client reconnected and sent it again before the
// first connection's Enqueue returned) waits for that Enqueue, so that the
// resend is recognised and not stored twice.
func (c *serverConn) store(ctx context.Context, batch []inbound) []*failure {
	results := make([]*failure, len(batch))
	var todo []*peonify.Task
	seen := make(map[string]bool)
	for _, in := range batch {
		if in.task == nil || seen[in.task.ID] { // a repeat within the batch is answered with the first
			continue
		}
		seen[in.task.ID] = true
		todo = append(todo, in.task)
	}
	failed := make(map[string]*failure)
	for len(todo) > 0 {
		mine, busy, wait, resent := c.h.claim(todo)
		for _, t := range resent {
			c.h.log.Debug("wsstream: task resent within Config.ResendWindow; acknowledged without storing it again", "remote", c.remote, "id", t.ID)
		}
		func() {
			defer c.h.release(mine) // also if the store panics
			c.storeClaimed(ctx, mine, failed)
		}()
		if len(busy) == 0 {
			break
		}
		for _, ch := range wait {
			select {
			case <-ch:
			case <-ctx.Done():
				for _, t := range busy {
					failed[t.ID] = &failure{msg: "task not stored: the server is shutting down; send it again later", retryable: true}
				}
				busy = nil
			}
			if busy == nil {
				break
			}
		}
		// The other connection's Enqueue returned: its tasks are now
		// recognised as resends, or are tried again here if it failed.
		todo = busy
	}
	for i, in := range batch {
		if in.task != nil {
			results[i] = failed[in.task.ID]
		}
	}
	return results
}

// storeClaimed enqueues tasks, which no other connection is storing, and
// sets the failure of each that was not stored in failed.
func (c *serverConn) storeClaimed(ctx context.Context, tasks []*peonify.Task, failed map[string]*failure) {
	if len(tasks) == 0 {
		return
	}
	if err := c.enqueue(ctx, tasks...); err != nil {
		if len(tasks) == 1 {
			failed[tasks[0].ID] = c.failure(err)
		} else {
			// One refused task must not fail the others: store one by one
			// to tell which. Those that were stored report duplicates.
			for _, t := range tasks {
				if err := c.enqueue(ctx, t); err != nil {
					failed[t.ID] = c.failure(err)
				}
			}
		}
	}
	c.record(tasks, failed)
}

// claim sorts tasks: those stored within Config.ResendWindow go to
// resent; those that another connection is storing now are returned as
// busy, with what to wait for until its Enqueue returned; the others are
// marked as being stored by the caller, who must release them, and
// returned as mine. Since release runs after the IDs are recorded, a task
// is either seen as stored or as being stored, never stored twice.
func (h *Handler) claim(tasks []*peonify.Task) (mine, busy []*peonify.Task, wait []chan struct{}, resent []*peonify.Task) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range tasks {
		if h.resends.Seen(t.ID) {
			resent = append(resent, t)
			continue
		}
		if ch, ok := h.storing[t.ID]; ok {
			busy = append(busy, t)
			wait = append(wait, ch)
			continue
		}
		h.storing[t.ID] = make(chan struct{})
		mine = append(mine, t)
	}
	return mine, busy, wait, resent
}

// release ends the claims of claim, once the tasks are stored and
// recorded, or failed.
func (h *Handler) release(tasks []*peonify.Task) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range tasks {
		close(h.storing[t.ID])
		delete(h.storing, t.ID)
	}
}

// record remembers the IDs of the tasks that were stored, before they are
// acknowledged (see resend.Window.Record).
func (c *serverConn) record(tasks []*peonify.Task, failed map[string]*failure) {
	if c.h.resends == nil {
		return
	}
	ids := make([]string, 0, len(tasks))
	for _, t := range tasks {
		if failed[t.ID] == nil {
			ids = append(ids, t.ID)
		}
	}
	c.h.resends.Record(ids...)
}

// enqueue stores tasks; a task that is already stored counts as stored.
// Shutdown's deadline cancels it, through ctx.
func (c *serverConn) enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	_, err := intake.Enqueue(ctx, c.h.store, c.h.cfg.EnqueueTimeout, tasks...)
	return err
}

// failure describes a store error to the client. Invalid tasks are
// reported as they are; other errors, which may name the server's
// internals, are logged and reported as retryable.
func (c *serverConn) failure(err error) *failure {
	var ie *peonify.InvalidTaskError
	if errors.As(err, &ie) {
		return &failure{msg: ie.Error()}
	}
	c.h.log.Error("wsstream: store refused tasks; answered with retryable nacks", "remote", c.remote, "err", err)
	return &failure{msg: "task not stored: the store is unavailable; send it again later", retryable: true}
}

// write sends one answer. It reports false when the connection is gone.
func (c *serverConn) write(ctx context.Context, r reply) bool {
	data, err := json.Marshal(r)
	if err != nil { // cannot happen: strings and a bool
		c.h.log.Error("wsstream: encoding an answer", "err", err)
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, c.h.cfg.WriteTimeout)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, data) == nil
}

// ping checks every PingInterval that the client is alive.
func (c *serverConn) ping(ctx context.Context) {
	t := time.NewTicker(c.h.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, c.h.cfg.PingInterval)
			err := c.ws.Ping(pctx)
			cancel()
			if err != nil {
				c.h.log.Debug("wsstream: client did not answer a ping; closing", "remote", c.remote, "err", err)
				_ = c.ws.CloseNow()
				return
			}
		}
	}
}

// hijackWriter hands the WebSocket library, when it takes over the HTTP
// connection, an endConn around it.
type hijackWriter struct {
	http.ResponseWriter
	conn *endConn // set by Hijack
}

// Hijack takes over the connection from net/http.
func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &endConn{Conn: conn}
	return w.conn, brw, nil
}

// endConn is a connection that notes when a read of it failed or met
// its end. The WebSocket library reads exactly what a message needs, so a
// read that ends the connection while a message is read means the
// message did not arrive whole, even when the library returns it as if
// it had (it does so for a connection that closes between two fragments
// of a message, or after a frame's header and before its payload).
type endConn struct {
	net.Conn
	ended atomic.Bool
}

// Read reads from the connection, and notes its end or failure.
func (c *endConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.ended.Store(true)
	}
	return n, err
}
