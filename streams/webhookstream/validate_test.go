package webhookstream_test

import (
	"errors"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/webhookstream"
)

// TestConfigValidate checks that a config is checked without a client or
// a server, and that an error names the field at fault in Go terms.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   webhookstream.Config
		field string // "" for a valid config
	}{
		{"minimal", webhookstream.Config{Routes: map[string]webhookstream.Route{"/h": {Type: "t", AllowUnsigned: true}}}, ""},
		{"no routes", webhookstream.Config{}, "webhookstream.Config.Routes"},
		{"negative body", webhookstream.Config{Routes: map[string]webhookstream.Route{"/h": {Type: "t", AllowUnsigned: true}}, MaxBodyBytes: -1}, "webhookstream.Config.MaxBodyBytes"},
		{"route without verifier", webhookstream.Config{Routes: map[string]webhookstream.Route{"/h": {Type: "t"}}}, `webhookstream.Config.Routes["/h"]`},
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
