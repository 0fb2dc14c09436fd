package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/pgstream"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// streamKinds is the table of stream kinds a config file can name, from
// the kind: field to the type that decodes the entry's other fields. To
// add a kind, write its spec type (fields, check, and open for a store or
// intake for a push intake) and list it here.
var streamKinds = map[string]struct {
	summary string
	new     func() streamSpec
}{
	"sqlite":    {"the embedded durable store: one SQLite file, no server", func() streamSpec { return new(sqliteSpec) }},
	"postgres":  {"a queue in a Postgres table, shared by any number of processors", func() streamSpec { return new(postgresSpec) }},
	"redis":     {"a queue on Redis Streams, shared by any number of processors", func() streamSpec { return new(redisSpec) }},
	"nats":      {"a work queue on NATS JetStream, shared by any number of processors", func() streamSpec { return new(natsSpec) }},
	"amqp":      {"a RabbitMQ work queue, shared by any number of processors", func() streamSpec { return new(amqpSpec) }},
	"webhook":   {"an HTTP endpoint for signed webhooks, stored into a store of the file", func() streamSpec { return new(webhookSpec) }},
	"websocket": {"a WebSocket endpoint for producers, stored into a store of the file", func() streamSpec { return new(websocketSpec) }},
	"mqtt":      {"MQTT subscriptions, stored into a store of the file", func() streamSpec { return new(mqttSpec) }},
}

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
}

// streamCommon are the fields every stream entry has.
type streamCommon struct {
	Name   string `yaml:"name"`   // defaults to the kind, or postgres/<queue>
	Kind   string `yaml:"kind"`   // required: a key of streamKinds
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
			return nil, &fieldError{path: path, pos: n.GetToken().Position, msg: "want a mapping with kind: and the kind's fields"}
		}
	}
	if err := decodeLoose(n, &head); err != nil {
		return nil, err
	}
	kind, ok := streamKinds[head.Kind]
	if !ok {
		if head.Kind == "" {
			return nil, errorf(path+".kind", "required: one of %s", quoteList(sortedKeys(streamKinds)))
		}
		return nil, errorf(path+".kind", "unknown stream kind %q: use one of %s", head.Kind, quoteList(sortedKeys(streamKinds)))
	}
	s := kind.new()
	if err := decodeStrict(n, s); err != nil {
		return nil, err
	}
	c := s.common()
	c.path = path
	c.Name, c.Kind = head.Name, head.Kind // intakes keep them outside their fields
	if c.Weight < 0 {
		return nil, errorf(path+".weight", "must be at least 1 (0 means the default, 1)")
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

// sqliteSpec is a stream of kind sqlite: sqlitestream.
type sqliteSpec struct {
	Common      streamCommon `yaml:",inline"`
	Path        string       `yaml:"path"`         // required: the database file, created if missing
	Lease       duration     `yaml:"lease"`        // defaults to 30s
	KeepDone    *duration    `yaml:"keep_done"`    // defaults to 0 (acked tasks are deleted), or 24h for a webhook's store
	KeepDead    duration     `yaml:"keep_dead"`    // defaults to 0: dead tasks are kept until purged
	Synchronous string       `yaml:"synchronous"`  // full (default) or normal
	BusyTimeout duration     `yaml:"busy_timeout"` // defaults to 5s
}

func (s *sqliteSpec) common() *streamCommon { return &s.Common }

func (s *sqliteSpec) check() error {
	if s.Path == "" {
		return errorf(s.Common.path+".path", "required: the database file (created if missing), e.g. peonify.db")
	}
	switch strings.ToLower(s.Synchronous) {
	case "", "full", "normal":
	default:
		return errorf(s.Common.path+".synchronous", "%q is not a setting: use full (survives power loss) or normal (survives a process crash, faster)", s.Synchronous)
	}
	_, err := s.config(nil, false)
	return err
}

// config returns the sqlitestream.Config of the entry; watch turns on the
// watch for other processes' commits, which only a processor needs.
func (s *sqliteSpec) config(log *slog.Logger, watch bool) (sqlitestream.Config, error) {
	cfg := sqlitestream.Config{
		Name:        s.Common.Name,
		Lease:       time.Duration(s.Lease),
		KeepDead:    time.Duration(s.KeepDead),
		BusyTimeout: time.Duration(s.BusyTimeout),
		Logger:      log,
	}
	if s.KeepDone != nil {
		cfg.KeepDone = time.Duration(*s.KeepDone)
	}
	if cfg.Name == "" {
		cfg.Name = "sqlite"
	}
	if strings.EqualFold(s.Synchronous, "normal") {
		cfg.Synchronous = sqlitestream.SynchronousNormal
	}
	if !watch {
		cfg.WatchInterval = -1
	}
	if err := cfg.Validate(); err != nil {
		return cfg, libraryError(s.Common.path, s, err)
	}
	return cfg, nil
}

func (s *sqliteSpec) open(_ context.Context, r *resources) (peonify.Stream, error) {
	cfg, err := s.config(r.log, r.processing)
	if err != nil {
		return nil, err
	}
	st, err := sqlitestream.Open(s.Path, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	return st, nil
}

// postgresSpec is a stream of kind postgres: pgstream.
type postgresSpec struct {
	Common     streamCommon `yaml:",inline"`
	URL        string       `yaml:"url"`         // required: postgres://user:password@host:5432/db
	Queue      string       `yaml:"queue"`       // defaults to "default"
	Schema     string       `yaml:"schema"`      // defaults to public
	Lease      duration     `yaml:"lease"`       // defaults to 30s
	KeepDone   duration     `yaml:"keep_done"`   // defaults to 0: acked tasks are deleted
	KeepDead   duration     `yaml:"keep_dead"`   // defaults to 7 days
	NoListen   bool         `yaml:"no_listen"`   // for poolers in transaction mode
	SyncCommit bool         `yaml:"sync_commit"` // claims and acks wait for the disk
	Migrate    bool         `yaml:"migrate"`     // create or upgrade the tables at start-up
	MaxConns   int32        `yaml:"max_conns"`   // pool size for this URL; defaults to pgx's default
}

func (s *postgresSpec) common() *streamCommon { return &s.Common }

func (s *postgresSpec) check() error {
	if s.URL == "" {
		return errorf(s.Common.path+".url", "required: the database address, e.g. postgres://user:${PGPASSWORD}@db:5432/app")
	}
	if _, err := pgxpool.ParseConfig(s.URL); err != nil {
		return errorf(s.Common.path+".url", "not a Postgres URL or connection string: %s", redactErr(err, s.URL))
	}
	if s.Queue == "" {
		s.Queue = "default"
	}
	if s.Schema == "" {
		s.Schema = "public"
	}
	if s.MaxConns < 0 {
		return errorf(s.Common.path+".max_conns", "must not be negative (0 means the driver's default)")
	}
	if s.Common.Name == "" {
		s.Common.Name = "postgres/" + s.Queue
	}
	if err := s.config(nil, nil).Validate(); err != nil {
		return libraryError(s.Common.path, s, err)
	}
	return nil
}

func (s *postgresSpec) config(log *slog.Logger, l *pgstream.Listener) pgstream.Config {
	return pgstream.Config{
		Queue:      s.Queue,
		Schema:     s.Schema,
		Lease:      time.Duration(s.Lease),
		KeepDone:   time.Duration(s.KeepDone),
		KeepDead:   time.Duration(s.KeepDead),
		NoListen:   s.NoListen,
		SyncCommit: s.SyncCommit,
		Listener:   l,
		Logger:     log,
	}
}

func (s *postgresSpec) open(ctx context.Context, r *resources) (peonify.Stream, error) {
	pool, err := r.pool(ctx, s.URL, s.MaxConns)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	if s.Migrate && r.processing {
		if err := pgstream.MigrateSchema(ctx, pool, s.Schema); err != nil {
			return nil, fmt.Errorf("%s: migrate: %w", s.Common.path, err)
		}
	} else if err := checkSchema(ctx, pool, s.Schema); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	var l *pgstream.Listener
	if !s.NoListen && r.processing {
		if l, err = r.listener(pool, s.URL, s.Schema); err != nil {
			return nil, fmt.Errorf("%s: %w", s.Common.path, err)
		}
	}
	st, err := pgstream.New(pool, s.config(r.log, l))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	return st, nil
}

// checkSchema tells the operator to migrate when the tables are missing.
func checkSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	var found bool
	err := pool.QueryRow(ctx, `SELECT to_regclass(quote_ident($1) || '.peonify_tasks') IS NOT NULL`, schema).Scan(&found)
	if err != nil {
		return fmt.Errorf("checking for the peonify tables: %w", err)
	}
	if !found {
		flag := ""
		if schema != "public" {
			flag = " --schema " + schema
		}
		return fmt.Errorf("the peonify tables are missing in schema %q: run `peonify migrate --postgres URL%s` once (or set migrate: true in the config file)", schema, flag)
	}
	return nil
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
	natsConns    map[string]*nats.Conn // by URL and credentials
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

// close closes the listeners, then the pools and the broker clients. Call
// it after the streams are closed.
func (r *resources) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, l := range r.listeners {
		if err := l.Close(ctx); err != nil {
			r.log.Error("peonify: closing a postgres listener", "err", err)
		}
	}
	for _, p := range r.pools {
		p.Close()
	}
	for _, c := range r.redisClients {
		_ = c.Close()
	}
	for _, nc := range r.natsConns {
		nc.Close()
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
