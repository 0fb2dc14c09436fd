package pgstream_test

import (
	"errors"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/pgstream"
)

// TestConfigValidate checks that a config is checked without a client or
// a server, and that an error names the field at fault in Go terms.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   pgstream.Config
		field string // "" for a valid config
	}{
		{"zero", pgstream.Config{}, ""},
		{"long queue", pgstream.Config{Queue: string(make([]byte, 256))}, "pgstream.Config.Queue"},
		{"bad schema", pgstream.Config{Schema: "Bad-Name"}, "pgstream.Config.Schema"},
		{"short lease", pgstream.Config{Lease: time.Microsecond}, "pgstream.Config.Lease"},
		{"negative keep done", pgstream.Config{KeepDone: -1}, "pgstream.Config.KeepDone"},
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
