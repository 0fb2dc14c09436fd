package pgstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/backoff"
	"github.com/peonify/peonify/internal/streamkit"
)

// ListenerConfig configures a Listener. The zero value is valid.
type ListenerConfig struct {
	// Schema is the schema whose tasks the listener hears about; streams
	// that share the listener must use the same Config.Schema. Defaults to
	// "public".
	Schema string

	// HealthCheck bounds how long the listener trusts a quiet connection:
	// after that long without a notification it pings the server, and a
	// connection whose ping, connect or LISTEN does not answer within it
	// is dropped and replaced. So a connection that died without a reset
	// (a middlebox that dropped its state) is noticed within twice
	// HealthCheck, not when the operating system gives up on it minutes
	// later; and sooner when a call of a stream that uses the listener
	// times out: the listener then pings at once, and drops a connection
	// that does not answer within a second (or HealthCheck, if shorter).
	// Defaults to 10 seconds.
	HealthCheck time.Duration

	// Logger receives reconnect warnings. Defaults to slog.Default().
	Logger *slog.Logger
}

// Listener holds one connection in LISTEN and wakes the streams that
// subscribe to it when tasks become ready in their queues. Every polling
// stream needs one: by default each makes its own, so a process that polls
// many queues of one database can save connections by giving them one
// shared Listener in Config.Listener.
//
// The connection is taken out of the pool when the first stream starts
// polling, and replaced after a jittered, growing delay when it is lost.
// Close releases it; close a shared Listener after its streams.
type Listener struct {
	pool    *pgxpool.Pool
	schema  string
	channel string // the payload of each notification is a queue name
	free    string // flow control: limits' permits freed, as a freeNote
	fin     string // tasks finished, for Wait; the payload is a queue name
	logger  *slog.Logger
	health  time.Duration // ListenerConfig.HealthCheck

	connects atomic.Int64 // sessions that got as far as listening, for tests

	mu      sync.Mutex
	subs    map[string]map[chan<- struct{}]func(keys []string) // queue -> wake channels and their hint function
	finSubs map[string]map[chan<- struct{}]struct{}            // queue -> Wait's wake channels
	running bool                                               // from the first subscription until Close
	closed  bool
	bg      streamkit.Group // the listening goroutine

	checkMu   sync.Mutex         // guards interrupt and checkNow; held for no call but interrupt
	interrupt context.CancelFunc // ends the current wait for a notification; nil between waits
	checkNow  bool               // a stream's call timed out: ping the connection now (see check)
}

// NewListener returns a Listener on the database behind pool. It starts
// nothing until a stream subscribes.
func NewListener(pool *pgxpool.Pool, cfg ListenerConfig) (*Listener, error) {
	if pool == nil {
		return nil, errors.New("pgstream: NewListener needs a *pgxpool.Pool, got nil")
	}
	if cfg.Schema == "" {
		cfg.Schema = "public"
	}
	if err := validSchema(cfg.Schema); err != nil {
		return nil, err
	}
	if cfg.HealthCheck < 0 {
		return nil, &peonify.ConfigError{Field: "pgstream.ListenerConfig.HealthCheck", Reason: "must not be negative (0 means the default, 10s)"}
	}
	if cfg.HealthCheck == 0 {
		cfg.HealthCheck = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Listener{
		health:  cfg.HealthCheck,
		pool:    pool,
		schema:  cfg.Schema,
		channel: channelName(cfg.Schema),
		free:    freeChannelName(cfg.Schema),
		fin:     finishedChannelName(cfg.Schema),
		logger:  cfg.Logger,
		subs:    make(map[string]map[chan<- struct{}]func([]string)),
		finSubs: make(map[string]map[chan<- struct{}]struct{}),
	}, nil
}

// channelName is the NOTIFY channel of a schema's tasks, as the trigger
// names it.
func channelName(schema string) string { return schema + ".peonify_tasks" }

// freeChannelName is the NOTIFY channel on which processors with limits
// say which keys' permits their acks and nacks gave back; the payload is a
// freeNote in JSON.
func freeChannelName(schema string) string { return schema + ".peonify_free" }

// freeNote is the payload of a notification on the free channel: the
// queue, and the keys whose permits were given back (none, or null when
// they did not fit, meaning any).
type freeNote struct {
	Queue string   `json:"q"`
	Keys  []string `json:"k"`
}

// Close stops listening and closes the listener's connection. Streams that
// still use the listener are no longer woken (they still poll). Close is
// idempotent.
func (l *Listener) Close(ctx context.Context) error {
	l.mu.Lock()
	l.closed = true
	running := l.running
	l.running = false
	l.mu.Unlock()
	if !running {
		return nil
	}
	if err := l.bg.Stop(ctx); err != nil {
		return errors.Join(errors.New("pgstream: Listener.Close gave up waiting for the listener to stop"), err)
	}
	return nil
}

// subscribe makes ch receive (without blocking) at once, when queue gets
// ready tasks, and after every (re)connect, since notifications may have
// been missed. Before each wake-up it calls hint, if not nil, with the
// keys whose permits a processor gave back, or with nil when tasks may be
// ready anywhere in the queue. It starts listening on first use. The
// returned function ends the subscription.
func (l *Listener) subscribe(queue string, ch chan<- struct{}, hint func(keys []string)) (unsubscribe func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return func() {}
	}
	if l.subs[queue] == nil {
		l.subs[queue] = make(map[chan<- struct{}]func([]string))
	}
	l.subs[queue][ch] = hint
	// A first poll finds what arrived before the subscription.
	select {
	case ch <- struct{}{}:
	default:
	}
	if !l.running {
		l.running = true
		l.bg.Go(l.run)
	}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.subs[queue], ch)
		if len(l.subs[queue]) == 0 {
			delete(l.subs, queue)
		}
	}
}

// subscribeFinished makes ch receive (without blocking) when tasks of
// queue finish (see Stream.Wait), and after every (re)connect. It starts
// nothing: the stream subscribes with subscribe too. The returned
// function ends the subscription.
func (l *Listener) subscribeFinished(queue string, ch chan<- struct{}) (unsubscribe func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return func() {}
	}
	if l.finSubs[queue] == nil {
		l.finSubs[queue] = make(map[chan<- struct{}]struct{})
	}
	l.finSubs[queue][ch] = struct{}{}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.finSubs[queue], ch)
		if len(l.finSubs[queue]) == 0 {
			delete(l.finSubs, queue)
		}
	}
}

// quickCheck bounds the ping that a stream's timed-out call asks for (see
// check): a connection that answers no ping within it is replaced.
const quickCheck = time.Second

// check asks the listener to ping its connection now rather than after
// the rest of its HealthCheck period: a stream's call has just timed out,
// so the connection may have died without a reset, and until the listener
// has replaced it, no notification wakes the streams, and their polls wait
// out their error backoff. A ping that does not answer within quickCheck
// (or HealthCheck, if shorter) drops the connection.
func (l *Listener) check() {
	l.checkMu.Lock()
	defer l.checkMu.Unlock()
	l.checkNow = true
	if l.interrupt != nil {
		l.interrupt()
	}
}

// startWait records cancel as the way to end the wait for a notification
// that begins, and reports false, clearing the request, if a check is
// asked for already: the caller pings instead of waiting.
func (l *Listener) startWait(cancel context.CancelFunc) bool {
	l.checkMu.Lock()
	defer l.checkMu.Unlock()
	if l.checkNow {
		l.checkNow = false
		return false
	}
	l.interrupt = cancel
	return true
}

// endWait ends a wait that startWait began, and reports whether check
// asked for a ping meanwhile.
func (l *Listener) endWait() bool {
	l.checkMu.Lock()
	defer l.checkMu.Unlock()
	l.interrupt = nil
	asked := l.checkNow
	l.checkNow = false
	return asked
}

// notifyFinished wakes the waiters of queue, or all of them with all.
func (l *Listener) notifyFinished(queue string, all bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for q, chans := range l.finSubs {
		if !all && q != queue {
			continue
		}
		for ch := range chans {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// notify wakes the subscribers of queue, or all of them when all is set,
// passing keys to their hint functions (see subscribe).
func (l *Listener) notify(queue string, all bool, keys []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for q, chans := range l.subs {
		if !all && q != queue {
			continue
		}
		for ch, hint := range chans {
			if hint != nil {
				hint(keys)
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// run listens until ctx ends, reconnecting after failures.
func (l *Listener) run(ctx context.Context) {
	b := backoff.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	for ctx.Err() == nil {
		connected, err := l.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			b.Reset()
		}
		delay := b.Next()
		l.logger.Warn("pgstream: LISTEN connection lost; reconnecting",
			"channel", l.channel, "err", err, "retry_in", delay)
		if !backoff.Sleep(ctx, delay) {
			return
		}
	}
}

// listenOnce runs one LISTEN session. It reports whether it got as far as
// listening, and why it ended. Every step is bounded by the health check
// period: connecting and LISTEN, each ping, and each wait for a
// notification, after which a ping checks that the connection still
// carries bytes.
func (l *Listener) listenOnce(ctx context.Context) (bool, error) {
	step, cancel := context.WithTimeout(ctx, l.health)
	defer cancel()
	pc, err := l.pool.Acquire(step)
	if err != nil {
		return false, err
	}
	// The connection never goes back to the pool: it may still be
	// listening, or be broken. The pool opens another when it needs one.
	conn := pc.Hijack()
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	for _, ch := range []string{l.channel, l.free, l.fin} {
		if _, err := conn.Exec(step, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return false, err
		}
	}
	cancel()
	l.notify("", true, nil)
	l.notifyFinished("", true)
	l.connects.Add(1)
	for {
		wait, cancel := context.WithTimeout(ctx, l.health)
		var (
			n      *pgconn.Notification
			err    error
			asked  = true // a stream asked for a check: ping now (a notification, which shows the connection works, cancels it)
			within = min(l.health, quickCheck)
		)
		if l.startWait(cancel) {
			n, err = conn.WaitForNotification(wait)
			asked = l.endWait()
		}
		cancel()
		switch {
		case n != nil && n.Channel == l.free:
			var note freeNote
			if json.Unmarshal([]byte(n.Payload), &note) == nil {
				l.notify(note.Queue, false, note.Keys)
			}
			continue
		case n != nil && n.Channel == l.fin:
			l.notifyFinished(n.Payload, false)
			continue
		case n != nil:
			l.notify(n.Payload, false, nil)
			continue
		case ctx.Err() != nil:
			return true, ctx.Err()
		case err != nil && !asked && !pgconn.Timeout(err):
			return true, err
		case !asked:
			within = l.health
		}
		// Quiet for a whole period, or a stream's call timed out: make
		// sure the server still answers. A timeout, or the end of the wait
		// that check asked for, leaves the connection usable, so
		// notifications that arrive meanwhile are read by the next wait.
		ping, cancel := context.WithTimeout(ctx, within)
		err = conn.Ping(ping)
		cancel()
		if err != nil {
			return true, fmt.Errorf("pgstream: the LISTEN connection did not answer a ping within %s: %w", within, err)
		}
	}
}
