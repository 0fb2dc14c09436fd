package wsstream_test

import (
	"errors"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/wsstream"
)

// TestConfigValidate checks that a config is checked without a client or
// a server, and that an error names the field at fault in Go terms.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   wsstream.Config
		field string // "" for a valid config
	}{
		{"zero", wsstream.Config{}, ""},
		{"negative in flight", wsstream.Config{MaxInFlight: -1}, "wsstream.Config.MaxInFlight"},
		{"any origin", wsstream.Config{OriginPatterns: []string{"a.example.com", "*"}}, "wsstream.Config.OriginPatterns[1]"},
		{"resend log without window", wsstream.Config{ResendLog: "x", ResendWindow: -1}, "wsstream.Config.ResendLog"},
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
