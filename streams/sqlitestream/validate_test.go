package sqlitestream_test

import (
	"errors"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// TestConfigValidate checks that a config is checked without a client or
// a server, and that an error names the field at fault in Go terms.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   sqlitestream.Config
		field string // "" for a valid config
	}{
		{"zero", sqlitestream.Config{}, ""},
		{"negative lease", sqlitestream.Config{Lease: -time.Second}, "sqlitestream.Config.Lease"},
		{"negative keep done", sqlitestream.Config{KeepDone: -1}, "sqlitestream.Config.KeepDone"},
		{"negative busy timeout", sqlitestream.Config{BusyTimeout: -1}, "sqlitestream.Config.BusyTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ce *peonify.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("Validate = %v; want a *peonify.ConfigError with Field %q", err, tc.field)
			}
		})
	}
}
