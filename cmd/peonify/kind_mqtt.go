package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/streams/mqttstream"
)

// mqttSpec is an intake of kind mqtt: mqttstream.
type mqttSpec struct {
	Intake         intakeCommon      `yaml:",inline"`
	URL            string            `yaml:"url"`       // the broker, or:
	Servers        []string          `yaml:"servers"`   // several brokers, tried in turn
	ClientID       string            `yaml:"client_id"` // required: stable and unique
	Routes         map[string]string `yaml:"routes"`    // required: topic filter -> task type
	ShareGroup     string            `yaml:"share_group"`
	SessionExpiry  yamlfile.Duration `yaml:"session_expiry"`  // defaults to 24h
	KeepAlive      yamlfile.Duration `yaml:"keep_alive"`      // defaults to 30s
	ReceiveMaximum int               `yaml:"receive_maximum"` // defaults to 100
	ConnectTimeout yamlfile.Duration `yaml:"connect_timeout"` // defaults to 10s
	EnqueueTimeout yamlfile.Duration `yaml:"enqueue_timeout"` // defaults to 10s
	MinBackoff     yamlfile.Duration `yaml:"min_backoff"`     // defaults to 100ms
	MaxBackoff     yamlfile.Duration `yaml:"max_backoff"`     // defaults to 30s
	ContentIDs     bool              `yaml:"content_ids"`
	WaitForBroker  bool              `yaml:"wait_for_broker"` // defaults to false: no broker at start-up is an error
	Resends        resendFields      `yaml:",inline"`
	Username       string            `yaml:"username"`
	Password       string            `yaml:"password"`
	TLS            tlsFiles          `yaml:",inline"`

	tls *tls.Config // built by check
}

func (s *mqttSpec) common() *streamCommon  { return s.Intake.common() }
func (s *mqttSpec) storeField() *string    { return s.Intake.storeField() }
func (s *mqttSpec) keyFromField() string   { return s.Intake.keyFromField() }
func (s *mqttSpec) resends() *resendFields { return &s.Resends }

func (s *mqttSpec) taskTypes() []typeRef {
	var refs []typeRef
	for _, f := range yamlfile.SortedKeys(s.Routes) {
		refs = append(refs, typeRef{fmt.Sprintf("%s.routes[%q]", s.Intake.c.path, f), s.Routes[f]})
	}
	return refs
}

// mqttKind is the kind mqtt: MQTT subscriptions, stored into a store of the
// file.
func mqttKind() kind {
	return kind{name: "mqtt",
		new: func() streamSpec { return new(mqttSpec) }}
}

func (s *mqttSpec) check() error {
	path := s.Intake.c.path
	switch {
	case s.URL == "" && len(s.Servers) == 0:
		return yamlfile.Errorf(path+".url", "required: the broker's address, e.g. mqtt://broker:1883 (or a list in servers:)")
	case s.URL != "" && len(s.Servers) > 0:
		return yamlfile.Errorf(path+".servers", "set either url or servers, not both")
	case s.ClientID == "":
		return yamlfile.Errorf(path+".client_id", "required: an ID that stays the same across restarts and is unique per processor, e.g. peonify-worker-1, so that the broker keeps the session's messages while peonify is down")
	case len(s.Routes) == 0:
		return yamlfile.Errorf(path+".routes", `required: map topic filters to task types, e.g. {"devices/+/events": device-event}`)
	}
	for f, typ := range s.Routes {
		if typ == "" {
			return yamlfile.Errorf(fmt.Sprintf("%s.routes[%q]", path, f), "required: the task type of the messages on this filter")
		}
	}
	if err := s.Resends.check(path); err != nil {
		return err
	}
	var err error
	if s.tls, err = s.TLS.config(path); err != nil {
		return err
	}
	if err := s.config(nil).Validate(); err != nil {
		var ce *peonify.ConfigError
		if errors.As(err, &ce) && s.URL != "" && strings.HasPrefix(ce.Field, "mqttstream.Config.Servers") {
			return yamlfile.Errorf(path+".url", "%s", ce.Reason) // url is Servers[0]
		}
		return libraryError(path, s, err)
	}
	return nil
}

func (s *mqttSpec) config(log *slog.Logger) mqttstream.Config {
	servers := s.Servers
	if s.URL != "" {
		servers = []string{s.URL}
	}
	return mqttstream.Config{
		Servers:        servers,
		ClientID:       s.ClientID,
		Routes:         s.Routes,
		ShareGroup:     s.ShareGroup,
		Username:       s.Username,
		Password:       s.Password,
		TLSConfig:      s.tls,
		SessionExpiry:  time.Duration(s.SessionExpiry),
		KeepAlive:      time.Duration(s.KeepAlive),
		ReceiveMaximum: s.ReceiveMaximum,
		ConnectTimeout: time.Duration(s.ConnectTimeout),
		EnqueueTimeout: time.Duration(s.EnqueueTimeout),
		MinBackoff:     time.Duration(s.MinBackoff),
		MaxBackoff:     time.Duration(s.MaxBackoff),
		ContentIDs:     s.ContentIDs,
		WaitForBroker:  s.WaitForBroker,
		ResendWindow:   time.Duration(s.Resends.ResendWindow),
		ResendLog:      s.Resends.ResendLog,
		ResendMaxIDs:   s.Resends.ResendMaxIDs,
		Logger:         log,
	}
}

func (s *mqttSpec) intake(store peonify.Enqueuer, w *wiring) (peonify.Intake, error) {
	path, name := s.Intake.c.path, s.Intake.c.Name
	in, err := mqttstream.New(store, s.config(w.log))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	w.ready = append(w.ready, readyCheck{name: name, check: func() error {
		st := in.Stats()
		switch {
		case st.ConnectError != nil:
			return fmt.Errorf("mqtt intake %q cannot connect to the broker: %v", name, st.ConnectError)
		case !st.Connected:
			return fmt.Errorf("mqtt intake %q is not connected to the broker", name)
		}
		select {
		case <-in.Ready():
			return nil
		default:
			return fmt.Errorf("mqtt intake %q is connected but has not subscribed yet", name)
		}
	}})
	if s.WaitForBroker {
		return in, nil
	}
	// Connect and subscribe now, as stores connect when they are opened,
	// so that an unreachable broker, wrong credentials or a refused
	// subscription stop the start-up with one error.
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = in.Run(runCtx)
	}()
	stop := func() { cancel(); <-done }
	w.closers = append(w.closers, stop)
	servers := max(len(s.Servers), 1)
	wait := time.Duration(servers+1) * cmp.Or(time.Duration(s.ConnectTimeout), mqttstream.DefaultConnectTimeout)
	select {
	case <-in.Ready():
	case <-done:
		var ce *mqttstream.ConnectError
		if errors.As(runErr, &ce) {
			return nil, fmt.Errorf("%s: mqtt intake %q cannot connect to the broker: %v (set wait_for_broker: true to start anyway and wait for it)", path, name, ce.Err)
		}
		return nil, fmt.Errorf("%s: %w", path, runErr)
	case <-time.After(wait):
		stop()
		return nil, fmt.Errorf("%s: mqtt intake %q did not subscribe within %s of connecting (see the warnings above)", path, name, wait)
	}
	return peonify.IntakeFunc(func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			stop()
		case <-done:
		}
		return runErr
	}), nil
}
