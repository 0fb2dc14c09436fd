package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
)

// Names of the CSRF cookie and header (see the package documentation).
const (
	csrfCookie = "peonify_csrf"
	csrfHeader = "X-CSRF-Token"
)

// csrfNonceLen and the HMAC-SHA256 size make up a CSRF token.
const csrfNonceLen = 16

// reader wraps a read-only API handler: it needs authentication when Auth
// is configured, and is open otherwise.
func (d *Dashboard) reader(h func(http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if _, ok := d.authenticate(r); !ok {
			d.unauthorized(w)
			return
		}
		h(w, r)
	}
}

// mutator wraps a handler that changes a store. It needs, in this order:
// authentication (401), configured authentication (403: without it the
// dashboard is read-only), a same-origin request (403, by
// http.CrossOriginProtection), and a valid CSRF token in both the cookie
// and the header (403).
func (d *Dashboard) mutator(h func(http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		id, ok := d.authenticate(r)
		switch {
		case !ok:
			d.unauthorized(w)
		case !d.cfg.Auth.enabled():
			writeError(w, http.StatusForbidden, "read_only",
				"this dashboard is read-only: configure dashboard.Config.Auth (a Token, or a Username and Password) to retry, cancel, delete, pause or resume")
		case d.cop.Check(r) != nil:
			writeError(w, http.StatusForbidden, "cross_origin",
				"cross-origin request refused: changes can only be made from the dashboard's own page")
		case !d.validCSRF(r, id):
			writeError(w, http.StatusForbidden, "csrf",
				"missing or invalid CSRF token: GET api/session first, then send its csrf value in the "+
					csrfHeader+" header along with the "+csrfCookie+" cookie it sets")
		default:
			h(w, r)
		}
	}
}

// authenticate checks the request's credentials. It returns the identity
// that CSRF tokens are bound to, and true if the request may go on: it
// carries a valid credential, or none is configured.
func (d *Dashboard) authenticate(r *http.Request) (string, bool) {
	a := d.cfg.Auth
	if !a.enabled() {
		return "", true
	}
	authz := r.Header.Get("Authorization")
	if a.Token != "" {
		if scheme, tok, ok := strings.Cut(authz, " "); ok && strings.EqualFold(scheme, "Bearer") {
			if secretEqual(strings.TrimSpace(tok), a.Token) {
				return "token", true
			}
			return "", false
		}
	}
	if a.Username != "" {
		if user, pass, ok := r.BasicAuth(); ok {
			// Compare both, always, so that the time taken does not tell
			// which one was wrong.
			u := secretEqual(user, a.Username)
			p := secretEqual(pass, a.Password)
			if u && p {
				return "basic:" + user, true
			}
		}
	}
	return "", false
}

// secretEqual compares two secrets in time that depends on neither
// content nor length.
func secretEqual(got, want string) bool {
	g := sha256.Sum256([]byte(got))
	w := sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// unauthorized answers 401 with the challenges of the configured schemes.
// The basic challenge makes a browser ask for a user name and password.
func (d *Dashboard) unauthorized(w http.ResponseWriter) {
	a := d.cfg.Auth
	if a.Username != "" {
		w.Header().Add("WWW-Authenticate", `Basic realm="Peonify dashboard", charset="UTF-8"`)
	}
	if a.Token != "" {
		w.Header().Add("WWW-Authenticate", `Bearer realm="Peonify dashboard"`)
	}
	writeError(w, http.StatusUnauthorized, "unauthorized",
		"authentication required: send the dashboard token as \"Authorization: Bearer <token>\", or the configured user name and password")
}

// newCSRF returns a new CSRF token for identity: a random nonce and an
// HMAC of it and the identity under this Dashboard's key.
func (d *Dashboard) newCSRF(identity string) string {
	b := make([]byte, csrfNonceLen, csrfNonceLen+sha256.Size)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error
	b = append(b, d.csrfMAC(b, identity)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (d *Dashboard) csrfMAC(nonce []byte, identity string) []byte {
	m := hmac.New(sha256.New, d.csrfKey)
	m.Write([]byte("peonify dashboard csrf\x00"))
	m.Write([]byte(identity))
	m.Write([]byte{0})
	m.Write(nonce)
	return m.Sum(nil)
}

// validCSRF reports whether the request carries the same CSRF token in its
// cookie and its header, and the token was made by this Dashboard for the
// request's identity.
func (d *Dashboard) validCSRF(r *http.Request, identity string) bool {
	h := r.Header.Get(csrfHeader)
	c, err := r.Cookie(csrfCookie)
	if h == "" || err != nil || subtle.ConstantTimeCompare([]byte(h), []byte(c.Value)) != 1 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil || len(b) != csrfNonceLen+sha256.Size {
		return false
	}
	return hmac.Equal(b[csrfNonceLen:], d.csrfMAC(b[:csrfNonceLen], identity))
}

// Session describes the dashboard to its page: GET /api/session.
type Session struct {
	// Auth lists the accepted credentials: "token", "basic", or none.
	Auth []string `json:"auth"`

	// CanMutate is true when retry, cancel, delete, pause and resume are
	// allowed.
	CanMutate bool `json:"canMutate"`

	// CSRF is the token to send in the X-CSRF-Token header of every POST,
	// along with the cookie this response sets. Empty when CanMutate is
	// false.
	CSRF string `json:"csrf,omitempty"`

	// Processor is true when the dashboard shows a processor.
	Processor bool `json:"processor"`

	// Stores names the stores, in order.
	Stores []string `json:"stores"`

	// IntervalMs is the time between two snapshots on /events.
	IntervalMs int64 `json:"intervalMs"`
}

func (d *Dashboard) serveSession(w http.ResponseWriter, r *http.Request) {
	s := Session{
		Auth:       []string{},
		CanMutate:  d.cfg.Auth.enabled(),
		Processor:  d.cfg.Processor != nil,
		Stores:     d.storeNames(),
		IntervalMs: d.cfg.Interval.Milliseconds(),
	}
	if d.cfg.Auth.Token != "" {
		s.Auth = append(s.Auth, "token")
	}
	if d.cfg.Auth.Username != "" {
		s.Auth = append(s.Auth, "basic")
	}
	if s.CanMutate {
		id, _ := d.authenticate(r)
		s.CSRF = d.newCSRF(id)
		// No Path: the browser scopes the cookie to this response's
		// directory (".../api"), which holds every POST endpoint, under
		// whatever prefix the dashboard is mounted.
		http.SetCookie(w, &http.Cookie{
			Name:     csrfCookie,
			Value:    s.CSRF,
			HttpOnly: true,
			Secure:   r.TLS != nil,
			SameSite: http.SameSiteStrictMode,
		})
	}
	writeJSON(w, http.StatusOK, s)
}
