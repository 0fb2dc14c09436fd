package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/streams/wsstream"
)

// websocketSpec is an intake of kind websocket: wsstream.
type websocketSpec struct {
	Intake         intakeCommon      `yaml:",inline"`
	Server         serverFields      `yaml:",inline"`
	Path           string            `yaml:"path"`            // defaults to /
	OriginPatterns []string          `yaml:"origins"`         // browser origins besides the request's own host
	ReadLimit      yamlfile.ByteSize `yaml:"read_limit"`      // defaults to 1MiB
	MaxInFlight    int               `yaml:"max_in_flight"`   // defaults to 256
	EnqueueTimeout yamlfile.Duration `yaml:"enqueue_timeout"` // defaults to 10s
	WriteTimeout   yamlfile.Duration `yaml:"write_timeout"`   // defaults to 10s
	PingInterval   yamlfile.Duration `yaml:"ping_interval"`   // defaults to 30s
	BearerTokens   []string          `yaml:"bearer_tokens"`   // accepted tokens; none: no authentication
	Resends        resendFields      `yaml:",inline"`
}

func (s *websocketSpec) common() *streamCommon  { return s.Intake.common() }
func (s *websocketSpec) server() *serverFields  { return &s.Server }
func (s *websocketSpec) storeField() *string    { return s.Intake.storeField() }
func (s *websocketSpec) keyFromField() string   { return s.Intake.keyFromField() }
func (s *websocketSpec) taskTypes() []typeRef   { return nil }
func (s *websocketSpec) resends() *resendFields { return &s.Resends }

// websocketKind is the kind websocket: a WebSocket endpoint for producers,
// stored into a store of the file.
func websocketKind() kind {
	return kind{name: "websocket",
		new: func() streamSpec { return new(websocketSpec) }}
}

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
		return yamlfile.Errorf(path+".path", "%q must start with /", s.Path)
	case s.MaxInFlight < 0:
		return yamlfile.Errorf(path+".max_in_flight", "must not be negative (0 means the default, %d)", wsstream.DefaultMaxInFlight)
	}
	for field, d := range map[string]yamlfile.Duration{"enqueue_timeout": s.EnqueueTimeout, "write_timeout": s.WriteTimeout, "ping_interval": s.PingInterval} {
		if d < 0 {
			return yamlfile.Errorf(path+"."+field, "must not be negative (0 means the default)")
		}
	}
	for i, tok := range s.BearerTokens {
		if len(tok) < 16 {
			return yamlfile.Errorf(fmt.Sprintf("%s.bearer_tokens[%d]", path, i), "is %d bytes long: use at least 16 random characters (is its variable set?)", len(tok))
		}
	}
	if err := s.Resends.check(path); err != nil {
		return err
	}
	return libraryError(path, s, s.config(nil).Validate())
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
