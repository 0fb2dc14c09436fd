package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
)

// apiBase is a file with two stores, an intake and an http listener on
// loopback, to which the tests add an api section.
const apiBase = `
streams:
  - {kind: sqlite, name: main, path: main.db}
  - {kind: sqlite, name: billing, path: billing.db}
  - {kind: webhook, name: hooks, listen: 127.0.0.1:0, store: main, routes: [{path: /x, type: email, verify: none}]}
tasks:
  email: {executor: http, url: http://mailer.internal/send}
http:
  listen: 127.0.0.1:9090
`

func TestParseAPIConfig(t *testing.T) {
	c, err := parseConfig([]byte(apiBase+`
api:
  tokens:
    - name: billing
      secret: ${BILLING_API_TOKEN}
      scopes: [enqueue, read]
    - {name: ops, secret: "${OPS_TOKEN:-0123456789abcdef0}", scopes: [admin]}
  anonymous: [read]
  max_body: 1MiB
  idempotency_window: 2h
  max_wait: 30s
  stores: [billing, main]
`), env(map[string]string{"BILLING_API_TOKEN": "s3cret-s3cret-s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	ac := c.api
	if ac == nil || len(ac.Tokens) != 2 || ac.Tokens[0].Secret != "s3cret-s3cret-s3cret" || ac.Tokens[1].Secret != "0123456789abcdef0" ||
		strings.Join(ac.Tokens[0].Scopes, ",") != "enqueue,read" || ac.MaxBody != 1<<20 ||
		time.Duration(ac.IdempotencyWindow) != 2*time.Hour || time.Duration(ac.MaxWait) != 30*time.Second ||
		strings.Join(ac.Stores, ",") != "billing,main" || strings.Join(ac.Anonymous, ",") != "read" {
		t.Errorf("api section %+v", ac)
	}
	if s := c.summary(); !strings.Contains(s, "HTTP API under /v1/ with 2 tokens and anonymous read") {
		t.Errorf("summary %q", s)
	}
	c, err = parseConfig([]byte(apiBase), env(nil))
	if err != nil || c.api != nil {
		t.Errorf("without an api section: %v, %+v", err, c)
	}
}

func TestAPIConfigErrors(t *testing.T) {
	tok := func(fields string) string { return "api:\n  tokens:\n    - " + fields + "\n" }
	const good = `name: a, secret: 0123456789abcdef, scopes: [read]`
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"no http listener", base + tok("{"+good+"}"), "api: needs http.listen"},
		{"empty section", apiBase + "api: {}\n", "api.tokens: required: list at least one token"},
		{"unknown field", apiBase + "api:\n  token: []\n", "api.token: unknown field (fields of api: tokens, anonymous, max_body, idempotency_window, max_wait, stores)"},
		{"no name", apiBase + tok("{secret: 0123456789abcdef, scopes: [read]}"), "api.tokens[0].name: required"},
		{"empty secret", apiBase + tok("{name: billing-app, secret: '${EMPTY}', scopes: [read]}"),
			"api.tokens[0].secret: required and must not be empty: set it from the environment, e.g. ${BILLING_APP_API_TOKEN}"},
		{"unset secret", apiBase + tok("{name: a, secret: '${UNSET}', scopes: [read]}"), "api.tokens[0].secret: environment variable UNSET is not set"},
		{"short secret", apiBase + tok("{name: a, secret: short, scopes: [read]}"), "api.tokens[0].secret: is 5 bytes long: use at least 16"},
		{"no scopes", apiBase + tok("{name: a, secret: 0123456789abcdef}"), `api.tokens[0].scopes: required: list what the token may do ("enqueue", "read", "admin")`},
		{"unknown scope", apiBase + tok("{name: a, secret: 0123456789abcdef, scopes: [read, write]}"), `api.tokens[0].scopes[1]: "write" is not a scope`},
		{"duplicate name", apiBase + tok("{"+good+"}") + "    - {name: a, secret: 0123456789abcdefX, scopes: [read]}\n", `api.tokens[1].name: "a" is also the name of api.tokens[0]`},
		{"duplicate secret", apiBase + tok("{"+good+"}") + "    - {name: b, secret: 0123456789abcdef, scopes: [read]}\n", "api.tokens[1].secret: is also the secret of api.tokens[0]"},
		{"anonymous on every interface", strings.Replace(apiBase, "127.0.0.1:9090", ":9090\n  dashboard: {enabled: false}", 1) + "api:\n  anonymous: [read]\n",
			`api.anonymous: allowed only when http.listen is a loopback address (127.0.0.1:port, [::1]:port or localhost:port), and http.listen is ":9090"`},
		{"anonymous on a public address", strings.Replace(apiBase, "127.0.0.1:9090", "10.1.2.3:9090\n  dashboard: {enabled: false}", 1) + tok("{"+good+"}") + "  anonymous: [enqueue]\n",
			"api.anonymous: allowed only when http.listen is a loopback address"},
		{"bad anonymous scope", apiBase + "api:\n  anonymous: [everything]\n", `api.anonymous[0]: "everything" is not a scope`},
		{"negative window", apiBase + tok("{"+good+"}") + "  idempotency_window: -1h\n", "api.idempotency_window: must not be negative"},
		{"negative max_wait", apiBase + tok("{"+good+"}") + "  max_wait: -1s\n", "api.max_wait: must not be negative"},
		{"tiny body", apiBase + tok("{"+good+"}") + "  max_body: 100\n", "api.max_body: is 100 bytes: allow at least 1KiB"},
		{"bad body size", apiBase + tok("{"+good+"}") + "  max_body: lots\n", `api.max_body: "lots" is not a size`},
		{"unknown store", apiBase + tok("{"+good+"}") + "  stores: [main, mian]\n", `api.stores[1]: "mian" is not the name of a stream (stores: "main", "billing")`},
		{"intake as store", apiBase + tok("{"+good+"}") + "  stores: [hooks]\n", `api.stores[0]: "hooks" is an intake, not a store`},
		{"store twice", apiBase + tok("{"+good+"}") + "  stores: [main, main]\n", `api.stores[1]: "main" is also api.stores[0]`},
		{"tls key without cert", apiBase + "  tls_key: key.pem\n", "http.tls_cert: required with tls_key"},
		{"tls without listen", base + "http:\n  tls_cert: c.pem\n  tls_key: k.pem\n", "http.listen: required with http.tls_cert"},
		{"tls files missing", apiBase + "  tls_cert: nope.pem\n  tls_key: nope.key\n", "http.tls_cert: cannot load the certificate and key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.yaml), env(map[string]string{"EMPTY": ""}))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	// Anonymous access on a loopback listener is accepted when asked for.
	for _, listen := range []string{"127.0.0.1:9090", "'[::1]:9090'", "localhost:9090", "127.0.0.2:0"} {
		if _, err := parseConfig([]byte(strings.Replace(apiBase, "127.0.0.1:9090", listen, 1)+"api:\n  anonymous: [enqueue, read]\n"), env(nil)); err != nil {
			t.Errorf("anonymous on %s: %v", listen, err)
		}
	}
}

// An api error points at its line, from `peonify run --check` too.
func TestAPIConfigErrorLine(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "peonify.yaml", strings.Replace(apiBase, "127.0.0.1:9090", "0.0.0.0:9090\n  dashboard: {enabled: false}", 1)+
		"api:\n  tokens:\n    - {name: a, secret: 0123456789abcdef, scopes: [read]}\n  anonymous: [read]\n")
	r := run(t, dir, "", "run", "-c", "peonify.yaml", "--check")
	if want := "peonify.yaml:14:14: api.anonymous: allowed only when http.listen is a loopback address"; r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("run --check: %s\nwant exit status 2 and %q", r, want)
	}
	writeFile(t, dir, "peonify.yaml", apiBase+"api:\n  tokens:\n    - {name: a, secret: '${A_TOKEN}', scopes: [read]}\n")
	r = run(t, dir, "", "run", "-c", "peonify.yaml", "--check")
	if want := "peonify.yaml:12:25: api.tokens[0].secret: environment variable A_TOKEN is not set"; r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("run --check: %s\nwant exit status 2 and %q", r, want)
	}
}

// With tls_cert and tls_key, the http listener speaks HTTPS only.
func TestHTTPListenerTLS(t *testing.T) {
	d, addr, c := startHTTPSDaemon(t, `
streams:
  - {kind: sqlite, name: main, path: store.db}
tasks:
  resize: {executor: exec, command: [cat], stdout: result}
`, 10*time.Second)
	resp, err := c.Get(addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "ok\n" {
		t.Errorf("GET /healthz over HTTPS: %d %q", resp.StatusCode, b)
	}
	if resp, err := http.Get("http://" + strings.TrimPrefix(addr, "https://") + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("/healthz answered plain HTTP on a TLS listener")
		}
	}
	if code, log := d.stop(); code != 0 {
		t.Errorf("exit status %d after SIGTERM; log:\n%s", code, log)
	}
}

// startHTTPSDaemon starts the daemon on config, a file without an http
// section, with an http listener on loopback that serves HTTPS with a
// self-signed certificate. It returns once the daemon runs, with the
// listener's https:// address and a client with timeout that trusts the
// certificate.
func startHTTPSDaemon(t *testing.T, config string, timeout time.Duration) (*daemonProc, string, *http.Client) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, pool := selfSignedCert(t, dir)
	writeFile(t, dir, "peonify.yaml", config+fmt.Sprintf(`
http:
  listen: 127.0.0.1:0
  tls_cert: %s
  tls_key: %s
`, certFile, keyFile))
	d := startDaemon(t, dir, "peonify.yaml")
	addr := d.listenAddr("serving metrics and health checks")
	if !strings.HasPrefix(addr, "https://") {
		t.Fatalf("the http listener's address is %s, want https://", addr)
	}
	d.waitLog("peonify: running")
	return d, addr, &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key to dir,
// and returns their paths and a pool that trusts it.
func selfSignedCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "peonify test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return certFile, keyFile, pool
}

// Every field of the api section is in the README's reference.
func TestREADMEDocumentsAPIFields(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{apiConfig{}, apiToken{}} {
		for _, name := range yamlfile.Names(reflect.TypeOf(v)) {
			if !regexp.MustCompile(`(?m)^[ #-]*` + name + `:`).Match(readme) {
				t.Errorf("README.md does not show the field %s of %T", name, v)
			}
		}
	}
}
