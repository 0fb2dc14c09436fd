package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/mqttstream"
	"github.com/peonify/peonify/streams/webhookstream"
	"github.com/peonify/peonify/streams/wsstream"
)

// This file holds the push intakes of the streams list: webhook,
// websocket and mqtt entries. An intake is not polled: it takes tasks from
// outside and writes each into a store of the same file (its store:
// field) before it acknowledges the sender, and the processor runs them
// from there. The processor starts intakes with Run and stops them first
// at shutdown.

// intakeSpec is an entry of the streams list that is a push intake.
type intakeSpec interface {
	streamSpec
	// storeField is the entry's store: field, set to the store's name once
	// the file is checked.
	storeField() *string
	// taskTypes lists the task types the intake gives its tasks, with the
	// path of the field that names each; none when producers choose.
	taskTypes() []typeRef
	// intake builds the intake over store. HTTP intakes listen at once,
	// so that a port in use shows before the processor starts.
	intake(store peonify.Enqueuer, w *wiring) (peonify.Intake, error)
}

// typeRef is a task type named by a field of the file.
type typeRef struct{ path, typ string }

// wiring is what the intakes of one run share with the processor.
type wiring struct {
	log *slog.Logger
	// results is the registry of synchronous webhook routes, nil when the
	// file has none; its middleware is in the processor.
	results *webhookstream.Results
	// ready lists the checks of /readyz that intakes add.
	ready []readyCheck
	// closers release what intakes built before the processor ran them
	// (listeners); calling them again after a run is harmless.
	closers []func()
}

// readyCheck is one condition of /readyz: nil when ready.
type readyCheck struct {
	name  string
	check func() error
}

// intakeCommon are the fields every intake entry has besides its kind's.
type intakeCommon struct {
	Name  string `yaml:"name"`  // defaults to the kind
	Kind  string `yaml:"kind"`  // required: a key of streamKinds
	Store string `yaml:"store"` // the store it writes into; required when the file has several

	c streamCommon // name, kind and path, filled by decodeStream
}

func (ic *intakeCommon) common() *streamCommon { return &ic.c }
func (ic *intakeCommon) storeField() *string   { return &ic.Store }

// intakeStopTimeout bounds how long an HTTP intake waits, at shutdown,
// for the requests it is answering.
const intakeStopTimeout = 10 * time.Second

// serverFields are the fields of an intake that serves HTTP.
type serverFields struct {
	Listen  string `yaml:"listen"`   // required: host:port
	TLSCert string `yaml:"tls_cert"` // serve HTTPS with this certificate (PEM) ...
	TLSKey  string `yaml:"tls_key"`  // ... and this private key (PEM)
}

func (sf *serverFields) check(path string) error {
	if sf.Listen == "" {
		return errorf(path+".listen", "required: the address to serve on, e.g. :8080 or 127.0.0.1:8080")
	}
	if err := checkListen(sf.Listen); err != nil {
		return errorf(path+".listen", "%v", err)
	}
	switch {
	case sf.TLSCert != "" && sf.TLSKey == "":
		return errorf(path+".tls_key", "required with tls_cert: the certificate's private key file (PEM)")
	case sf.TLSKey != "" && sf.TLSCert == "":
		return errorf(path+".tls_cert", "required with tls_key: the certificate file (PEM)")
	case sf.TLSCert != "":
		if _, err := tls.LoadX509KeyPair(sf.TLSCert, sf.TLSKey); err != nil {
			return errorf(path+".tls_cert", "cannot load the certificate and key: %v", err)
		}
	}
	return nil
}

// checkListen validates a host:port address to listen on.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (write :8080 for every interface, 127.0.0.1:8080 for this machine only)", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has no port number from 0 to 65535", addr)
	}
	return nil
}

// serve returns an intake that serves srv on a listener opened now, and
// stops it with stop (if any) and then srv.Shutdown when its ctx ends.
func (sf *serverFields) serve(w *wiring, kind, name string, srv *http.Server, stop func(context.Context) error) (peonify.Intake, error) {
	what := kind + " intake " + strconv.Quote(name)
	ln, err := net.Listen("tcp", sf.Listen)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	w.closers = append(w.closers, func() { _ = ln.Close() })
	scheme := "http"
	if sf.TLSCert != "" {
		scheme = "https"
	}
	w.log.Info("peonify: intake listening", "kind", kind, "intake", name, "addr", scheme+"://"+ln.Addr().String())
	srv.ErrorLog = slog.NewLogLogger(w.log.Handler(), slog.LevelDebug)
	return peonify.IntakeFunc(func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() {
			if sf.TLSCert != "" {
				errc <- srv.ServeTLS(ln, sf.TLSCert, sf.TLSKey)
			} else {
				errc <- srv.Serve(ln)
			}
		}()
		select {
		case err := <-errc:
			return fmt.Errorf("%s: %w", what, err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), intakeStopTimeout)
		defer cancel()
		var errs []error
		if stop != nil {
			errs = append(errs, stop(sctx))
		}
		if err := srv.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: requests still open after %s: %w", what, intakeStopTimeout, err))
			_ = srv.Close()
		}
		<-errc
		return errors.Join(errs...)
	}), nil
}

// webhookSpec is an intake of kind webhook: webhookstream.
type webhookSpec struct {
	Intake         intakeCommon   `yaml:",inline"`
	Server         serverFields   `yaml:",inline"`
	MaxBodyBytes   byteSize       `yaml:"max_body"`        // defaults to 1MiB
	BodyTimeout    duration       `yaml:"body_timeout"`    // defaults to 10s
	EnqueueTimeout duration       `yaml:"enqueue_timeout"` // defaults to 5s
	RetryAfter     duration       `yaml:"retry_after"`     // defaults to 10s
	Routes         []webhookRoute `yaml:"routes"`          // required
}

// webhookRoute is one path of a webhook intake.
type webhookRoute struct {
	Path        string   `yaml:"path"`         // required: /hooks/github
	Type        string   `yaml:"type"`         // required: the task type
	Verify      string   `yaml:"verify"`       // required: github, stripe, standard, slack, shopify, hmac or none
	Secrets     []string `yaml:"secrets"`      // required unless verify: none
	Tolerance   duration `yaml:"tolerance"`    // stripe, standard, slack: defaults to 5m
	Header      string   `yaml:"header"`       // hmac: required
	Prefix      string   `yaml:"prefix"`       // hmac
	Encoding    string   `yaml:"encoding"`     // hmac: hex (default) or base64
	IDHeader    string   `yaml:"id_header"`    // hmac
	EventHeader string   `yaml:"event_header"` // hmac
	JSON        bool     `yaml:"json"`
	Headers     []string `yaml:"headers"`
	IDPrefix    string   `yaml:"id_prefix"` // defaults to the type and ":"
	MaxBody     byteSize `yaml:"max_body"`  // defaults to the entry's
	MaxAttempts int      `yaml:"max_attempts"`
	Priority    int      `yaml:"priority"`
	Sync        bool     `yaml:"sync"`
	SyncTimeout duration `yaml:"sync_timeout"` // defaults to 10s
}

func (s *webhookSpec) common() *streamCommon { return s.Intake.common() }
func (s *webhookSpec) storeField() *string   { return s.Intake.storeField() }

func (s *webhookSpec) taskTypes() []typeRef {
	refs := make([]typeRef, len(s.Routes))
	for i, r := range s.Routes {
		refs[i] = typeRef{fmt.Sprintf("%s.routes[%d].type", s.Intake.c.path, i), r.Type}
	}
	return refs
}

// sync reports whether a route of the entry answers synchronously.
func (s *webhookSpec) sync() bool {
	for _, r := range s.Routes {
		if r.Sync {
			return true
		}
	}
	return false
}

func (s *webhookSpec) check() error {
	path := s.Intake.c.path
	if err := s.Server.check(path); err != nil {
		return err
	}
	for field, d := range map[string]duration{"body_timeout": s.BodyTimeout, "enqueue_timeout": s.EnqueueTimeout, "retry_after": s.RetryAfter} {
		if d < 0 {
			return errorf(path+"."+field, "must not be negative (0 means the default)")
		}
	}
	if len(s.Routes) == 0 {
		return errorf(path+".routes", "required: list at least one route, e.g. {path: /hooks/github, type: github-event, verify: github, secrets: [${GITHUB_WEBHOOK_SECRET}]}")
	}
	seen := make(map[string]int)
	for i := range s.Routes {
		rpath := fmt.Sprintf("%s.routes[%d]", path, i)
		r := &s.Routes[i]
		if j, dup := seen[r.Path]; dup && r.Path != "" {
			return errorf(rpath+".path", "%q is also the path of routes[%d]: give each route its own path", r.Path, j)
		}
		seen[r.Path] = i
		if err := r.check(rpath); err != nil {
			return err
		}
	}
	_, err := s.config(nil, nil)
	return err
}

func (r *webhookRoute) check(path string) error {
	switch {
	case r.Path == "":
		return errorf(path+".path", "required: the URL path senders POST to, e.g. /hooks/github")
	case !strings.HasPrefix(r.Path, "/"):
		return errorf(path+".path", "%q must start with /", r.Path)
	case r.Type == "":
		return errorf(path+".type", "required: the task type of the requests accepted here")
	case r.MaxAttempts < 0:
		return errorf(path+".max_attempts", "must not be negative (0 means the processor's retry.max_attempts)")
	case r.Tolerance < 0:
		return errorf(path+".tolerance", "must not be negative (0 means the default, 5m)")
	case r.SyncTimeout < 0:
		return errorf(path+".sync_timeout", "must not be negative (0 means the default, 10s)")
	case r.SyncTimeout > 0 && !r.Sync:
		return errorf(path+".sync_timeout", "applies to synchronous routes only: set sync: true, or remove it")
	}
	hmacOnly := map[string]string{"header": r.Header, "prefix": r.Prefix, "encoding": r.Encoding, "id_header": r.IDHeader, "event_header": r.EventHeader}
	switch r.Verify {
	case "":
		return errorf(path+".verify", "required: github, stripe, standard (Standard Webhooks), slack, shopify, hmac, or none (anyone who can reach the endpoint may enqueue)")
	case "github", "stripe", "standard", "slack", "shopify", "hmac", "none":
	default:
		return errorf(path+".verify", "%q is not a scheme: use github, stripe, standard, slack, shopify, hmac or none", r.Verify)
	}
	if r.Verify != "hmac" {
		for _, f := range sortedKeys(hmacOnly) {
			if hmacOnly[f] != "" {
				return errorf(path+"."+f, "applies to verify: hmac only (this route verifies %s)", r.Verify)
			}
		}
	}
	if r.Tolerance != 0 && r.Verify != "stripe" && r.Verify != "standard" && r.Verify != "slack" {
		return errorf(path+".tolerance", "applies to verify: stripe, standard and slack only, which sign a timestamp")
	}
	if r.Verify == "none" {
		if len(r.Secrets) > 0 {
			return errorf(path+".secrets", "a route with verify: none checks no signature: remove the secrets, or choose a scheme")
		}
		return nil
	}
	if len(r.Secrets) == 0 {
		return errorf(path+".secrets", "required with verify: %s: the signing secrets, e.g. [${WEBHOOK_SECRET}] (several while a secret is rotated)", r.Verify)
	}
	for j, sec := range r.Secrets {
		if sec == "" {
			return errorf(fmt.Sprintf("%s.secrets[%d]", path, j), "is empty (is its variable set to an empty value?)")
		}
	}
	if r.Verify == "hmac" {
		if r.Header == "" {
			return errorf(path+".header", "required with verify: hmac: the request header that carries the signature, e.g. X-Signature")
		}
		switch r.Encoding {
		case "", "hex", "base64":
		default:
			return errorf(path+".encoding", "%q is not an encoding: use hex (the default) or base64", r.Encoding)
		}
	}
	return nil
}

// verifier returns the route's webhookstream.Verifier, nil for none.
func (r *webhookRoute) verifier() webhookstream.Verifier {
	secrets := make([]webhookstream.Secret, len(r.Secrets))
	for i, s := range r.Secrets {
		secrets[i] = webhookstream.NewSecret(s)
	}
	switch r.Verify {
	case "github":
		return webhookstream.GitHub{Secrets: secrets}
	case "stripe":
		return webhookstream.Stripe{Secrets: secrets, Tolerance: time.Duration(r.Tolerance)}
	case "standard":
		return webhookstream.StandardWebhooks{Secrets: secrets, Tolerance: time.Duration(r.Tolerance)}
	case "slack":
		return webhookstream.Slack{Secrets: secrets, Tolerance: time.Duration(r.Tolerance)}
	case "shopify":
		return webhookstream.Shopify{Secrets: secrets}
	case "hmac":
		enc := webhookstream.Hex
		if r.Encoding == "base64" {
			enc = webhookstream.Base64
		}
		return webhookstream.HMAC{Header: r.Header, Prefix: r.Prefix, Encoding: enc, Secrets: secrets,
			IDHeader: r.IDHeader, EventHeader: r.EventHeader}
	}
	return nil
}

// secretIndex finds "Secrets[3]" in the text of a verifier's error.
var secretIndex = regexp.MustCompile(`Secrets\[(\d+)\]`)

// config returns the webhookstream.Config of the entry, checked by
// webhookstream.New; results may be nil when checking the file.
func (s *webhookSpec) config(results *webhookstream.Results, log *slog.Logger) (webhookstream.Config, error) {
	if results == nil {
		results = webhookstream.NewResults()
	}
	cfg := webhookstream.Config{
		Routes:         make(map[string]webhookstream.Route, len(s.Routes)),
		MaxBodyBytes:   int64(s.MaxBodyBytes),
		BodyTimeout:    time.Duration(s.BodyTimeout),
		EnqueueTimeout: time.Duration(s.EnqueueTimeout),
		RetryAfter:     time.Duration(s.RetryAfter),
		Results:        results,
		Logger:         log,
	}
	for i, r := range s.Routes {
		route := webhookstream.Route{
			Type: r.Type, Verifier: r.verifier(), AllowUnsigned: r.Verify == "none", JSON: r.JSON,
			Headers: r.Headers, IDPrefix: r.IDPrefix, Sync: r.Sync, SyncTimeout: time.Duration(r.SyncTimeout),
			MaxBodyBytes: int64(r.MaxBody), MaxAttempts: r.MaxAttempts, Priority: r.Priority,
		}
		// Check each route alone, so that an error names it.
		one := cfg
		one.Routes = map[string]webhookstream.Route{r.Path: route}
		if err := one.Validate(); err != nil {
			rpath := fmt.Sprintf("%s.routes[%d]", s.Intake.c.path, i)
			var ce *peonify.ConfigError
			if errors.As(err, &ce) && strings.HasPrefix(ce.Field, "webhookstream.Config.Routes") {
				if m := secretIndex.FindStringSubmatch(ce.Reason); m != nil {
					return cfg, errorf(rpath+".secrets["+m[1]+"]", "%s", ce.Reason)
				}
				return cfg, errorf(rpath, "%s", ce.Reason)
			}
			return cfg, libraryError(s.Intake.c.path, s, err)
		}
		cfg.Routes[r.Path] = route
	}
	return cfg, nil
}

func (s *webhookSpec) intake(store peonify.Enqueuer, w *wiring) (peonify.Intake, error) {
	cfg, err := s.config(w.results, w.log)
	if err != nil {
		return nil, err
	}
	h, err := webhookstream.New(store, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Intake.c.path, err)
	}
	srv := webhookstream.Server(s.Server.Listen, h)
	return s.Server.serve(w, "webhook", s.Intake.c.Name, srv, nil)
}

// websocketSpec is an intake of kind websocket: wsstream.
type websocketSpec struct {
	Intake         intakeCommon `yaml:",inline"`
	Server         serverFields `yaml:",inline"`
	Path           string       `yaml:"path"`            // defaults to /
	OriginPatterns []string     `yaml:"origins"`         // browser origins besides the request's own host
	ReadLimit      byteSize     `yaml:"read_limit"`      // defaults to 1MiB
	MaxInFlight    int          `yaml:"max_in_flight"`   // defaults to 256
	EnqueueTimeout duration     `yaml:"enqueue_timeout"` // defaults to 10s
	WriteTimeout   duration     `yaml:"write_timeout"`   // defaults to 10s
	PingInterval   duration     `yaml:"ping_interval"`   // defaults to 30s
	BearerTokens   []string     `yaml:"bearer_tokens"`   // accepted tokens; none: no authentication
	Resends        resendFields `yaml:",inline"`
}

func (s *websocketSpec) common() *streamCommon  { return s.Intake.common() }
func (s *websocketSpec) storeField() *string    { return s.Intake.storeField() }
func (s *websocketSpec) taskTypes() []typeRef   { return nil }
func (s *websocketSpec) resends() *resendFields { return &s.Resends }

func (s *websocketSpec) check() error {
	path := s.Intake.c.path
	if err := s.Server.check(path); err != nil {
		return err
	}
	if s.Path == "" {
		s.Path = "/"
	}
	switch {
	case !strings.HasPrefix(s.Path, "/"):
		return errorf(path+".path", "%q must start with /", s.Path)
	case s.MaxInFlight < 0:
		return errorf(path+".max_in_flight", "must not be negative (0 means the default, %d)", wsstream.DefaultMaxInFlight)
	}
	for field, d := range map[string]duration{"enqueue_timeout": s.EnqueueTimeout, "write_timeout": s.WriteTimeout, "ping_interval": s.PingInterval} {
		if d < 0 {
			return errorf(path+"."+field, "must not be negative (0 means the default)")
		}
	}
	for i, tok := range s.BearerTokens {
		if len(tok) < 16 {
			return errorf(fmt.Sprintf("%s.bearer_tokens[%d]", path, i), "is %d bytes long: use at least 16 random characters (is its variable set?)", len(tok))
		}
	}
	if err := s.Resends.check(path); err != nil {
		return err
	}
	if err := s.config(nil).Validate(); err != nil {
		return libraryError(path, s, err)
	}
	return nil
}

func (s *websocketSpec) config(log *slog.Logger) wsstream.Config {
	cfg := wsstream.Config{
		OriginPatterns: s.OriginPatterns,
		ReadLimit:      int64(s.ReadLimit),
		MaxInFlight:    s.MaxInFlight,
		EnqueueTimeout: time.Duration(s.EnqueueTimeout),
		WriteTimeout:   time.Duration(s.WriteTimeout),
		PingInterval:   time.Duration(s.PingInterval),
		ResendWindow:   time.Duration(s.Resends.ResendWindow),
		ResendLog:      s.Resends.ResendLog,
		ResendMaxIDs:   s.Resends.ResendMaxIDs,
		Logger:         log,
	}
	if len(s.BearerTokens) > 0 {
		cfg.Authenticate = bearerAuth(s.BearerTokens)
	}
	return cfg
}

// bearerAuth accepts a request whose Authorization header is "Bearer "
// and one of tokens. The tokens are compared in constant time, as hashes,
// so that neither their content nor their length shows in timing.
func bearerAuth(tokens []string) func(*http.Request) error {
	sums := make([][sha256.Size]byte, len(tokens))
	for i, t := range tokens {
		sums[i] = sha256.Sum256([]byte(t))
	}
	return func(r *http.Request) error {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			return errors.New("missing bearer token: send the header Authorization: Bearer <token>")
		}
		got := sha256.Sum256([]byte(tok))
		match := 0
		for i := range sums {
			match |= subtle.ConstantTimeCompare(got[:], sums[i][:])
		}
		if match != 1 {
			return errors.New("wrong bearer token")
		}
		return nil
	}
}

func (s *websocketSpec) intake(store peonify.Enqueuer, w *wiring) (peonify.Intake, error) {
	if len(s.BearerTokens) == 0 {
		w.log.Warn("peonify: a websocket intake has no bearer_tokens: any client that reaches it may enqueue tasks",
			"intake", s.Intake.c.Name, "listen", s.Server.Listen)
	}
	h, err := wsstream.New(store, s.config(w.log))
	if err != nil {
		return nil, fmt.Errorf("%s.resend_log: %w", s.Intake.c.path, err) // the only error left after check
	}
	mux := http.NewServeMux()
	mux.Handle(s.Path, h)
	srv := &http.Server{Addr: s.Server.Listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	return s.Server.serve(w, "websocket", s.Intake.c.Name, srv, h.Shutdown)
}

// mqttSpec is an intake of kind mqtt: mqttstream.
type mqttSpec struct {
	Intake         intakeCommon      `yaml:",inline"`
	URL            string            `yaml:"url"`       // the broker, or:
	Servers        []string          `yaml:"servers"`   // several brokers, tried in turn
	ClientID       string            `yaml:"client_id"` // required: stable and unique
	Routes         map[string]string `yaml:"routes"`    // required: topic filter -> task type
	ShareGroup     string            `yaml:"share_group"`
	SessionExpiry  duration          `yaml:"session_expiry"`  // defaults to 24h
	KeepAlive      duration          `yaml:"keep_alive"`      // defaults to 30s
	ReceiveMaximum int               `yaml:"receive_maximum"` // defaults to 100
	ConnectTimeout duration          `yaml:"connect_timeout"` // defaults to 10s
	EnqueueTimeout duration          `yaml:"enqueue_timeout"` // defaults to 10s
	MinBackoff     duration          `yaml:"min_backoff"`     // defaults to 100ms
	MaxBackoff     duration          `yaml:"max_backoff"`     // defaults to 30s
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
func (s *mqttSpec) resends() *resendFields { return &s.Resends }

func (s *mqttSpec) taskTypes() []typeRef {
	var refs []typeRef
	for _, f := range sortedKeys(s.Routes) {
		refs = append(refs, typeRef{fmt.Sprintf("%s.routes[%q]", s.Intake.c.path, f), s.Routes[f]})
	}
	return refs
}

func (s *mqttSpec) check() error {
	path := s.Intake.c.path
	switch {
	case s.URL == "" && len(s.Servers) == 0:
		return errorf(path+".url", "required: the broker's address, e.g. mqtt://broker:1883 (or a list in servers:)")
	case s.URL != "" && len(s.Servers) > 0:
		return errorf(path+".servers", "set either url or servers, not both")
	case s.ClientID == "":
		return errorf(path+".client_id", "required: an ID that stays the same across restarts and is unique per processor, e.g. peonify-worker-1, so that the broker keeps the session's messages while peonify is down")
	case len(s.Routes) == 0:
		return errorf(path+".routes", `required: map topic filters to task types, e.g. {"devices/+/events": device-event}`)
	}
	for f, typ := range s.Routes {
		if typ == "" {
			return errorf(fmt.Sprintf("%s.routes[%q]", path, f), "required: the task type of the messages on this filter")
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
			return errorf(path+".url", "%s", ce.Reason) // url is Servers[0]
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

// resendFields are the fields of the intakes that recognise resends
// themselves (websocket, mqtt).
type resendFields struct {
	ResendWindow duration `yaml:"resend_window"`  // defaults to 24h; negative: off
	ResendLog    string   `yaml:"resend_log"`     // defaults to a file next to the store, see defaultResendLog
	ResendMaxIDs int      `yaml:"resend_max_ids"` // defaults to 1000000
}

func (rf *resendFields) check(path string) error {
	if rf.ResendMaxIDs < 0 {
		return errorf(path+".resend_max_ids", "must not be negative (0 means the default, 1000000)")
	}
	if rf.ResendLog != "" && rf.ResendWindow < 0 {
		return errorf(path+".resend_log", "is set but resend_window is negative (off): remove one of them")
	}
	return nil
}

// resendIntake is an intake with resendFields.
type resendIntake interface {
	intakeSpec
	resends() *resendFields
}

// defaultResendLog is where an intake named name records the IDs it
// stored when resend_log is not set: next to the database of a SQLite
// store, else in the working directory (where a relative SQLite path is
// too).
func defaultResendLog(name string, store streamSpec) string {
	name = unsafeFileChars.ReplaceAllString(name, "_")
	if st, ok := store.(*sqliteSpec); ok {
		return st.Path + "-" + name + ".resends"
	}
	return "peonify-" + name + ".resends"
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)
