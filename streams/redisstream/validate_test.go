package redisstream_test

import (
	"errors"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/redisstream"
)

// TestConfigValidate checks that a config is checked without a client or
// a server, and that an error names the field at fault in Go terms.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   redisstream.Config
		field string // "" for a valid config
	}{
		{"zero", redisstream.Config{}, ""},
		{"queue with braces", redisstream.Config{Queue: "a{b}"}, "redisstream.Config.Queue"},
		{"long prefix", redisstream.Config{Prefix: string(make([]byte, 51))}, "redisstream.Config.Prefix"},
		{"short lease", redisstream.Config{Lease: time.Microsecond}, "redisstream.Config.Lease"},
		{"negative rescue", redisstream.Config{RescueInterval: -1}, "redisstream.Config.RescueInterval"},
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
