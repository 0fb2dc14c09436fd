package main

import (
	"log/slog"
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

// opsCollectors returns the daemon's collectors besides the processor's
// and the build's: the store metrics of the stores that have an
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
	return []prometheus.Collector{sm}, nil
}
