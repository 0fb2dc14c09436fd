package wsstream

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/peonify/peonify/internal/backoff"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/peonify/peonify"
)

// ErrClientClosed is returned by Send on a Client that was closed, and by
// the Sends that were waiting when it was.
var ErrClientClosed = errors.New("wsstream: client closed")

// NackError is returned by Send when the server refused a task for good:
// the message was invalid, or the store refused the task itself. Sending
// the same task again would be refused again.
type NackError struct {
	ID     string // the task's ID
	Reason string // the server's explanation
}

// Error returns the server's reason with the task's ID.
func (e *NackError) Error() string {
	return fmt.Sprintf("wsstream: server refused task %s: %s", e.ID, e.Reason)
}

// DialOptions configures a Client. The zero value is valid.
type DialOptions struct {
	// HTTPHeader is sent with every handshake, for example an
	// Authorization header that the server's Config.Authenticate checks.
	HTTPHeader http.Header

	// HTTPClient makes the handshakes. Its Timeout must be zero. Defaults
	// to http.DefaultClient.
	HTTPClient *http.Client

	// MinBackoff is the first wait before reconnecting, and before
	// resending a task that the server could not store for now. Waits
	// double up to MaxBackoff, with jitter so that clients cut off together
	// do not come back together. Defaults to 100ms.
	MinBackoff time.Duration

	// MaxBackoff is the longest wait between reconnections or resends.
	// Defaults to 10s.
	MaxBackoff time.Duration

	// DialTimeout bounds one handshake. Defaults to 10s.
	DialTimeout time.Duration

	// WriteTimeout bounds writing one message; a connection that cannot
	// take it for that long is dropped and made again. Defaults to 10s.
	WriteTimeout time.Duration

	// MaxMessageSize is the largest message Send writes; larger tasks are
	// refused by Send, since the server would drop the connection (1009).
	// Set it to the server's Config.ReadLimit. Defaults to 1 MiB.
	MaxMessageSize int64

	// Logger receives the client's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

func (o DialOptions) withDefaults() DialOptions {
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = DefaultReadLimit
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Client sends tasks to a Handler and keeps its connection: when the
// connection drops, it reconnects with jittered exponential backoff and
// resends every task that was not yet acknowledged. It is safe for
// concurrent use.
type Client struct {
	url    string
	opts   DialOptions
	log    *slog.Logger
	cancel context.CancelFunc // stops the connection loop
	done   chan struct{}      // closed when the connection loop ends
	kick   chan struct{}      // a resend was scheduled

	mu      sync.Mutex
	ws      *websocket.Conn // nil while disconnected
	pending map[string]*pending
	seq     uint64
	lastErr error // why the last connection or attempt failed
	closed  bool
}

// pending is a task sent and not yet answered.
type pending struct {
	seq     uint64 // sending order, kept on resends
	frame   []byte
	waiters []chan error
	retryAt time.Time // when a retryable nack asked to resend; zero otherwise
	nacks   int       // retryable nacks so far
}

// Dial connects to the Handler at url (ws:// or wss://) and returns a
// Client. The first handshake must succeed, so that a wrong address or
// credentials show at once; later connections are retried until Close.
func Dial(ctx context.Context, url string, opts DialOptions) (*Client, error) {
	opts = opts.withDefaults()
	c := &Client{
		url:     url,
		opts:    opts,
		log:     opts.Logger,
		done:    make(chan struct{}),
		kick:    make(chan struct{}, 1),
		pending: make(map[string]*pending),
	}
	ws, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	go c.run(runCtx, ws)
	return c, nil
}

// dial makes one connection.
func (c *Client) dial(ctx context.Context) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, c.url, &websocket.DialOptions{
		HTTPClient:   c.opts.HTTPClient,
		HTTPHeader:   c.opts.HTTPHeader,
		Subprotocols: []string{Subprotocol},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return nil, &HandshakeError{StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(body))}
		}
		return nil, fmt.Errorf("wsstream: connecting to %s: %w", c.url, err)
	}
	ws.SetReadLimit(1 << 20)
	return ws, nil
}

// HandshakeError reports a server that refused the WebSocket handshake.
type HandshakeError struct {
	StatusCode int    // e.g. 401 (Config.Authenticate refused), 403 (origin not allowed)
	Body       string // the start of the server's explanation
}

// Error says what the status means and how to fix it.
func (e *HandshakeError) Error() string {
	hint := ""
	switch e.StatusCode {
	case http.StatusUnauthorized:
		hint = ": check the credentials in DialOptions.HTTPHeader"
	case http.StatusForbidden:
		hint = ": the server does not allow this Origin; add it to its Config.OriginPatterns"
	case http.StatusServiceUnavailable:
		hint = ": the server is shutting down"
	}
	msg := fmt.Sprintf("wsstream: server refused the handshake with %d %s%s", e.StatusCode, http.StatusText(e.StatusCode), hint)
	if e.Body != "" {
		msg += " (" + e.Body + ")"
	}
	return msg
}

// run keeps a connection until Close: it serves one connection at a time
// and reconnects with backoff when it ends.
func (c *Client) run(ctx context.Context, ws *websocket.Conn) {
	defer close(c.done)
	for failures := 0; ; {
		if ws != nil {
			failures = 0
			c.serve(ctx, ws)
			ws = nil
		}
		if ctx.Err() != nil {
			return
		}
		if !backoff.Sleep(ctx, backoff.Duration(failures, c.opts.MinBackoff, c.opts.MaxBackoff)) {
			return
		}
		var err error
		if ws, err = c.dial(ctx); err != nil {
			failures++
			c.setErr(err)
			c.log.Warn("wsstream: reconnecting failed; will retry", "url", c.url, "err", err)
		}
	}
}

// serve uses one connection until it ends or ctx ends: it resends what is
// pending, answers acks and nacks, and resends after retryable nacks.
func (c *Client) serve(ctx context.Context, ws *websocket.Conn) {
	readDone := make(chan error, 1)
	go func() { readDone <- c.read(ws) }()

	c.mu.Lock()
	c.ws = ws
	var frames []*pending
	for _, p := range c.pending {
		if p.retryAt.IsZero() {
			frames = append(frames, p)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(frames, func(a, b *pending) int { return cmp.Compare(a.seq, b.seq) })
	for _, p := range frames {
		if !c.write(ws, p.frame) {
			break
		}
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		c.armRetry(timer)
		select {
		case err := <-readDone:
			c.disconnected(ws, err)
			return
		case <-ctx.Done():
			_ = ws.Close(websocket.StatusNormalClosure, "client closed")
			c.disconnected(ws, <-readDone)
			return
		case <-c.kick:
		case <-timer.C:
			c.resendDue(ws)
		}
	}
}

// disconnected records the end of a connection.
func (c *Client) disconnected(ws *websocket.Conn, err error) {
	_ = ws.CloseNow()
	c.mu.Lock()
	c.ws = nil
	if err != nil && !c.closed {
		c.lastErr = err
	}
	n := len(c.pending)
	c.mu.Unlock()
	if !c.isClosed() {
		c.log.Info("wsstream: connection lost; reconnecting", "url", c.url, "unacknowledged", n, "err", err)
	}
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// armRetry sets timer to the earliest scheduled resend.
func (c *Client) armRetry(timer *time.Timer) {
	c.mu.Lock()
	var next time.Time
	for _, p := range c.pending {
		if !p.retryAt.IsZero() && (next.IsZero() || p.retryAt.Before(next)) {
			next = p.retryAt
		}
	}
	c.mu.Unlock()
	if next.IsZero() {
		timer.Reset(time.Hour)
	} else {
		timer.Reset(max(time.Until(next), 0))
	}
}

// resendDue resends the tasks whose retry time has come.
func (c *Client) resendDue(ws *websocket.Conn) {
	now := time.Now()
	c.mu.Lock()
	var frames []*pending
	for _, p := range c.pending {
		if !p.retryAt.IsZero() && !p.retryAt.After(now) {
			p.retryAt = time.Time{}
			frames = append(frames, p)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(frames, func(a, b *pending) int { return cmp.Compare(a.seq, b.seq) })
	for _, p := range frames {
		if !c.write(ws, p.frame) {
			return // resent after the reconnection
		}
	}
}

// read handles the server's answers until the connection is closed.
func (c *Client) read(ws *websocket.Conn) error {
	for {
		_, data, err := ws.Read(context.Background())
		if err != nil {
			return err
		}
		var r reply
		if err := json.Unmarshal(data, &r); err != nil {
			c.log.Warn("wsstream: server sent an answer that is not JSON; ignored", "err", err)
			continue
		}
		switch {
		case r.Ack != nil:
			c.resolve(*r.Ack, nil)
		case r.Nack != nil && r.Retryable:
			c.retryLater(*r.Nack, r.Error)
		case r.Nack != nil:
			if *r.Nack == "" {
				c.log.Error("wsstream: server refused a message it could not read", "reason", r.Error)
				continue
			}
			c.resolve(*r.Nack, &NackError{ID: *r.Nack, Reason: r.Error})
		}
	}
}

// resolve ends the Sends waiting for id.
func (c *Client) resolve(id string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending[id]
	if p == nil {
		return // answered before, or its Sends gave up
	}
	delete(c.pending, id)
	for _, w := range p.waiters {
		w <- err // buffered, and each waiter is answered once
	}
}

// retryLater schedules a resend of id after a retryable nack.
func (c *Client) retryLater(id, reason string) {
	c.mu.Lock()
	p := c.pending[id]
	if p != nil {
		p.retryAt = time.Now().Add(backoff.Duration(p.nacks, c.opts.MinBackoff, c.opts.MaxBackoff))
		p.nacks++
		c.lastErr = fmt.Errorf("server could not store task %s: %s", id, reason)
	}
	c.mu.Unlock()
	if p != nil {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// write sends one message. It reports false when the connection is
// broken; the message is then sent again on the next connection.
func (c *Client) write(ws *websocket.Conn, frame []byte) bool {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.WriteTimeout)
	defer cancel()
	return ws.Write(ctx, websocket.MessageText, frame) == nil
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// Send sends t and returns nil once the server has acknowledged it, that
// is once the task is in the server's durable store. A task with an empty
// ID gets a new one (peonify.NewID), written into t.
//
// Until then Send keeps the task: across reconnections, and after
// retryable nacks (the server's store was unavailable), it sends it again
// with backoff. It returns a *NackError if the server refused the task for
// good, ErrClientClosed if the client is closed, or ctx's error wrapping
// the last connection problem if ctx ends first. After an error other than
// a *NackError the task may or may not be stored: sending it again, with
// the same ID, is safe, since the server acknowledges a task it already
// holds without storing it twice.
func (c *Client) Send(ctx context.Context, t *peonify.Task) error {
	if t == nil {
		return &peonify.InvalidTaskError{Reason: "task is nil"}
	}
	if t.ID == "" {
		t.ID = peonify.NewID()
	}
	if err := t.Validate(); err != nil {
		return err
	}
	frame, err := encode(t)
	if err != nil {
		return err
	}
	if int64(len(frame)) > c.opts.MaxMessageSize {
		return &peonify.InvalidTaskError{ID: t.ID, Reason: fmt.Sprintf(
			"encoded task is %d bytes, over DialOptions.MaxMessageSize (%d): the server would refuse it", len(frame), c.opts.MaxMessageSize)}
	}

	ch := make(chan error, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClientClosed
	}
	p, sent := c.pending[t.ID]
	if !sent { // a Send of the same ID in flight answers this one too
		c.seq++
		p = &pending{seq: c.seq, frame: frame}
		c.pending[t.ID] = p
	}
	p.waiters = append(p.waiters, ch)
	ws := c.ws
	c.mu.Unlock()
	if !sent && ws != nil {
		c.write(ws, frame) // on failure the reconnection resends it
	}

	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case err := <-ch: // answered meanwhile
		return err
	default:
	}
	// Not answered, so p is still pending (answers are sent under c.mu).
	if p.waiters = slices.DeleteFunc(p.waiters, func(w chan error) bool { return w == ch }); len(p.waiters) == 0 {
		delete(c.pending, t.ID)
	}
	if c.lastErr != nil {
		return fmt.Errorf("wsstream: task %s not acknowledged (last problem: %v): %w", t.ID, c.lastErr, ctx.Err())
	}
	return fmt.Errorf("wsstream: task %s not acknowledged: %w", t.ID, ctx.Err())
}

// Pending returns how many tasks were sent and not yet acknowledged.
func (c *Client) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Close closes the connection (with status 1000) and stops reconnecting.
// Sends still waiting return ErrClientClosed; their tasks may or may not
// have been stored. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	c.closed = true
	for _, p := range c.pending {
		for _, w := range p.waiters {
			w <- ErrClientClosed
		}
	}
	clear(c.pending)
	c.mu.Unlock()
	c.cancel()
	<-c.done
	return nil
}
