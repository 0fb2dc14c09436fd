package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
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
		return nil, yamlfile.Errorf(path+".tls_key", "set tls_cert and tls_key together: the client certificate and its private key (PEM)")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if tf.TLSCA != "" {
		pem, err := os.ReadFile(tf.TLSCA)
		if err != nil {
			return nil, yamlfile.Errorf(path+".tls_ca", "%v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, yamlfile.Errorf(path+".tls_ca", "%s holds no PEM certificate", tf.TLSCA)
		}
	}
	if tf.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(tf.TLSCert, tf.TLSKey)
		if err != nil {
			return nil, yamlfile.Errorf(path+".tls_cert", "cannot load the certificate and key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
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
	// Keepalives find an idle connection that went silent (see
	// tcpKeepAlive): a publishing intake's, between its tasks.
	opts := []nats.Option{nats.Name("peonify"), nats.SetCustomDialer(keepAliveDialer(nats.DefaultTimeout))}
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
