package amqpstream_test

import (
	"errors"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/amqpstream"
)

// TestConfigValidate checks that a config is checked without a client or
// a server, and that an error names the field at fault in Go terms.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   amqpstream.Config
		field string // "" for a valid config
	}{
		{"zero", amqpstream.Config{}, ""},
		{"reserved queue", amqpstream.Config{Queue: "amq.x"}, "amqpstream.Config.Queue"},
		{"prefetch", amqpstream.Config{Prefetch: -1}, "amqpstream.Config.Prefetch"},
		{"priority and quorum", amqpstream.Config{MaxPriority: 5, Quorum: true}, "amqpstream.Config.MaxPriority"},
		{"reconnect bounds", amqpstream.Config{ReconnectMin: time.Minute, ReconnectMax: time.Second}, "amqpstream.Config.ReconnectMax"},
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
