package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/goccy/go-yaml/ast"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/streams/pgstream"
)

// streamSpec is one entry of the streams list, decoded for its kind. It
// is a storeSpec (a store the processor polls) or an intakeSpec (a push
// source that writes into one of the stores).
type streamSpec interface {
	common() *streamCommon
	// check validates the kind's fields and fills defaults.
	check() error
}

// storeSpec is a stream the processor polls.
type storeSpec interface {
	streamSpec
	// open returns the stream, using (and adding to) the shared clients
	// in r.
	open(ctx context.Context, r *resources) (peonify.Stream, error)
	// forgetsDone reports whether the store forgets the ID of a task as
	// soon as the task is done, so that the same ID enqueued again is
	// stored again.
	forgetsDone() bool
	// payloadLimit is the largest task payload, in bytes, that the store
	// takes, and what sets that limit. r holds the store's client once
	// it is open.
	payloadLimit(r *resources) (int64, string)
}

// streamCommon are the fields every stream entry has.
type streamCommon struct {
	Name   string `yaml:"name"`   // defaults to the kind, or postgres/<queue>
	Kind   string `yaml:"kind"`   // required: the name of one of kinds()
	Weight int    `yaml:"weight"` // share of capacity; defaults to 1

	path string // "streams[1]", for errors
}

// decodeStream decodes one entry of the streams list by its kind.
func decodeStream(n ast.Node, path string) (streamSpec, error) {
	var head struct {
		Kind string `yaml:"kind"`
		Name string `yaml:"name"`
	}
	if _, ok := n.(*ast.MappingNode); !ok {
		if _, ok := n.(*ast.MappingValueNode); !ok {
			return nil, &yamlfile.FieldError{Path: path, Pos: n.GetToken().Position, Msg: "want a mapping with kind: and the kind's fields"}
		}
	}
	if err := yamlfile.DecodeLoose(n, &head); err != nil {
		return nil, err
	}
	kind, ok := kindNamed(head.Kind)
	if !ok {
		if head.Kind == "" {
			return nil, yamlfile.Errorf(path+".kind", "required: one of %s", yamlfile.QuoteList(kindNames()))
		}
		return nil, yamlfile.Errorf(path+".kind", "unknown stream kind %q: use one of %s", head.Kind, yamlfile.QuoteList(kindNames()))
	}
	s := kind.new()
	if err := yamlfile.DecodeStrict(n, s); err != nil {
		return nil, err
	}
	c := s.common()
	c.path = path
	c.Name, c.Kind = head.Name, head.Kind // intakes keep them outside their fields
	if c.Weight < 0 {
		return nil, yamlfile.Errorf(path+".weight", "must be at least 1 (0 means the default, 1)")
	}
	if c.Weight == 0 {
		c.Weight = 1
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	if c.Name == "" {
		c.Name = c.Kind
	}
	return s, nil
}

// resources holds the clients that streams share, and closes them.
type resources struct {
	log *slog.Logger
	// processing is set when a processor will poll the streams; one-shot
	// commands (enqueue, tasks) start no listener and no watch.
	processing bool

	pools        map[string]*pgxpool.Pool
	listeners    map[string]*pgstream.Listener // by URL and schema
	redisClients map[string]*redis.Client
	// redisClusters are the Redis Cluster clients, by their seeds and
	// options (see redis_cluster.go); created on first use.
	redisClusters map[string]*redis.ClusterClient
	natsConns     map[string]*nats.Conn // by URL and credentials
}

func newResources(log *slog.Logger, processing bool) *resources {
	return &resources{log: log, processing: processing,
		pools: make(map[string]*pgxpool.Pool), listeners: make(map[string]*pgstream.Listener),
		redisClients: make(map[string]*redis.Client), natsConns: make(map[string]*nats.Conn)}
}

// pool returns the pool of a Postgres URL, connecting on first use.
func (r *resources) pool(ctx context.Context, rawURL string, maxConns int32) (*pgxpool.Pool, error) {
	if p, ok := r.pools[rawURL]; ok {
		return p, nil
	}
	pc, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("not a Postgres URL: %s", redactErr(err, rawURL))
	}
	if maxConns > 0 {
		pc.MaxConns = maxConns
	}
	// pgxpool goes on opening a connection after the call that asked for
	// it gave up; without a bound such dials hang on a dead network and
	// hold the pool's slots for good.
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	// An idle connection that went silent (the LISTEN connection, the
	// pool's idle ones) is found by TCP keepalives: see tcpKeepAlive.
	pc.ConnConfig.DialFunc = keepAliveDialer(0).DialContext
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres at %s: %s", redactURL(rawURL), redactErr(pgConnectError(err), rawURL))
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgres at %s: %s", redactURL(rawURL), redactErr(pgConnectError(err), rawURL))
	}
	r.pools[rawURL] = pool
	return pool, nil
}

// tcpKeepAlive is the TCP keepalive policy of the daemon's Postgres and
// NATS connections, the one go-redis uses by default: probe after 30s
// idle, 5s apart, and give a connection up after 3 unanswered probes, so
// that an idle connection that went silent without a reset or a FIN (a
// link gone dark, a NAT or a firewall that forgot it) fails within about
// 45s, and is replaced. pgx and nats.go leave Go's default, 15s idle
// then 9 probes 15s apart: 150s. (A connection waiting for an answer is
// bounded by the processor's store_timeout instead; keepalives apply
// only while nothing is in flight.)
var tcpKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3}

// keepAliveDialer returns a dialer with tcpKeepAlive and the timeout.
func keepAliveDialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAliveConfig: tcpKeepAlive}
}

// listener returns the LISTEN connection shared by the streams of one
// database and schema.
func (r *resources) listener(pool *pgxpool.Pool, rawURL, schema string) (*pgstream.Listener, error) {
	key := rawURL + "\x00" + schema
	if l, ok := r.listeners[key]; ok {
		return l, nil
	}
	l, err := pgstream.NewListener(pool, pgstream.ListenerConfig{Schema: schema, Logger: r.log})
	if err != nil {
		return nil, err
	}
	r.listeners[key] = l
	return l, nil
}

// clientsCloseTimeout bounds the closing of the store clients after the
// drain. A client whose connections stopped answering can take far longer
// (pgxpool waits up to 15s for each half-open connection): it is left to
// the process's exit, which closes its sockets.
const clientsCloseTimeout = 2 * time.Second

// close closes the listeners, the pools and the broker clients side by
// side, for clientsCloseTimeout at most. Call it after the streams are
// closed.
func (r *resources) close() {
	ctx, cancel := context.WithTimeout(context.Background(), clientsCloseTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range r.listeners {
		wg.Go(func() {
			if err := l.Close(ctx); err != nil {
				r.log.Error("peonify: closing a postgres listener", "err", err)
			}
		})
	}
	for _, p := range r.pools {
		wg.Go(p.Close)
	}
	for _, c := range r.redisClients {
		wg.Go(func() { _ = c.Close() })
	}
	for _, c := range r.redisClusters {
		wg.Go(func() { _ = c.Close() })
	}
	for _, nc := range r.natsConns {
		wg.Go(nc.Close)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		r.log.Warn("peonify: store clients did not close in time; their connections end with the process",
			"timeout", clientsCloseTimeout)
	}
}

// redactURL shows where a URL points without its password.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(the given address)"
	}
	u.RawQuery = ""
	return u.Redacted()
}

// redactErr returns err's message with the URL's password masked, since
// drivers sometimes echo the connection string.
func redactErr(err error, raw string) string {
	msg := err.Error()
	if u, perr := url.Parse(raw); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}
