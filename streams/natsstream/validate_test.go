package natsstream_test

import (
	"errors"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/natsstream"
)

// TestConfigValidate checks that a config is checked without a client or
// a server, and that an error names the field at fault in Go terms.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   natsstream.Config
		field string // "" for a valid config
	}{
		{"zero", natsstream.Config{}, ""},
		{"dotted stream", natsstream.Config{Stream: "a.b"}, "natsstream.Config.Stream"},
		{"wildcard subject", natsstream.Config{Subject: "tasks.*"}, "natsstream.Config.Subject"},
		{"same dead stream", natsstream.Config{Stream: "S", DeadStream: "S"}, "natsstream.Config.DeadStream"},
		{"short ack wait", natsstream.Config{AckWait: 10 * time.Millisecond}, "natsstream.Config.AckWait"},
		{"replicas", natsstream.Config{Replicas: 7}, "natsstream.Config.Replicas"},
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
