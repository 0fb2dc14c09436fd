package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/peonifyprom"
)

// This file holds the daemon's own HTTP server, configured by the http
// section: Prometheus metrics, health checks for orchestrators, and the
// dashboard.

// httpConfig is the http section of the file.
type httpConfig struct {
	Listen    string          `yaml:"listen"`   // host:port; the server is off without it
	TLSCert   string          `yaml:"tls_cert"` // serve HTTPS with this certificate (PEM) ...
	TLSKey    string          `yaml:"tls_key"`  // ... and this private key (PEM)
	Dashboard dashboardConfig `yaml:"dashboard"`
	// StoreMetricsInterval is how often the stores are queried for
	// peonify_store_* (see metrics.go); defaults to 15s.
	StoreMetricsInterval yamlfile.Duration `yaml:"store_metrics_interval"`
}

// dashboardConfig is the http.dashboard section.
type dashboardConfig struct {
	Enabled      *bool    `yaml:"enabled"`       // defaults to true
	Token        string   `yaml:"token"`         // a bearer token of at least 16 bytes
	Username     string   `yaml:"username"`      // basic authentication, with password
	Password     string   `yaml:"password"`      //
	HidePayloads []string `yaml:"hide_payloads"` // task types whose payloads and headers are not shown
}

// on reports whether the dashboard is served.
func (dc *dashboardConfig) on() bool { return dc.Enabled == nil || *dc.Enabled }

// config returns the dashboard.Config of the section, without the
// processor and stores.
func (dc *dashboardConfig) config(log *slog.Logger) dashboard.Config {
	cfg := dashboard.Config{
		Auth:   dashboard.Auth{Token: dc.Token, Username: dc.Username, Password: dc.Password},
		Logger: log,
	}
	if len(dc.HidePayloads) > 0 {
		cfg.HidePayload = dashboard.HideTypes(dc.HidePayloads...)
	}
	return cfg
}

func (hc *httpConfig) check() error {
	if hc.Listen == "" {
		if hc.Dashboard.Enabled != nil || hc.Dashboard.Token != "" || hc.Dashboard.Username != "" {
			return yamlfile.Errorf("http.listen", "required with http.dashboard: the address to serve on, e.g. 127.0.0.1:9090")
		}
		if hc.TLSCert != "" || hc.TLSKey != "" {
			return yamlfile.Errorf("http.listen", "required with http.tls_cert: the address to serve on, e.g. :9443")
		}
		return nil
	}
	if err := (&serverFields{Listen: hc.Listen, TLSCert: hc.TLSCert, TLSKey: hc.TLSKey}).check("http"); err != nil {
		return err
	}
	dc := &hc.Dashboard
	if !dc.on() {
		return nil
	}
	switch {
	case dc.Token != "" && len(dc.Token) < 16:
		return yamlfile.Errorf("http.dashboard.token", "is %d bytes long: use at least 16 random characters (e.g. from: openssl rand -hex 16)", len(dc.Token))
	case dc.Username != "" && dc.Password == "":
		return yamlfile.Errorf("http.dashboard.password", "required with username: set both for basic authentication, or neither")
	case dc.Username == "" && dc.Password != "":
		return yamlfile.Errorf("http.dashboard.username", "required with password: set both for basic authentication, or neither")
	}
	if err := dashboard.CheckAddr(hc.Listen, dc.config(nil)); err != nil {
		if dc.Token == "" && dc.Username == "" {
			return yamlfile.Errorf("http.dashboard.token", "required when http.listen (%s) can be reached from other machines: "+
				"set a token (e.g. ${PEONIFY_DASHBOARD_TOKEN}) or username and password, listen on 127.0.0.1, or set dashboard: {enabled: false}", hc.Listen)
		}
		return yamlfile.Errorf("http.dashboard", "%v", err)
	}
	return nil
}

// adminServer is the running server of the http section.
type adminServer struct {
	srv    *http.Server
	ln     net.Listener
	done   chan error
	cancel context.CancelFunc // ends the requests' context: the dashboard's event streams
}

// startAdmin listens on hc.Listen and serves, until stop:
//
//	/metrics  the processor's metrics (m), and the Go runtime's and the process's
//	/healthz  200 while the process runs
//	/readyz   200 while every stream polls without error and every intake is
//	          connected; 503 with the reasons otherwise, and once shutdown began
//	/dashboard/  the dashboard of p and of stores, unless turned off
//	/v1/      api, the HTTP API of the api section, if not nil
//
// draining reports whether shutdown began.
func startAdmin(hc httpConfig, p *peonify.Processor, stores []dashboard.Store, m *peonifyprom.Metrics, ready []readyCheck, draining func() bool, log *slog.Logger, api http.Handler) (*adminServer, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), readBuildInfo().collector())
	ops, err := opsCollectors(hc, stores, log)
	if err != nil {
		return nil, err
	}
	reg.MustRegister(ops...)

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError), Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		problems := notReady(p.Stats(), ready, draining())
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(problems, "\n"))
			return
		}
		fmt.Fprintln(w, "ok")
	})
	index := "peonify: /metrics (Prometheus), /healthz (alive), /readyz (streams and intakes connected)"
	var dash *dashboard.Dashboard
	if hc.Dashboard.on() {
		dcfg := hc.Dashboard.config(log)
		dcfg.Processor, dcfg.Stores = p, stores
		var err error
		if dash, err = dashboard.New(dcfg); err != nil {
			return nil, err
		}
		mux.Handle("/dashboard/", http.StripPrefix("/dashboard", dash))
		index += ", /dashboard/"
	}
	if api != nil {
		mux.Handle("/v1/", api)
		index += ", /v1/ (the HTTP API; its OpenAPI document at /v1/openapi.json)"
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, index)
	})

	ln, err := net.Listen("tcp", hc.Listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen: %w", err)
	}
	base, cancel := context.WithCancel(context.Background())
	a := &adminServer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			BaseContext: func(net.Listener) context.Context { return base },
			ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelDebug)},
		ln:     ln,
		done:   make(chan error, 1),
		cancel: cancel,
	}
	scheme := "http"
	if hc.TLSCert != "" {
		scheme = "https"
	}
	log.Info("peonify: serving metrics and health checks", "addr", scheme+"://"+ln.Addr().String(),
		"paths", "/metrics /healthz /readyz")
	if dash != nil {
		// The token is a password: it is not logged, and the operator
		// opens the URL and signs in with it.
		url := strings.TrimSuffix(dash.URL(ln.Addr()), "/") + "/dashboard/"
		if scheme == "https" {
			url = "https" + strings.TrimPrefix(url, "http")
		}
		log.Info("peonify: serving the dashboard", "url", url)
	}
	if api != nil {
		log.Info("peonify: serving the HTTP API", "url", scheme+"://"+ln.Addr().String()+"/v1/")
	}
	go func() {
		if hc.TLSCert != "" {
			a.done <- a.srv.ServeTLS(ln, hc.TLSCert, hc.TLSKey) // loaded once by the config check
			return
		}
		a.done <- a.srv.Serve(ln)
	}()
	return a, nil
}

// notReady lists why the processor is not ready to take work: a stream
// whose polling fails (with its last error), an intake that is not
// connected, or shutdown under way. None means ready.
func notReady(st peonify.Stats, ready []readyCheck, draining bool) []string {
	var out []string
	if draining {
		out = append(out, "shutting down")
	}
	for _, s := range st.Streams {
		if s.BackingOff {
			out = append(out, fmt.Sprintf("stream %q: polling fails: %s", s.Name, s.LastError))
		}
	}
	for _, rc := range ready {
		if err := rc.check(); err != nil {
			out = append(out, err.Error())
		}
	}
	return out
}

// stop shuts the server down, waiting a little for scrapes in flight.
func (a *adminServer) stop() {
	a.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), adminStopTimeout)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close()
	}
	<-a.done
}

// adminStopTimeout bounds how long stop waits for scrapes in flight.
const adminStopTimeout = 5 * time.Second
