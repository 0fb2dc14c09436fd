package main

import (
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/peonifyprom"
)

// checkMetrics validates the http section's metrics settings.
func (hc *httpConfig) checkMetrics() error {
	if hc.StoreMetricsInterval < 0 {
		return yamlfile.Errorf("http.store_metrics_interval", "must not be negative (leave it out for 15s)")
	}
	return nil
}

// opsCollectors returns the daemon's collectors besides the processor's:
// peonify_build_info and the store metrics of the stores that have an
// Inspector (peonifyprom.StoreMetrics), queried at most once per
// http.store_metrics_interval whatever the scrape rate.
func opsCollectors(hc httpConfig, stores []dashboard.Store, log *slog.Logger) ([]prometheus.Collector, error) {
	sm, err := peonifyprom.NewStoreMetrics(peonifyprom.StoreConfig{Interval: time.Duration(hc.StoreMetricsInterval)})
	if err != nil {
		return nil, err
	}
	for _, s := range stores {
		if err := sm.AddStore(s.Name, s.Inspector); err != nil {
			return nil, err
		}
	}
	version, commit, goversion := buildInfo()
	log.Debug("peonify: build", "version", version, "commit", commit, "go", goversion)
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "peonify_build_info",
		Help:        "Always 1; the labels say which build of peonify runs, from its Go build info.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": goversion},
	})
	bi.Set(1)
	return []prometheus.Collector{bi, sm}, nil
}

// buildInfo returns the module version ("(devel)" from a checkout), the
// VCS revision with "-modified" when the tree had changes ("unknown" when
// the build recorded none) and the Go version of this binary.
func buildInfo() (version, commit, goversion string) {
	version, commit, goversion = "(unknown)", "unknown", runtime.Version()
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	if bi.Main.Version != "" {
		version = bi.Main.Version
	}
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && commit != "unknown" {
		commit = fmt.Sprintf("%s-modified", commit)
	}
	return
}
