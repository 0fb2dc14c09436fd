package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/streams/natsstream"
)

// natsSpec is a stream of kind nats: natsstream.
type natsSpec struct {
	Common          streamCommon      `yaml:",inline"`
	URL             string            `yaml:"url"`              // required: nats://host:4222 (several, comma-separated)
	Credentials     string            `yaml:"credentials"`      // a .creds file (JWT and NKey seed)
	Stream          string            `yaml:"stream"`           // the JetStream stream; defaults to PEONIFY
	Subject         string            `yaml:"subject"`          // defaults to peonify.tasks
	Consumer        string            `yaml:"consumer"`         // defaults to peonify
	DeadStream      string            `yaml:"dead_stream"`      // defaults to <stream>_DEAD
	AckWait         yamlfile.Duration `yaml:"ack_wait"`         // the lease; defaults to 30s
	MaxDeliver      int               `yaml:"max_deliver"`      // defaults to 100; negative: no limit
	MaxAckPending   int               `yaml:"max_ack_pending"`  // defaults to no cap
	DuplicateWindow yamlfile.Duration `yaml:"duplicate_window"` // defaults to 2m
	KeepDead        yamlfile.Duration `yaml:"keep_dead"`        // defaults to 7 days; negative: until deleted
	MaxBytes        yamlfile.ByteSize `yaml:"max_bytes"`        // defaults to no limit
	Replicas        int               `yaml:"replicas"`         // defaults to 1
	MemoryStorage   bool              `yaml:"memory_storage"`
	Setup           *bool             `yaml:"setup"` // create or update the JetStream objects at start-up; defaults to true
	TLS             tlsFiles          `yaml:",inline"`

	tls *tls.Config // built by check
}

func (s *natsSpec) common() *streamCommon { return &s.Common }

// forgetsDone is false: JetStream remembers IDs for duplicate_window.
func (s *natsSpec) forgetsDone() bool { return false }

// payloadLimit is the server's max_payload once connected, less the
// task's headers (see envelope).
func (s *natsSpec) payloadLimit(r *resources) (int64, string) {
	for _, nc := range r.natsConns {
		return nc.MaxPayload() - natsEnvelope, "its server's max_payload, less the task's headers"
	}
	return 64 << 20, "the largest max_payload of a NATS server"
}

// envelope is the size of a task's fields other than its payload, which
// travel as headers and count against max_payload.
func (s *natsSpec) envelope(t *peonify.Task) int64 {
	n := int64(len(t.ID) + len(t.Type) + len(t.UniqueKey) + len(t.Key))
	for k, v := range t.Headers {
		n += int64(len(k) + len(v) + 4)
	}
	return n
}

// natsKind is the kind nats, which --nats names: a work queue on NATS
// JetStream, shared by any number of processors.
func natsKind() kind {
	return kind{name: "nats",
		new: func() streamSpec { return new(natsSpec) },
		flag: &storeFlag{name: "nats", usage: "a NATS server `URL` (with --nats-stream)", hint: "--nats URL",
			extra: []flagDef{{"nats-stream", "PEONIFY", "the JetStream `stream`, with --nats"}},
			spec: func(value string, sf *storeFlags, _ bool) (storeSpec, string, string, error) {
				stream := sf.value("nats-stream")
				s := &natsSpec{URL: value, Stream: stream}
				return s, fmt.Sprintf("JetStream stream %q at %s", stream, redactURL(value)), "--nats URL --nats-stream " + shellQuote(stream), nil
			}}}
}

func (s *natsSpec) check() error {
	path := s.Common.path
	if s.URL == "" {
		return yamlfile.Errorf(path+".url", "required: the server's address, e.g. nats://nats:4222 (tls:// for TLS; several separated by commas)")
	}
	if s.Stream == "" {
		s.Stream = "PEONIFY"
	}
	if s.Common.Name == "" {
		s.Common.Name = "nats:" + s.Stream
	}
	if s.Credentials != "" {
		if _, err := os.Stat(s.Credentials); err != nil {
			return yamlfile.Errorf(path+".credentials", "%v", err)
		}
	}
	var err error
	if s.tls, err = s.TLS.config(path); err != nil {
		return err
	}
	return libraryError(path, s, s.config(nil).Validate())
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
