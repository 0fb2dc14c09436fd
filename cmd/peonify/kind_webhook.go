package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/streams/webhookstream"
)

// webhookSpec is an intake of kind webhook: webhookstream.
type webhookSpec struct {
	Intake         intakeCommon      `yaml:",inline"`
	Server         serverFields      `yaml:",inline"`
	MaxBodyBytes   yamlfile.ByteSize `yaml:"max_body"`        // defaults to 1MiB
	BodyTimeout    yamlfile.Duration `yaml:"body_timeout"`    // defaults to 10s
	EnqueueTimeout yamlfile.Duration `yaml:"enqueue_timeout"` // defaults to 5s
	RetryAfter     yamlfile.Duration `yaml:"retry_after"`     // defaults to 10s
	Routes         []webhookRoute    `yaml:"routes"`          // required
}

// webhookRoute is one path of a webhook intake.
type webhookRoute struct {
	Path        string            `yaml:"path"`         // required: /hooks/github
	Type        string            `yaml:"type"`         // required: the task type
	Verify      string            `yaml:"verify"`       // required: github, stripe, standard, slack, shopify, hmac or none
	Secrets     []string          `yaml:"secrets"`      // required unless verify: none
	Tolerance   yamlfile.Duration `yaml:"tolerance"`    // stripe, standard, slack: defaults to 5m
	Header      string            `yaml:"header"`       // hmac: required
	Prefix      string            `yaml:"prefix"`       // hmac
	Encoding    string            `yaml:"encoding"`     // hmac: hex (default) or base64
	IDHeader    string            `yaml:"id_header"`    // hmac
	EventHeader string            `yaml:"event_header"` // hmac
	JSON        bool              `yaml:"json"`
	Headers     []string          `yaml:"headers"`
	IDPrefix    string            `yaml:"id_prefix"`  // defaults to the type and ":"
	KeyHeader   string            `yaml:"key_header"` // the request header that is Task.Key; defaults to Peonify-Key
	MaxBody     yamlfile.ByteSize `yaml:"max_body"`   // defaults to the entry's
	MaxAttempts int               `yaml:"max_attempts"`
	Priority    int               `yaml:"priority"`
	Sync        bool              `yaml:"sync"`
	SyncTimeout yamlfile.Duration `yaml:"sync_timeout"` // defaults to 10s
}

func (s *webhookSpec) common() *streamCommon { return s.Intake.common() }

func (s *webhookSpec) server() *serverFields { return &s.Server }

// defaultStore keeps finished tasks in a SQLite store for a day unless
// its keep_done says otherwise, so that redeliveries of acked webhooks
// are still recognised.
func (s *webhookSpec) defaultStore(store storeSpec) {
	if st, ok := store.(*sqliteSpec); ok && st.KeepDone == nil {
		day := yamlfile.Duration(24 * time.Hour)
		st.KeepDone = &day
	}
}

// storeWarning warns of a store that forgets finished tasks at once.
func (s *webhookSpec) storeWarning(store storeSpec) string {
	if !store.forgetsDone() {
		return ""
	}
	return "peonify: the store of a webhook intake forgets finished tasks at once, so a redelivery of a webhook whose task already ran runs it again; set keep_done on the store to keep them"
}
func (s *webhookSpec) storeField() *string  { return s.Intake.storeField() }
func (s *webhookSpec) keyFromField() string { return s.Intake.keyFromField() }

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

// webhookKind is the kind webhook: an HTTP endpoint for signed webhooks,
// stored into a store of the file.
func webhookKind() kind {
	return kind{name: "webhook",
		new: func() streamSpec { return new(webhookSpec) }}
}

func (s *webhookSpec) check() error {
	path := s.Intake.c.path
	if err := s.Server.check(path); err != nil {
		return err
	}
	for field, d := range map[string]yamlfile.Duration{"body_timeout": s.BodyTimeout, "enqueue_timeout": s.EnqueueTimeout, "retry_after": s.RetryAfter} {
		if d < 0 {
			return yamlfile.Errorf(path+"."+field, "must not be negative (0 means the default)")
		}
	}
	if len(s.Routes) == 0 {
		return yamlfile.Errorf(path+".routes", "required: list at least one route, e.g. {path: /hooks/github, type: github-event, verify: github, secrets: [${GITHUB_WEBHOOK_SECRET}]}")
	}
	seen := make(map[string]int)
	for i := range s.Routes {
		rpath := fmt.Sprintf("%s.routes[%d]", path, i)
		r := &s.Routes[i]
		if j, dup := seen[r.Path]; dup && r.Path != "" {
			return yamlfile.Errorf(rpath+".path", "%q is also the path of routes[%d]: give each route its own path", r.Path, j)
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
		return yamlfile.Errorf(path+".path", "required: the URL path senders POST to, e.g. /hooks/github")
	case !strings.HasPrefix(r.Path, "/"):
		return yamlfile.Errorf(path+".path", "%q must start with /", r.Path)
	case r.Type == "":
		return yamlfile.Errorf(path+".type", "required: the task type of the requests accepted here")
	case r.MaxAttempts < 0:
		return yamlfile.Errorf(path+".max_attempts", "must not be negative (0 means the processor's retry.max_attempts)")
	case r.Tolerance < 0:
		return yamlfile.Errorf(path+".tolerance", "must not be negative (0 means the default, 5m)")
	case r.SyncTimeout < 0:
		return yamlfile.Errorf(path+".sync_timeout", "must not be negative (0 means the default, 10s)")
	case r.SyncTimeout > 0 && !r.Sync:
		return yamlfile.Errorf(path+".sync_timeout", "applies to synchronous routes only: set sync: true, or remove it")
	}
	hmacOnly := map[string]string{"header": r.Header, "prefix": r.Prefix, "encoding": r.Encoding, "id_header": r.IDHeader, "event_header": r.EventHeader}
	switch r.Verify {
	case "":
		return yamlfile.Errorf(path+".verify", "required: github, stripe, standard (Standard Webhooks), slack, shopify, hmac, or none (anyone who can reach the endpoint may enqueue)")
	case "github", "stripe", "standard", "slack", "shopify", "hmac", "none":
	default:
		return yamlfile.Errorf(path+".verify", "%q is not a scheme: use github, stripe, standard, slack, shopify, hmac or none", r.Verify)
	}
	if r.Verify != "hmac" {
		for _, f := range yamlfile.SortedKeys(hmacOnly) {
			if hmacOnly[f] != "" {
				return yamlfile.Errorf(path+"."+f, "applies to verify: hmac only (this route verifies %s)", r.Verify)
			}
		}
	}
	if r.Tolerance != 0 && r.Verify != "stripe" && r.Verify != "standard" && r.Verify != "slack" {
		return yamlfile.Errorf(path+".tolerance", "applies to verify: stripe, standard and slack only, which sign a timestamp")
	}
	if r.Verify == "none" {
		if len(r.Secrets) > 0 {
			return yamlfile.Errorf(path+".secrets", "a route with verify: none checks no signature: remove the secrets, or choose a scheme")
		}
		return nil
	}
	if len(r.Secrets) == 0 {
		return yamlfile.Errorf(path+".secrets", "required with verify: %s: the signing secrets, e.g. [${WEBHOOK_SECRET}] (several while a secret is rotated)", r.Verify)
	}
	for j, sec := range r.Secrets {
		if sec == "" {
			return yamlfile.Errorf(fmt.Sprintf("%s.secrets[%d]", path, j), "is empty (is its variable set to an empty value?)")
		}
	}
	if r.Verify == "hmac" {
		if r.Header == "" {
			return yamlfile.Errorf(path+".header", "required with verify: hmac: the request header that carries the signature, e.g. X-Signature")
		}
		switch r.Encoding {
		case "", "hex", "base64":
		default:
			return yamlfile.Errorf(path+".encoding", "%q is not an encoding: use hex (the default) or base64", r.Encoding)
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
			Headers: r.Headers, IDPrefix: r.IDPrefix, KeyHeader: r.KeyHeader, Sync: r.Sync, SyncTimeout: time.Duration(r.SyncTimeout),
			MaxBodyBytes: int64(r.MaxBody), MaxAttempts: r.MaxAttempts, Priority: r.Priority,
		}
		// Check each route alone, so that an error names it.
		one := cfg
		one.Routes = map[string]webhookstream.Route{r.Path: route}
		if err := one.Validate(); err != nil {
			return cfg, s.routeError(i, err)
		}
		cfg.Routes[r.Path] = route
	}
	return cfg, nil
}

// routeError turns the error of webhookstream's Config.Validate for route
// i alone into an error at the same field of the route in the file: a
// *peonify.ConfigError names the route (`webhookstream.Config.Routes["/gh"]`)
// or a field of it or of its Verifier (`...Routes["/gh"].Verifier.Secrets[1]`),
// whose fields the file sets on the route, found by the yaml tags of
// webhookRoute as libraryError finds a section's. Another error is
// reported at the entry.
func (s *webhookSpec) routeError(i int, err error) error {
	r := &s.Routes[i]
	route := fmt.Sprintf("webhookstream.Config.Routes[%q]", r.Path)
	var ce *peonify.ConfigError
	if !errors.As(err, &ce) || !strings.HasPrefix(ce.Field, route) {
		return libraryError(s.Intake.c.path, s, err)
	}
	goPath := strings.TrimPrefix(strings.TrimPrefix(ce.Field, route), ".")
	goPath = strings.TrimPrefix(goPath, "Verifier.")
	return yamlfile.Errorf(fmt.Sprintf("%s.routes[%d]%s", s.Intake.c.path, i, yamlfile.PathOf(r, goPath)), "%s", ce.Reason)
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
