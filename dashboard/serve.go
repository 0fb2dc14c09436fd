package dashboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// CheckAddr reports whether a dashboard configured by cfg may listen on
// addr (host:port): it returns an error if cfg has no Auth and addr can be
// reached from other machines (any address but a loopback one, including
// ":8080" and "0.0.0.0:8080"), or if cfg.Auth is invalid. Listen, Serve and
// ListenAndServe call it; a program that serves the Dashboard with an
// http.Server of its own should call it too.
func CheckAddr(addr string, cfg Config) error {
	if err := cfg.Auth.validate(); err != nil {
		return err
	}
	if cfg.Auth.enabled() {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("dashboard: listen address %q is not host:port: %w", addr, err)
	}
	if isLoopback(host) {
		return nil
	}
	shown := host
	if shown == "" {
		shown = "every interface"
	}
	return fmt.Errorf("dashboard: refusing to serve without authentication on %s (%s), which other machines can reach: "+
		"set Config.Auth.Token (dashboard.NewToken() makes one) or Config.Auth.Username and Password, "+
		"or listen on 127.0.0.1", addr, shown)
}

// isLoopback reports whether host names only this machine.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Listen checks addr with CheckAddr and listens on it, so that the caller
// can learn the port (with addr ":0") before Serve.
func (d *Dashboard) Listen(addr string) (net.Listener, error) {
	if err := CheckAddr(addr, d.cfg); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	return ln, nil
}

// ListenAndServe serves the dashboard on addr until ctx ends, then shuts
// the server down and returns nil. It refuses, with CheckAddr's error, to
// serve a dashboard without Auth on an address other machines can reach.
func (d *Dashboard) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := d.Listen(addr)
	if err != nil {
		return err
	}
	return d.Serve(ctx, ln)
}

// shutdownTimeout bounds the wait for open requests when Serve ends.
const shutdownTimeout = 5 * time.Second

// Serve serves the dashboard on ln until ctx ends, then shuts the server
// down and returns nil; it closes ln. Request contexts end with ctx, so
// that open /events streams do not hold the shutdown. Like Listen, it
// checks ln's address with CheckAddr.
func (d *Dashboard) Serve(ctx context.Context, ln net.Listener) error {
	if err := CheckAddr(ln.Addr().String(), d.cfg); err != nil {
		_ = ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           d,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("dashboard: serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("dashboard: shutting down: %w", err)
	}
	return nil
}

// URL returns the address a browser on this machine opens to reach a
// dashboard served at the root of a listener on addr, such as
// "http://127.0.0.1:8080/". An unspecified host (":8080", "0.0.0.0")
// becomes localhost.
func (d *Dashboard) URL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/"
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// TokenURL is URL with the Auth.Token in its fragment ("#token=..."):
// opening it signs the browser tab in, and the page then removes the token
// from the address bar. A fragment is never sent to the server nor logged
// by proxies, but it is a password: print it only where the operator
// alone sees it. Without a Token, TokenURL is URL.
func (d *Dashboard) TokenURL(addr net.Addr) string {
	u := d.URL(addr)
	if d.cfg.Auth.Token == "" {
		return u
	}
	return u + "#token=" + url.QueryEscape(d.cfg.Auth.Token)
}
