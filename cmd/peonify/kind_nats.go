package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/natsstream"
)

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
	if err := s.config(nil).Validate(); err != nil {
		return libraryError(path, s, err)
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
