package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/amqpstream"
	"github.com/peonify/peonify/streams/natsstream"
	"github.com/peonify/peonify/streams/redisstream"
)

// This file holds the stores on message brokers: redis, nats and amqp
// entries, shared by processors on any number of machines.

// tlsFiles are the TLS fields of an entry that connects to a server.
type tlsFiles struct {
	TLSCA   string `yaml:"tls_ca"`   // PEM roots to trust instead of the system's
	TLSCert string `yaml:"tls_cert"` // a client certificate (PEM) ...
	TLSKey  string `yaml:"tls_key"`  // ... and its private key
}

// config returns the TLS settings of the files, or nil when none is set.
func (tf *tlsFiles) config(path string) (*tls.Config, error) {
	if tf.TLSCA == "" && tf.TLSCert == "" && tf.TLSKey == "" {
		return nil, nil
	}
	if (tf.TLSCert == "") != (tf.TLSKey == "") {
		return nil, errorf(path+".tls_key", "set tls_cert and tls_key together: the client certificate and its private key (PEM)")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if tf.TLSCA != "" {
		pem, err := os.ReadFile(tf.TLSCA)
		if err != nil {
			return nil, errorf(path+".tls_ca", "%v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, errorf(path+".tls_ca", "%s holds no PEM certificate", tf.TLSCA)
		}
	}
	if tf.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(tf.TLSCert, tf.TLSKey)
		if err != nil {
			return nil, errorf(path+".tls_cert", "cannot load the certificate and key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// libraryField turns a *peonify.ConfigError of a stream package, whose
// Field is like "redisstream.Config.Lease", into an error at the entry's
// field, named by fields (Go name -> file name).
func libraryField(path string, err error, fields map[string]string) error {
	var ce *peonify.ConfigError
	if !errors.As(err, &ce) {
		return errorf(path, "%v", err)
	}
	_, goName, _ := strings.Cut(ce.Field, ".Config.")
	if name, ok := fields[goName]; ok {
		return errorf(path+"."+name, "%s", ce.Reason)
	}
	return errorf(path, "%s", ce.Reason)
}

// redisSpec is a stream of kind redis: redisstream.
type redisSpec struct {
	Common         streamCommon `yaml:",inline"`
	URL            string       `yaml:"url"`             // required: redis://user:password@host:6379/0
	Queue          string       `yaml:"queue"`           // defaults to "default"
	Prefix         string       `yaml:"prefix"`          // defaults to "peonify"
	Consumer       string       `yaml:"consumer"`        // defaults to hostname-pid-random
	Lease          duration     `yaml:"lease"`           // defaults to 30s
	RescueInterval duration     `yaml:"rescue_interval"` // defaults to min(1s, lease/2)
	DedupWindow    duration     `yaml:"dedup_window"`    // defaults to 5m; negative: off
	KeepDead       duration     `yaml:"keep_dead"`       // defaults to 7 days; negative: until deleted
	PoolSize       int          `yaml:"pool_size"`       // connections for this URL; defaults to go-redis's
	TLS            tlsFiles     `yaml:",inline"`

	tls *tls.Config // built by check
}

func (s *redisSpec) common() *streamCommon { return &s.Common }

// redisFields names redisstream.Config's fields as the file does.
var redisFields = map[string]string{"Queue": "queue", "Prefix": "prefix", "Consumer": "consumer",
	"Lease": "lease", "RescueInterval": "rescue_interval"}

func (s *redisSpec) check() error {
	path := s.Common.path
	if s.URL == "" {
		return errorf(path+".url", "required: the server's address, e.g. redis://:${REDIS_PASSWORD}@redis:6379/0 (rediss:// for TLS)")
	}
	if _, err := redis.ParseURL(s.URL); err != nil {
		return errorf(path+".url", "not a Redis URL: %s", redactErr(err, s.URL))
	}
	if s.Queue == "" {
		s.Queue = "default"
	}
	if s.Common.Name == "" {
		s.Common.Name = "redis/" + s.Queue
	}
	if s.PoolSize < 0 {
		return errorf(path+".pool_size", "must not be negative (0 means go-redis's default, 10 per CPU)")
	}
	var err error
	if s.tls, err = s.TLS.config(path); err != nil {
		return err
	}
	// New does no I/O and only keeps the client: check the fields with
	// a client that is never used.
	if _, err := redisstream.New(struct{ redis.UniversalClient }{}, s.config(nil)); err != nil {
		return libraryField(path, err, redisFields)
	}
	return nil
}

func (s *redisSpec) config(r *resources) redisstream.Config {
	cfg := redisstream.Config{
		Queue:          s.Queue,
		Prefix:         s.Prefix,
		Consumer:       s.Consumer,
		Lease:          time.Duration(s.Lease),
		RescueInterval: time.Duration(s.RescueInterval),
		DedupWindow:    time.Duration(s.DedupWindow),
		KeepDead:       time.Duration(s.KeepDead),
	}
	if r != nil {
		cfg.Logger = r.log
	}
	return cfg
}

func (s *redisSpec) open(ctx context.Context, r *resources) (peonify.Stream, error) {
	c, err := r.redis(ctx, s.URL, s.PoolSize, s.tls)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	st, err := redisstream.New(c, s.config(r))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	return st, nil
}

// natsSpec is a stream of kind nats: natsstream.
type natsSpec struct {
	Common          streamCommon `yaml:",inline"`
	URL             string       `yaml:"url"`              // required: nats://host:4222 (several, comma-separated)
	Credentials     string       `yaml:"credentials"`      // a .creds file (JWT and NKey seed)
	Stream          string       `yaml:"stream"`           // the JetStream stream; defaults to PEONIFY
	Subject         string       `yaml:"subject"`          // defaults to peonify.tasks
	Consumer        string       `yaml:"consumer"`         // defaults to peonify
	DeadStream      string       `yaml:"dead_stream"`      // defaults to <stream>_DEAD
	AckWait         duration     `yaml:"ack_wait"`         // the lease; defaults to 30s
	MaxDeliver      int          `yaml:"max_deliver"`      // defaults to 100; negative: no limit
	MaxAckPending   int          `yaml:"max_ack_pending"`  // defaults to no cap
	DuplicateWindow duration     `yaml:"duplicate_window"` // defaults to 2m
	KeepDead        duration     `yaml:"keep_dead"`        // defaults to 7 days; negative: until deleted
	MaxBytes        byteSize     `yaml:"max_bytes"`        // defaults to no limit
	Replicas        int          `yaml:"replicas"`         // defaults to 1
	MemoryStorage   bool         `yaml:"memory_storage"`
	Setup           *bool        `yaml:"setup"` // create or update the JetStream objects at start-up; defaults to true
	TLS             tlsFiles     `yaml:",inline"`

	tls *tls.Config // built by check
}

func (s *natsSpec) common() *streamCommon { return &s.Common }

// natsFields names natsstream.Config's fields as the file does.
var natsFields = map[string]string{"Stream": "stream", "Subject": "subject", "Consumer": "consumer",
	"DeadStream": "dead_stream", "AckWait": "ack_wait", "DuplicateWindow": "duplicate_window",
	"MaxBytes": "max_bytes", "Replicas": "replicas", "MaxDeliver": "max_deliver", "KeepDead": "keep_dead"}

// checkJS stands in for a JetStream context when the config is checked:
// natsstream.New only keeps it.
type checkJS struct{ jetstream.JetStream }

func (checkJS) Conn() *nats.Conn { return nil }

func (s *natsSpec) check() error {
	path := s.Common.path
	if s.URL == "" {
		return errorf(path+".url", "required: the server's address, e.g. nats://nats:4222 (tls:// for TLS; several separated by commas)")
	}
	if s.Stream == "" {
		s.Stream = "PEONIFY"
	}
	if s.Common.Name == "" {
		s.Common.Name = "nats/" + s.Stream
	}
	if s.Credentials != "" {
		if _, err := os.Stat(s.Credentials); err != nil {
			return errorf(path+".credentials", "%v", err)
		}
	}
	var err error
	if s.tls, err = s.TLS.config(path); err != nil {
		return err
	}
	if _, err := natsstream.New(checkJS{}, s.config(nil)); err != nil {
		return libraryField(path, err, natsFields)
	}
	return nil
}

// setup reports whether the entry creates its JetStream objects.
func (s *natsSpec) setup() bool { return s.Setup == nil || *s.Setup }

func (s *natsSpec) config(r *resources) natsstream.Config {
	cfg := natsstream.Config{
		Stream:          s.Stream,
		Subject:         s.Subject,
		Consumer:        s.Consumer,
		DeadStream:      s.DeadStream,
		AckWait:         time.Duration(s.AckWait),
		MaxDeliver:      s.MaxDeliver,
		MaxAckPending:   s.MaxAckPending,
		DuplicateWindow: time.Duration(s.DuplicateWindow),
		KeepDead:        time.Duration(s.KeepDead),
		MaxBytes:        int64(s.MaxBytes),
		Replicas:        s.Replicas,
		MemoryStorage:   s.MemoryStorage,
	}
	if r != nil {
		cfg.Logger = r.log
	}
	return cfg
}

func (s *natsSpec) open(ctx context.Context, r *resources) (peonify.Stream, error) {
	nc, err := r.nats(s.URL, s.Credentials, s.tls)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	cfg := s.config(r)
	if s.setup() && r.processing {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := natsstream.Setup(sctx, js, cfg)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: setting up JetStream stream %s: %w", s.Common.path, s.Stream, err)
		}
	}
	st, err := natsstream.New(js, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	return st, nil
}

// amqpSpec is a stream of kind amqp: amqpstream.
type amqpSpec struct {
	Common       streamCommon `yaml:",inline"`
	URL          string       `yaml:"url"`           // required: amqp://user:password@host:5672/vhost
	Queue        string       `yaml:"queue"`         // defaults to peonify
	Prefetch     int          `yaml:"prefetch"`      // defaults to following the processor
	MaxPriority  int          `yaml:"max_priority"`  // defaults to 0: a FIFO queue
	Quorum       bool         `yaml:"quorum"`        // quorum queues
	KeepDead     duration     `yaml:"keep_dead"`     // defaults to 7 days; negative: until removed
	ReconnectMin duration     `yaml:"reconnect_min"` // defaults to 100ms
	ReconnectMax duration     `yaml:"reconnect_max"` // defaults to 30s
	DialTimeout  duration     `yaml:"dial_timeout"`  // defaults to 10s
	TLS          tlsFiles     `yaml:",inline"`

	tls *tls.Config // built by check
}

func (s *amqpSpec) common() *streamCommon { return &s.Common }

// amqpFields names amqpstream.Config's fields as the file does.
var amqpFields = map[string]string{"Queue": "queue", "Prefetch": "prefetch", "MaxPriority": "max_priority",
	"KeepDead": "keep_dead", "ReconnectMin": "reconnect_min", "ReconnectMax": "reconnect_max", "DialTimeout": "dial_timeout"}

func (s *amqpSpec) check() error {
	path := s.Common.path
	if s.URL == "" {
		return errorf(path+".url", "required: the broker's address, e.g. amqp://peonify:${RABBITMQ_PASSWORD}@rabbitmq:5672/ (amqps:// for TLS)")
	}
	if s.Queue == "" {
		s.Queue = "peonify"
	}
	if s.Common.Name == "" {
		s.Common.Name = "amqp/" + s.Queue
	}
	var err error
	if s.tls, err = s.TLS.config(path); err != nil {
		return err
	}
	if _, err := amqpstream.New(s.URL, s.config(nil)); err != nil {
		var ce *peonify.ConfigError
		if errors.As(err, &ce) && ce.Field == "amqpstream URL" {
			return errorf(path+".url", "%s", redactErr(errors.New(ce.Reason), s.URL))
		}
		return libraryField(path, err, amqpFields)
	}
	return nil
}

func (s *amqpSpec) config(r *resources) amqpstream.Config {
	cfg := amqpstream.Config{
		Queue:        s.Queue,
		Prefetch:     s.Prefetch,
		MaxPriority:  s.MaxPriority,
		Quorum:       s.Quorum,
		KeepDead:     time.Duration(s.KeepDead),
		ReconnectMin: time.Duration(s.ReconnectMin),
		ReconnectMax: time.Duration(s.ReconnectMax),
		DialTimeout:  time.Duration(s.DialTimeout),
	}
	cfg.AMQP.TLSClientConfig = s.tls
	if r != nil {
		cfg.Logger = r.log
	}
	return cfg
}

func (s *amqpSpec) open(ctx context.Context, r *resources) (peonify.Stream, error) {
	st, err := amqpstream.New(s.URL, s.config(r))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	// Connect now, so that a wrong address or password shows at once
	// rather than as poll errors.
	timeout := max(time.Duration(s.DialTimeout), 10*time.Second)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := st.Connect(cctx); err != nil {
		_ = st.Close(context.Background())
		// The error names the broker, without the password.
		return nil, fmt.Errorf("%s: %s", s.Common.path, redactErr(err, s.URL))
	}
	return st, nil
}

// inspectorOf returns the Inspector of a stream, found through wrappers
// (peonify.As). One that cannot answer some questions (amqpstream) says so
// with errors.ErrUnsupported.
func inspectorOf(s peonify.Stream) (peonify.Inspector, bool) {
	return peonify.As[peonify.Inspector](s)
}

// redis returns the client of a Redis URL, connecting on first use.
func (r *resources) redis(ctx context.Context, rawURL string, poolSize int, tlsCfg *tls.Config) (*redis.Client, error) {
	if c, ok := r.redisClients[rawURL]; ok {
		return c, nil
	}
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("not a Redis URL: %s", redactErr(err, rawURL))
	}
	if poolSize > 0 {
		opts.PoolSize = poolSize
	}
	// Each command's context (the processor's store_timeout) bounds it,
	// not only the client's read timeout.
	opts.ContextTimeoutEnabled = true
	if tlsCfg != nil {
		tlsCfg = tlsCfg.Clone()
		if opts.TLSConfig != nil {
			tlsCfg.ServerName = opts.TLSConfig.ServerName
		}
		opts.TLSConfig = tlsCfg
	}
	// go-redis logs through a logger of its package; send its lines to the
	// daemon's log, which this process has one of.
	redis.SetLogger(redisLogger{r.log})
	c := redis.NewClient(opts)
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Ping(pingCtx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("connect to redis at %s: %s", redactURL(rawURL), redactErr(err, rawURL))
	}
	r.redisClients[rawURL] = c
	return c, nil
}

// nats returns the connection to a NATS URL, connecting on first use.
// A processor's connection reconnects for ever.
func (r *resources) nats(rawURL, credentials string, tlsCfg *tls.Config) (*nats.Conn, error) {
	key := rawURL + "\x00" + credentials
	if nc, ok := r.natsConns[key]; ok {
		return nc, nil
	}
	opts := []nats.Option{nats.Name("peonify")}
	if r.processing {
		opts = append(opts, nats.MaxReconnects(-1))
	}
	if credentials != "" {
		opts = append(opts, nats.UserCredentials(credentials))
	}
	if tlsCfg != nil {
		opts = append(opts, nats.Secure(tlsCfg))
	}
	nc, err := nats.Connect(rawURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %s", redactURL(rawURL), redactErr(err, rawURL))
	}
	r.natsConns[key] = nc
	return nc, nil
}

// redisLogger sends go-redis's log lines to a slog.Logger: failed dials
// at debug level, since go-redis also returns them to the command that
// dialed, whose caller reports them (the start-up ping as the daemon's
// error, a poll as a poll error), and the rest at warning level.
type redisLogger struct{ log *slog.Logger }

// Printf implements go-redis's logging interface.
func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := "peonify: redis client: " + strings.TrimSpace(fmt.Sprintf(format, v...))
	level := slog.LevelWarn
	if strings.Contains(format, "failed to dial") {
		level = slog.LevelDebug
	}
	l.log.Log(ctx, level, msg)
}
