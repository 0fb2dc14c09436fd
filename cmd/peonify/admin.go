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
	"github.com/peonify/peonify/peonifyprom"
)

// This file holds the daemon's own HTTP server, configured by the http
// section: Prometheus metrics, health checks for orchestrators, and the
// dashboard.

// httpConfig is the http section of the file.
type httpConfig struct {
	Listen string `yaml:"listen"` // host:port; the server is off without it
}

func (hc *httpConfig) check() error {
	if hc.Listen == "" {
		return nil
	}
	if err := checkListen(hc.Listen); err != nil {
		return errorf("http.listen", "%v", err)
	}
	return nil
}

// adminServer is the running server of the http section.
type adminServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// startAdmin listens on hc.Listen and serves, until stop:
//
//	/metrics  the processor's metrics (m), and the Go runtime's and the process's
//	/healthz  200 while the process runs
//	/readyz   200 while every stream polls without error and every intake is
//	          connected; 503 with the reasons otherwise, and once shutdown began
//
// draining reports whether shutdown began.
func startAdmin(hc httpConfig, p *peonify.Processor, m *peonifyprom.Metrics, ready []readyCheck, draining func() bool, log *slog.Logger) (*adminServer, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

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
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "peonify: /metrics (Prometheus), /healthz (alive), /readyz (streams and intakes connected)")
	})

	ln, err := net.Listen("tcp", hc.Listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen: %w", err)
	}
	a := &adminServer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)},
		ln:   ln,
		done: make(chan error, 1),
	}
	log.Info("peonify: serving metrics and health checks", "addr", "http://"+ln.Addr().String(),
		"paths", "/metrics /healthz /readyz")
	go func() { a.done <- a.srv.Serve(ln) }()
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close()
	}
	<-a.done
}
