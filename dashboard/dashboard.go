package dashboard

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/peonify/peonify"
)

// Config configures a Dashboard. Everything is optional except that there
// must be something to show: a Processor, a Store, or both.
type Config struct {
	// Processor is the processor whose activity the dashboard shows:
	// throughput, latency per task type, running tasks and stream status.
	// Optional.
	Processor *peonify.Processor

	// Stores are the task stores operators can look into and repair:
	// counts by state, task lists, retry and delete of dead tasks, and
	// pause and resume where the store supports it (see Pauser). Names
	// must be unique and non-empty; they appear in URLs. Optional.
	Stores []Store

	// Auth protects the dashboard. Without it the dashboard is read-only
	// and open to anyone who can reach it, which CheckAddr allows only on a
	// loopback address.
	Auth Auth

	// HidePayload reports whether the payload and headers of tasks of a
	// type must not be shown, for types that carry personal data or
	// secrets. HideTypes builds one from a list of types. Defaults to
	// showing every payload. A task's last error is still shown: a handler
	// of such a type should not quote its payload in errors.
	HidePayload func(taskType string) bool

	// PreviewBytes is how much of a payload the task lists show. Defaults
	// to 200 bytes; a negative value shows no previews at all.
	PreviewBytes int

	// Interval is how often /events pushes a snapshot, and the shortest
	// time between two readings of the stores' counts, whatever the number
	// of open pages. Defaults to 1s; at least 50ms.
	Interval time.Duration

	// Logger receives the dashboard's logs (failed writes of the HTTP
	// server when served with Serve). Defaults to slog.Default().
	Logger *slog.Logger
}

// Store is a task store shown by the dashboard under a name.
type Store struct {
	// Name identifies the store in the page and in API paths
	// (/api/stores/{name}/...).
	Name string

	// Inspector reads and repairs the store's tasks. Every durable stream
	// of Peonify implements it. If it is also a peonify.Tracker and a
	// peonify.WorkflowStore, or a stream through whose wrappers
	// peonify.As finds them, the dashboard shows results and progress,
	// cancels tasks and shows workflows.
	Inspector peonify.Inspector

	// Limiter reports the flow-control limits the store enforces: each
	// limit's tasks in use and waiting, and its busiest keys. Defaults to
	// the Inspector, or, if that is a stream, the first peonify.Limiter
	// that peonify.As finds through its wrappers; a store with neither,
	// or with no limits set, shows no limits.
	Limiter peonify.Limiter
}

// Auth says who may use the dashboard. Set Token, Username and
// Password, or both: either credential is then accepted. With neither, the
// dashboard is read-only.
type Auth struct {
	// Token is accepted as "Authorization: Bearer <Token>". A browser
	// gets it once from a link ending in "#token=<Token>" (see
	// Dashboard.TokenURL) or from the sign-in form, and keeps it for the
	// tab's session. At least 16 bytes; NewToken makes a good one.
	Token string

	// Username and Password are accepted as HTTP basic authentication, for
	// which the browser asks itself. Set both or neither.
	Username string
	Password string
}

// enabled reports whether any credential is configured.
func (a Auth) enabled() bool { return a.Token != "" || a.Username != "" }

func (a Auth) validate() error {
	switch {
	case a.Token != "" && len(a.Token) < minTokenLen:
		return fmt.Errorf("dashboard: Auth.Token is %d bytes long: use at least %d random characters, for example from dashboard.NewToken()", len(a.Token), minTokenLen)
	case a.Username != "" && a.Password == "":
		return errors.New("dashboard: Auth.Username is set without Auth.Password: set both for basic authentication, or neither")
	case a.Username == "" && a.Password != "":
		return errors.New("dashboard: Auth.Password is set without Auth.Username: set both for basic authentication, or neither")
	case strings.Contains(a.Username, ":"):
		return errors.New("dashboard: Auth.Username contains a colon, which basic authentication cannot carry")
	}
	return nil
}

// minTokenLen is the shortest Auth.Token accepted.
const minTokenLen = 16

// NewToken returns a random token of 32 hexadecimal characters (128 bits)
// for Auth.Token.
func NewToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return fmt.Sprintf("%x", b[:])
}

// HideTypes returns a Config.HidePayload that hides the payloads of the
// given task types.
func HideTypes(types ...string) func(taskType string) bool {
	set := make(map[string]bool, len(types))
	for _, t := range types {
		set[t] = true
	}
	return func(taskType string) bool { return set[taskType] }
}

// Pauser is implemented by stores that can stop delivering tasks for a
// while, such as pgstream's Stream. The dashboard offers Pause and Resume
// buttons for a store whose Inspector implements it, or is a stream
// through whose wrappers peonify.As finds it.
type Pauser interface {
	// Pause stops delivery of the store's tasks to every processor.
	Pause(ctx context.Context) error
	// Resume restarts delivery after Pause.
	Resume(ctx context.Context) error
	// Paused reports whether delivery is paused.
	Paused(ctx context.Context) (bool, error)
}

// capabilityOf returns the T of a store, such as its Pauser or its
// peonify.Limiter: its Inspector, or, if that is a stream, the first T
// that peonify.As finds through its wrappers; the zero T (nil for an
// interface) if there is none.
func capabilityOf[T any](in peonify.Inspector) T {
	if t, ok := in.(T); ok {
		return t
	}
	if s, ok := in.(peonify.Stream); ok {
		if t, ok := peonify.As[T](s); ok {
			return t
		}
	}
	var none T
	return none
}

// Dashboard is the web dashboard: an http.Handler serving the page, its
// assets, the JSON API and the /events stream. Create it with New; it is
// safe for concurrent use.
type Dashboard struct {
	cfg       Config
	log       *slog.Logger
	stores    map[string]*store
	order     []*store
	mux       *http.ServeMux
	csrfKey   []byte
	cop       *http.CrossOriginProtection
	snapshots snapshotCache
}

// store is one Config.Stores entry, with its optional capabilities.
type store struct {
	name      string
	insp      peonify.Inspector
	pauser    Pauser                // nil if the store cannot pause
	lim       peonify.Limiter       // nil if the store enforces no limits
	tracker   peonify.Tracker       // nil if the store keeps no results, progress or cancellation
	workflows peonify.WorkflowStore // nil if the store has no workflows
}

// Defaults and bounds of Config fields.
const (
	defaultPreviewBytes = 200
	defaultInterval     = time.Second
	minInterval         = 50 * time.Millisecond
)

// New returns a Dashboard configured by cfg, or an error saying which field
// to fix.
func New(cfg Config) (*Dashboard, error) {
	if cfg.Processor == nil && len(cfg.Stores) == 0 {
		return nil, errors.New("dashboard: nothing to show: set Config.Processor, Config.Stores, or both")
	}
	if err := cfg.Auth.validate(); err != nil {
		return nil, err
	}
	switch {
	case cfg.Interval < 0:
		return nil, fmt.Errorf("dashboard: Config.Interval is %s: use a positive interval, or 0 for %s", cfg.Interval, defaultInterval)
	case cfg.Interval == 0:
		cfg.Interval = defaultInterval
	case cfg.Interval < minInterval:
		return nil, fmt.Errorf("dashboard: Config.Interval is %s: use at least %s", cfg.Interval, minInterval)
	}
	if cfg.PreviewBytes == 0 {
		cfg.PreviewBytes = defaultPreviewBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Dashboard{
		cfg:     cfg,
		log:     cfg.Logger,
		stores:  make(map[string]*store, len(cfg.Stores)),
		csrfKey: make([]byte, 32),
		cop:     http.NewCrossOriginProtection(),
	}
	_, _ = rand.Read(d.csrfKey) // crypto/rand.Read never returns an error
	d.snapshots.sem = make(chan struct{}, 1)
	for i, s := range cfg.Stores {
		switch {
		case s.Name == "":
			return nil, fmt.Errorf("dashboard: Config.Stores[%d] has no Name: give every store a unique name", i)
		case s.Inspector == nil:
			return nil, fmt.Errorf("dashboard: Config.Stores[%d] (%q) has a nil Inspector", i, s.Name)
		case d.stores[s.Name] != nil:
			return nil, fmt.Errorf("dashboard: Config.Stores has two stores named %q: names must be unique", s.Name)
		}
		st := &store{name: s.Name, insp: s.Inspector}
		st.pauser = capabilityOf[Pauser](s.Inspector)
		st.tracker = capabilityOf[peonify.Tracker](s.Inspector)
		st.workflows = capabilityOf[peonify.WorkflowStore](s.Inspector)
		st.lim = s.Limiter
		if st.lim == nil {
			st.lim = capabilityOf[peonify.Limiter](s.Inspector)
		}
		d.stores[s.Name] = st
		d.order = append(d.order, st)
	}
	d.routes()
	return d, nil
}

func (d *Dashboard) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", serveIndex)
	m.HandleFunc("GET /assets/{file}", serveAsset)
	m.HandleFunc("GET /api/session", d.reader(d.serveSession))
	m.HandleFunc("GET /api/stats", d.reader(d.serveStats))
	m.HandleFunc("GET /events", d.reader(d.serveEvents))
	m.HandleFunc("GET /api/stores/{store}/tasks", d.reader(d.withStore(d.serveTasks)))
	m.HandleFunc("GET /api/stores/{store}/tasks/{id}", d.reader(d.withStore(d.serveTask)))
	m.HandleFunc("POST /api/stores/{store}/retry", d.mutator(d.withStore(d.serveRetry)))
	m.HandleFunc("POST /api/stores/{store}/delete", d.mutator(d.withStore(d.serveDelete)))
	m.HandleFunc("POST /api/stores/{store}/cancel", d.mutator(d.withStore(d.serveCancel)))
	m.HandleFunc("GET /api/stores/{store}/workflows/{id}", d.reader(d.withStore(d.serveWorkflow)))
	m.HandleFunc("POST /api/stores/{store}/workflows/{id}/cancel", d.mutator(d.withStore(d.serveCancelWorkflow)))
	m.HandleFunc("POST /api/stores/{store}/pause", d.mutator(d.withStore(d.servePause)))
	m.HandleFunc("POST /api/stores/{store}/resume", d.mutator(d.withStore(d.serveResume)))
	d.mux = m
}

// contentSecurityPolicy allows only the dashboard's own script, style and
// images, and no framing: task data can never run as code in the page.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// ServeHTTP serves the dashboard. Mount it at the root of a server, or
// under a prefix with http.StripPrefix; the page uses relative URLs only.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	switch {
	case r.URL.Path == "":
		// Mounted with http.StripPrefix and requested as the bare prefix.
		p, q, _ := strings.Cut(r.RequestURI, "?")
		if !strings.HasSuffix(p, "/") {
			// "/admin/tasks" → "./tasks/": relative URLs need the
			// trailing slash. A relative Location works behind any
			// prefix and proxy.
			loc := "./" + p[strings.LastIndexByte(p, '/')+1:] + "/"
			if q != "" {
				loc += "?" + q
			}
			w.Header().Set("Location", loc)
			w.WriteHeader(http.StatusMovedPermanently)
			return
		}
		r = withPath(r, "/", "")
	case r.URL.Path[0] != '/':
		// Mounted with a prefix that ends in a slash
		// (http.StripPrefix("/admin/", d)).
		raw := r.URL.RawPath
		if raw != "" {
			raw = "/" + raw
		}
		r = withPath(r, "/"+r.URL.Path, raw)
	}
	d.mux.ServeHTTP(w, r)
}

// withPath returns a copy of r for another path.
func withPath(r *http.Request, path, rawPath string) *http.Request {
	r = r.Clone(r.Context())
	r.URL.Path, r.URL.RawPath = path, rawPath
	return r
}

// storeNames returns the configured store names, in Config order.
func (d *Dashboard) storeNames() []string {
	names := make([]string, len(d.order))
	for i, s := range d.order {
		names[i] = s.name
	}
	return names
}

// snapshotCache shares one snapshot among all the pages open at once.
type snapshotCache struct {
	sem  chan struct{} // held while a snapshot is built
	mu   sync.Mutex
	at   time.Time
	json []byte
	gen  uint64 // bumped by invalidate
}

var _ http.Handler = (*Dashboard)(nil)

// hidden reports whether payloads of taskType must not be shown.
func (d *Dashboard) hidden(taskType string) bool {
	return d.cfg.HidePayload != nil && d.cfg.HidePayload(taskType)
}
