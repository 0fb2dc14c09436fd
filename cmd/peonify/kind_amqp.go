package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/streams/amqpstream"
)

// amqpSpec is a stream of kind amqp: amqpstream.
type amqpSpec struct {
	Common       streamCommon      `yaml:",inline"`
	URL          string            `yaml:"url"`           // required: amqp://user:password@host:5672/vhost
	Queue        string            `yaml:"queue"`         // defaults to peonify
	Prefetch     int               `yaml:"prefetch"`      // defaults to following the processor
	MaxPriority  int               `yaml:"max_priority"`  // defaults to 0: a FIFO queue
	Quorum       bool              `yaml:"quorum"`        // quorum queues
	KeepDead     yamlfile.Duration `yaml:"keep_dead"`     // defaults to 7 days; negative: until removed
	ReconnectMin yamlfile.Duration `yaml:"reconnect_min"` // defaults to 100ms
	ReconnectMax yamlfile.Duration `yaml:"reconnect_max"` // defaults to 30s
	DialTimeout  yamlfile.Duration `yaml:"dial_timeout"`  // defaults to 10s
	TLS          tlsFiles          `yaml:",inline"`

	tls *tls.Config // built by check
}

func (s *amqpSpec) common() *streamCommon { return &s.Common }

// forgetsDone is true: RabbitMQ has no duplicate detection.
func (s *amqpSpec) forgetsDone() bool { return true }

func (s *amqpSpec) payloadLimit(*resources) (int64, string) {
	return 128 << 20, "RabbitMQ's default max_message_size"
}

// amqpKind is the kind amqp, which --amqp names: a RabbitMQ work queue,
// shared by any number of processors.
func amqpKind() kind {
	return kind{name: "amqp",
		new: func() streamSpec { return new(amqpSpec) },
		flag: queueFlag("amqp", "a RabbitMQ broker `URL` (with --queue)", "peonify", "RabbitMQ queue", nil,
			func(url, queue string, _ *storeFlags) storeSpec { return &amqpSpec{URL: url, Queue: queue} })}
}

func (s *amqpSpec) check() error {
	path := s.Common.path
	if s.URL == "" {
		return yamlfile.Errorf(path+".url", "required: the broker's address, e.g. amqp://peonify:${RABBITMQ_PASSWORD}@rabbitmq:5672/ (amqps:// for TLS)")
	}
	if s.Queue == "" {
		s.Queue = "peonify"
	}
	if s.Common.Name == "" {
		s.Common.Name = "amqp:" + s.Queue
	}
	var err error
	if s.tls, err = s.TLS.config(path); err != nil {
		return err
	}
	if _, err := amqp.ParseURI(s.URL); err != nil {
		return yamlfile.Errorf(path+".url", "not an AMQP URL: %s: want one such as amqp://user:password@rabbitmq:5672/ (percent-encode reserved characters in the user and password)", redactErr(err, s.URL))
	}
	return libraryError(path, s, s.config(nil).Validate())
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
