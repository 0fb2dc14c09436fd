package httpapi

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"time"

	"github.com/peonify/peonify"
)

// Scope is a permission a Token grants.
type Scope string

// The scopes of the API.
const (
	// ScopeEnqueue allows POST /v1/tasks, /v1/tasks/batch and
	// /v1/workflows.
	ScopeEnqueue Scope = "enqueue"
	// ScopeRead allows every GET.
	ScopeRead Scope = "read"
	// ScopeAdmin allows cancel, retry and delete, and implies ScopeRead and
	// ScopeEnqueue.
	ScopeAdmin Scope = "admin"
)

// Token is a bearer token accepted as "Authorization: Bearer <Secret>".
type Token struct {
	// Name identifies the token in logs and scopes its Idempotency-Keys:
	// the same key sent with two tokens names two requests. Unique and
	// non-empty.
	Name string

	// Secret is the token's value. It is compared in constant time, over
	// its SHA-256 hash so that its length does not leak either. Required;
	// use at least 32 random characters.
	Secret string

	// Scopes are what the token may do. At least one.
	Scopes []Scope
}

// Store is a task store the API exposes under a name.
type Store struct {
	// Name identifies the store in requests ("store") and answers. Unique
	// and non-empty.
	Name string

	// Stream is the store. The API finds what it can do with peonify.As:
	// enqueue (peonify.Enqueuer), read, retry and delete
	// (peonify.Inspector), cancel, results and ?wait (peonify.Tracker),
	// and workflows (peonify.WorkflowStore). A route the store cannot
	// serve answers 501.
	Stream peonify.Stream
}

// Defaults of Config fields.
const (
	DefaultMaxBody           = 16 << 20
	DefaultIdempotencyWindow = 24 * time.Hour
	DefaultMaxWait           = 60 * time.Second
	DefaultStoreTimeout      = 10 * time.Second
)

// MaxBatch is the most tasks one POST /v1/tasks/batch or POST
// /v1/workflows takes.
const MaxBatch = 10_000

// Config configures a Handler.
type Config struct {
	// Stores are the stores the API exposes. The first is the target of an
	// enqueue that names no "store". At least one.
	Stores []Store

	// Tokens are the accepted bearer tokens.
	Tokens []Token

	// Anonymous are the scopes granted to a request without an
	// Authorization header. Empty by default: such a request is refused
	// with 401. Grant scopes here only where the listener is reachable by
	// trusted clients alone (the daemon allows it only on a loopback
	// listener, and only when its config says so).
	Anonymous []Scope

	// MaxBody bounds a request body, in bytes; a larger one is refused
	// with 413. Zero means DefaultMaxBody (16 MiB).
	MaxBody int64

	// IdempotencyWindow is how long this Handler remembers the answer to a
	// request with an Idempotency-Key, so that a retry is answered the same
	// even after the store forgot the task (it ran and was deleted). Zero
	// means DefaultIdempotencyWindow (24h). Beyond the window, and across
	// restarts of the Handler, a retry is still recognised while the store
	// holds the task or detects its ID as a duplicate (see the package
	// documentation).
	IdempotencyWindow time.Duration

	// MaxWait caps GET /v1/tasks/{id}?wait=; a longer wait is cut to it.
	// Zero means DefaultMaxWait (60s).
	MaxWait time.Duration

	// StoreTimeout bounds each call to a store; a call that takes longer
	// is answered with 503 and Retry-After. Zero means
	// DefaultStoreTimeout (10s).
	StoreTimeout time.Duration

	// Logger receives the API's logs (store failures). Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// scopes is a set of granted scopes.
type scopes uint8

const (
	canEnqueue scopes = 1 << iota
	canRead
	canAdmin
)

func (s scopes) has(want Scope) bool {
	if s&canAdmin != 0 {
		return true
	}
	switch want {
	case ScopeEnqueue:
		return s&canEnqueue != 0
	case ScopeRead:
		return s&canRead != 0
	}
	return false
}

func parseScopes(field string, list []Scope) (scopes, error) {
	var s scopes
	for i, sc := range list {
		switch sc {
		case ScopeEnqueue:
			s |= canEnqueue
		case ScopeRead:
			s |= canRead
		case ScopeAdmin:
			s |= canAdmin
		default:
			return 0, &peonify.ConfigError{Field: fmt.Sprintf("%s[%d]", field, i),
				Reason: fmt.Sprintf("unknown scope %q: use %q, %q or %q", sc, ScopeEnqueue, ScopeRead, ScopeAdmin)}
		}
	}
	return s, nil
}

// token is a configured Token, ready for comparison.
type token struct {
	name   string
	hash   [sha256.Size]byte
	scopes scopes
}

func (c *Config) check() ([]token, scopes, error) {
	if len(c.Stores) == 0 {
		return nil, 0, &peonify.ConfigError{Field: "httpapi.Config.Stores", Reason: "is empty: give the API at least one store"}
	}
	names := make(map[string]bool, len(c.Stores))
	for i, s := range c.Stores {
		f := fmt.Sprintf("httpapi.Config.Stores[%d]", i)
		switch {
		case s.Name == "":
			return nil, 0, &peonify.ConfigError{Field: f + ".Name", Reason: "is empty: give every store a unique name"}
		case names[s.Name]:
			return nil, 0, &peonify.ConfigError{Field: f + ".Name", Reason: fmt.Sprintf("%q is the name of another store: names must be unique", s.Name)}
		case s.Stream == nil:
			return nil, 0, &peonify.ConfigError{Field: f + ".Stream", Reason: fmt.Sprintf("is nil (store %q)", s.Name)}
		}
		names[s.Name] = true
	}
	toks := make([]token, 0, len(c.Tokens))
	tnames := make(map[string]bool, len(c.Tokens))
	for i, t := range c.Tokens {
		f := fmt.Sprintf("httpapi.Config.Tokens[%d]", i)
		switch {
		case t.Name == "":
			return nil, 0, &peonify.ConfigError{Field: f + ".Name", Reason: "is empty: name every token (logs and Idempotency-Keys use the name)"}
		case tnames[t.Name]:
			return nil, 0, &peonify.ConfigError{Field: f + ".Name", Reason: fmt.Sprintf("%q is the name of another token: names must be unique", t.Name)}
		case t.Secret == "":
			return nil, 0, &peonify.ConfigError{Field: f + ".Secret", Reason: fmt.Sprintf("is empty (token %q): set a random secret of at least 32 characters", t.Name)}
		case len(t.Scopes) == 0:
			return nil, 0, &peonify.ConfigError{Field: f + ".Scopes", Reason: fmt.Sprintf("is empty (token %q): grant enqueue, read or admin", t.Name)}
		}
		for _, o := range toks {
			if o.hash == sha256.Sum256([]byte(t.Secret)) {
				return nil, 0, &peonify.ConfigError{Field: f + ".Secret", Reason: fmt.Sprintf("is the secret of token %q too: give every token its own secret", o.name)}
			}
		}
		tnames[t.Name] = true
		sc, err := parseScopes(f+".Scopes", t.Scopes)
		if err != nil {
			return nil, 0, err
		}
		toks = append(toks, token{name: t.Name, hash: sha256.Sum256([]byte(t.Secret)), scopes: sc})
	}
	anon, err := parseScopes("httpapi.Config.Anonymous", c.Anonymous)
	if err != nil {
		return nil, 0, err
	}
	if len(toks) == 0 && anon == 0 {
		return nil, 0, &peonify.ConfigError{Field: "httpapi.Config.Tokens", Reason: "is empty and Config.Anonymous grants nothing: no request could use the API; add a token"}
	}
	for _, d := range []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{
		{"IdempotencyWindow", &c.IdempotencyWindow, DefaultIdempotencyWindow},
		{"MaxWait", &c.MaxWait, DefaultMaxWait},
		{"StoreTimeout", &c.StoreTimeout, DefaultStoreTimeout},
	} {
		switch {
		case *d.v < 0:
			return nil, 0, &peonify.ConfigError{Field: "httpapi.Config." + d.field, Reason: fmt.Sprintf("is %s: must not be negative (0 means %s)", *d.v, d.def)}
		case *d.v == 0:
			*d.v = d.def
		}
	}
	switch {
	case c.MaxBody < 0:
		return nil, 0, &peonify.ConfigError{Field: "httpapi.Config.MaxBody", Reason: fmt.Sprintf("is %d: must not be negative (0 means %d bytes)", c.MaxBody, DefaultMaxBody)}
	case c.MaxBody == 0:
		c.MaxBody = DefaultMaxBody
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return toks, anon, nil
}
