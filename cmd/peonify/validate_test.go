package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/streams/amqpstream"
	"github.com/peonify/peonify/streams/mqttstream"
	"github.com/peonify/peonify/streams/natsstream"
	"github.com/peonify/peonify/streams/pgstream"
	"github.com/peonify/peonify/streams/redisstream"
	"github.com/peonify/peonify/streams/sqlitestream"
	"github.com/peonify/peonify/streams/webhookstream"
	"github.com/peonify/peonify/streams/wsstream"
)

// Each stream package's Config.Validate checks a config without a client
// or a server and names the field at fault in Go terms; the field of the
// entry that maps onto it, found by its yaml tag, is where the file's
// error lands.
func TestStreamConfigValidate(t *testing.T) {
	mqttOK := mqttstream.Config{Servers: []string{"mqtt://a:1883"}, ClientID: "c", Routes: map[string]string{"a/+": "t"}}
	mqttWith := func(f func(*mqttstream.Config)) mqttstream.Config { c := mqttOK; f(&c); return c }
	hook := map[string]webhookstream.Route{"/h": {Type: "t", AllowUnsigned: true}}
	for _, tc := range []struct {
		err   error  // what a Config.Validate returned
		field string // the Go field it must name; "" for a valid config
		spec  any    // the entry's type in the file
		yaml  string // the field of the entry
	}{
		{sqlitestream.Config{}.Validate(), "", nil, ""},
		{sqlitestream.Config{BusyTimeout: -1}.Validate(), "sqlitestream.Config.BusyTimeout", &sqliteSpec{}, ".busy_timeout"},
		{sqlitestream.Config{KeepDone: -1}.Validate(), "sqlitestream.Config.KeepDone", &sqliteSpec{}, ".keep_done"},
		{pgstream.Config{}.Validate(), "", nil, ""},
		{pgstream.Config{Schema: "Bad-Name"}.Validate(), "pgstream.Config.Schema", &postgresSpec{}, ".schema"},
		{pgstream.Config{Lease: time.Microsecond}.Validate(), "pgstream.Config.Lease", &postgresSpec{}, ".lease"},
		{pgstream.Config{Queue: strings.Repeat("q", 256)}.Validate(), "pgstream.Config.Queue", &postgresSpec{}, ".queue"},
		{redisstream.Config{}.Validate(), "", nil, ""},
		{redisstream.Config{Queue: "a{b}"}.Validate(), "redisstream.Config.Queue", &redisSpec{}, ".queue"},
		{redisstream.Config{Prefix: strings.Repeat("p", 51)}.Validate(), "redisstream.Config.Prefix", &redisSpec{}, ".prefix"},
		{redisstream.Config{RescueInterval: -1}.Validate(), "redisstream.Config.RescueInterval", &redisSpec{}, ".rescue_interval"},
		{natsstream.Config{}.Validate(), "", nil, ""},
		{natsstream.Config{Stream: "a.b"}.Validate(), "natsstream.Config.Stream", &natsSpec{}, ".stream"},
		{natsstream.Config{Stream: "S", DeadStream: "S"}.Validate(), "natsstream.Config.DeadStream", &natsSpec{}, ".dead_stream"},
		{natsstream.Config{Subject: "tasks.*"}.Validate(), "natsstream.Config.Subject", &natsSpec{}, ".subject"},
		{natsstream.Config{Replicas: 7}.Validate(), "natsstream.Config.Replicas", &natsSpec{}, ".replicas"},
		{amqpstream.Config{}.Validate(), "", nil, ""},
		{amqpstream.Config{Prefetch: -1}.Validate(), "amqpstream.Config.Prefetch", &amqpSpec{}, ".prefetch"},
		{amqpstream.Config{ReconnectMin: time.Minute, ReconnectMax: time.Second}.Validate(), "amqpstream.Config.ReconnectMax", &amqpSpec{}, ".reconnect_max"},
		{amqpstream.Config{KeepDead: time.Microsecond}.Validate(), "amqpstream.Config.KeepDead", &amqpSpec{}, ".keep_dead"},
		{mqttOK.Validate(), "", nil, ""},
		{mqttWith(func(c *mqttstream.Config) { c.Servers = append(c.Servers, "http://b") }).Validate(), "mqttstream.Config.Servers[1]", &mqttSpec{}, ".servers[1]"},
		{mqttWith(func(c *mqttstream.Config) { c.ReceiveMaximum = 70000 }).Validate(), "mqttstream.Config.ReceiveMaximum", &mqttSpec{}, ".receive_maximum"},
		{mqttWith(func(c *mqttstream.Config) { c.ResendLog, c.ResendWindow = "x", -1 }).Validate(), "mqttstream.Config.ResendLog", &mqttSpec{}, ".resend_log"},
		{webhookstream.Config{Routes: hook}.Validate(), "", nil, ""},
		{webhookstream.Config{Routes: hook, MaxBodyBytes: -1}.Validate(), "webhookstream.Config.MaxBodyBytes", &webhookSpec{}, ".max_body"},
		{webhookstream.Config{Routes: hook, RetryAfter: -1}.Validate(), "webhookstream.Config.RetryAfter", &webhookSpec{}, ".retry_after"},
		{wsstream.Config{}.Validate(), "", nil, ""},
		{wsstream.Config{OriginPatterns: []string{"a.example.com", "*"}}.Validate(), "wsstream.Config.OriginPatterns[1]", &websocketSpec{}, ".origins[1]"},
		{wsstream.Config{ReadLimit: -1}.Validate(), "wsstream.Config.ReadLimit", &websocketSpec{}, ".read_limit"},
	} {
		var ce *peonify.ConfigError
		switch {
		case tc.field == "" && tc.err != nil:
			t.Errorf("Validate of a valid config: %v", tc.err)
		case tc.field == "":
		case !errors.As(tc.err, &ce) || ce.Field != tc.field:
			t.Errorf("Validate = %v; want a *peonify.ConfigError at %s", tc.err, tc.field)
		default:
			_, goPath, _ := strings.Cut(ce.Field, "Config.")
			if got := yamlfile.PathOf(tc.spec, goPath); got != tc.yaml {
				t.Errorf("%s is %q in a %T, want %q", ce.Field, got, tc.spec, tc.yaml)
			}
		}
	}
}
