package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/httpapi"
)

// This file holds the api section of the file: the HTTP API (package
// httpapi) that the daemon serves under /v1/ on its http listener.

// apiConfig is the api section. Without it nothing is served under /v1/.
type apiConfig struct {
	Tokens            []apiToken        `yaml:"tokens"`             // bearer tokens with their scopes
	Anonymous         []string          `yaml:"anonymous"`          // scopes of requests without a token; loopback listeners only
	MaxBody           yamlfile.ByteSize `yaml:"max_body"`           // request body limit; defaults to 16MiB
	IdempotencyWindow yamlfile.Duration `yaml:"idempotency_window"` // how long an Idempotency-Key is recognised; defaults to 24h
	MaxWait           yamlfile.Duration `yaml:"max_wait"`           // the longest ?wait= of GET /v1/tasks/{id}; defaults to 60s
	Stores            []string          `yaml:"stores"`             // the stores the API exposes, the first the default target; defaults to all
}

// apiToken is one entry of api.tokens.
type apiToken struct {
	Name   string   `yaml:"name"`   // who holds it, for the log and the Idempotency-Key scope
	Secret string   `yaml:"secret"` // the bearer token itself, usually ${VAR}
	Scopes []string `yaml:"scopes"` // enqueue, read, admin
}

// apiScopes are the scopes a token or anonymous requests may have.
var apiScopes = []string{"enqueue", "read", "admin"}

// minAPISecret is the shortest token secret accepted.
const minAPISecret = 16

// checkAPI validates the api section against the rest of the file: it
// needs http.listen, anonymous access needs a loopback listener, and
// api.stores names stores of the file.
func (c *config) checkAPI() error {
	ac := c.api
	if ac == nil {
		return nil
	}
	if c.http.Listen == "" {
		return yamlfile.Errorf("api", "needs http.listen: the API is served under /v1/ on the http listener (e.g. http: {listen: 127.0.0.1:9090})")
	}
	if len(ac.Tokens) == 0 && len(ac.Anonymous) == 0 {
		return yamlfile.Errorf("api.tokens", "required: list at least one token, e.g. {name: billing, secret: ${BILLING_API_TOKEN}, scopes: [enqueue, read]}")
	}
	names := make(map[string]int)
	secrets := make(map[string]int)
	for i, tok := range ac.Tokens {
		path := fmt.Sprintf("api.tokens[%d]", i)
		switch {
		case tok.Name == "":
			return yamlfile.Errorf(path+".name", "required: a name for who holds the token (it is logged, never the secret)")
		case tok.Secret == "":
			return yamlfile.Errorf(path+".secret", "required and must not be empty: set it from the environment, e.g. ${%s_API_TOKEN}", envStem(tok.Name))
		case len(tok.Secret) < minAPISecret:
			return yamlfile.Errorf(path+".secret", "is %d bytes long: use at least %d random characters (e.g. from: openssl rand -hex 32)", len(tok.Secret), minAPISecret)
		case len(tok.Scopes) == 0:
			return yamlfile.Errorf(path+".scopes", "required: list what the token may do (%s)", yamlfile.QuoteList(apiScopes))
		}
		if j, dup := names[tok.Name]; dup {
			return yamlfile.Errorf(path+".name", "%q is also the name of api.tokens[%d]: give each token its own name", tok.Name, j)
		}
		names[tok.Name] = i
		if j, dup := secrets[tok.Secret]; dup {
			return yamlfile.Errorf(path+".secret", "is also the secret of api.tokens[%d]: give each token its own secret", j)
		}
		secrets[tok.Secret] = i
		if err := checkScopes(path+".scopes", tok.Scopes); err != nil {
			return err
		}
	}
	if len(ac.Anonymous) > 0 {
		if err := checkScopes("api.anonymous", ac.Anonymous); err != nil {
			return err
		}
		if !loopbackOnly(c.http.Listen) {
			return yamlfile.Errorf("api.anonymous", "allowed only when http.listen is a loopback address (127.0.0.1:port, [::1]:port or localhost:port), and http.listen is %q: "+
				"listen on 127.0.0.1, or give the clients a token", c.http.Listen)
		}
	}
	if time.Duration(ac.IdempotencyWindow) < 0 {
		return yamlfile.Errorf("api.idempotency_window", "must not be negative (leave it out for 24h)")
	}
	if time.Duration(ac.MaxWait) < 0 {
		return yamlfile.Errorf("api.max_wait", "must not be negative (leave it out for 60s)")
	}
	if ac.MaxBody != 0 && ac.MaxBody < 1<<10 {
		return yamlfile.Errorf("api.max_body", "is %d bytes: allow at least 1KiB (leave it out for 16MiB)", ac.MaxBody)
	}
	stores := c.storeNames()
	for i, name := range ac.Stores {
		path := fmt.Sprintf("api.stores[%d]", i)
		switch c.stream(name).(type) {
		case nil:
			return yamlfile.Errorf(path, "%q is not the name of a stream (stores: %s)", name, yamlfile.QuoteList(stores))
		case intakeSpec:
			return yamlfile.Errorf(path, "%q is an intake, not a store: name a store (%s)", name, yamlfile.QuoteList(stores))
		}
		for j := range i {
			if ac.Stores[j] == name {
				return yamlfile.Errorf(path, "%q is also api.stores[%d]: name each store once", name, j)
			}
		}
	}
	return nil
}

// checkScopes validates a list of scopes at path.
func checkScopes(path string, scopes []string) error {
	for i, s := range scopes {
		ok := false
		for _, known := range apiScopes {
			ok = ok || s == known
		}
		if !ok {
			return yamlfile.Errorf(fmt.Sprintf("%s[%d]", path, i), "%q is not a scope: use %s (admin also grants read and enqueue)", s, yamlfile.QuoteList(apiScopes))
		}
	}
	return nil
}

// loopbackOnly reports whether addr (host:port) listens on a loopback
// interface only: an empty host or 0.0.0.0 listens on every interface.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// envStem turns a token name into the stem of a variable name for the
// error message's example: "billing-app" → "BILLING_APP".
func envStem(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, name)
}

// summary describes the api section for `peonify run --check`.
func (ac *apiConfig) summary() string {
	if ac == nil {
		return ""
	}
	out := fmt.Sprintf("; HTTP API under /v1/ with %d %s", len(ac.Tokens), plural(len(ac.Tokens), "token", "tokens"))
	if len(ac.Anonymous) > 0 {
		out += " and anonymous " + strings.Join(ac.Anonymous, ",")
	}
	return out
}

// apiHandler returns the HTTP API of the api section over the opened
// stores, or nil without an api section. The section was checked with the
// file; what is left to find out is whether a store named in api.stores
// takes enqueued tasks, which only the opened stream knows.
func (c *config) apiHandler(opened map[string]peonify.Stream, log *slog.Logger) (http.Handler, error) {
	ac := c.api
	if ac == nil {
		return nil, nil
	}
	names, explicit := ac.Stores, len(ac.Stores) > 0
	if !explicit {
		names = c.storeNames()
	}
	var stores []httpapi.Store
	for i, name := range names {
		s := opened[name]
		if _, ok := peonify.As[peonify.Enqueuer](s); !ok {
			if explicit {
				return nil, &configError{c.path, yamlfile.Errorf(fmt.Sprintf("api.stores[%d]", i), "stream %q does not take enqueued tasks: name a store that does", name)}
			}
			continue
		}
		stores = append(stores, httpapi.Store{Name: name, Stream: s})
	}
	if len(stores) == 0 {
		return nil, &configError{c.path, yamlfile.Errorf("api", "no store of the file takes enqueued tasks, so the API would have nothing to serve")}
	}
	cfg := httpapi.Config{
		Stores:            stores,
		MaxBody:           int64(ac.MaxBody),
		IdempotencyWindow: time.Duration(ac.IdempotencyWindow),
		MaxWait:           time.Duration(ac.MaxWait),
		StoreTimeout:      c.processor.StoreTimeout, // 0: the API's default, 10s
		Logger:            log,
	}
	for _, tok := range ac.Tokens {
		t := httpapi.Token{Name: tok.Name, Secret: tok.Secret}
		for _, s := range tok.Scopes {
			t.Scopes = append(t.Scopes, httpapi.Scope(s))
		}
		cfg.Tokens = append(cfg.Tokens, t)
	}
	for _, s := range ac.Anonymous {
		cfg.Anonymous = append(cfg.Anonymous, httpapi.Scope(s))
	}
	h, err := httpapi.New(cfg)
	if err != nil {
		return nil, &configError{c.path, fmt.Errorf("api: %w", err)}
	}
	return h, nil
}
