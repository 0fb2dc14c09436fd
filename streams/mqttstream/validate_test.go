package mqttstream_test

import (
	"errors"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/mqttstream"
)

// TestConfigValidate checks that a config is checked without a client or
// a server, and that an error names the field at fault in Go terms.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   mqttstream.Config
		field string // "" for a valid config
	}{
		{"minimal", mqttstream.Config{Servers: []string{"mqtt://localhost:1883"}, ClientID: "c", Routes: map[string]string{"a/+": "t"}}, ""},
		{"no servers", mqttstream.Config{ClientID: "c", Routes: map[string]string{"a/+": "t"}}, "mqttstream.Config.Servers"},
		{"bad second server", mqttstream.Config{Servers: []string{"mqtt://a:1883", "http://b"}, ClientID: "c", Routes: map[string]string{"a/+": "t"}}, "mqttstream.Config.Servers[1]"},
		{"no client id", mqttstream.Config{Servers: []string{"mqtt://a:1883"}, Routes: map[string]string{"a/+": "t"}}, "mqttstream.Config.ClientID"},
		{"overlapping routes", mqttstream.Config{Servers: []string{"mqtt://a:1883"}, ClientID: "c", Routes: map[string]string{"a/+": "t", "a/#": "u"}}, "mqttstream.Config.Routes"},
		{"receive maximum", mqttstream.Config{Servers: []string{"mqtt://a:1883"}, ClientID: "c", Routes: map[string]string{"a/+": "t"}, ReceiveMaximum: 70000}, "mqttstream.Config.ReceiveMaximum"},
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
