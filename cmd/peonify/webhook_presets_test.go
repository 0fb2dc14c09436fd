package main

import (
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/streams/webhookstream"
)

// The slack and shopify schemes are selectable in the config file, slack
// with its tolerance.
func TestWebhookSlackShopify(t *testing.T) {
	c, err := parseConfig([]byte(hookRoute("{path: /slack, type: email, verify: slack, secrets: [s1, s2], tolerance: 2m, sync: false}\n"+
		"      - {path: /shop, type: email, verify: shopify, secrets: [shpss_x], json: true}")), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := c.stream("webhook").(*webhookSpec).config(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := cfg.Routes["/slack"].Verifier.(webhookstream.Slack); !ok || len(v.Secrets) != 2 || v.Tolerance != 2*time.Minute {
		t.Errorf("slack route %+v", cfg.Routes["/slack"])
	}
	if v, ok := cfg.Routes["/shop"].Verifier.(webhookstream.Shopify); !ok || len(v.Secrets) != 1 || !cfg.Routes["/shop"].JSON {
		t.Errorf("shopify route %+v", cfg.Routes["/shop"])
	}
	for route, want := range map[string]string{
		"{path: /s, type: email, verify: shopify, secrets: [s], tolerance: 1m}": "streams[1].routes[0].tolerance: applies to verify: stripe, standard and slack only",
		"{path: /s, type: email, verify: slack}":                                "streams[1].routes[0].secrets: required with verify: slack",
		"{path: /s, type: email, verify: slack, secrets: [s], header: X-Sig}":   "streams[1].routes[0].header: applies to verify: hmac only",
	} {
		if _, err := parseConfig([]byte(hookRoute(route)), env(nil)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", route, err, want)
		}
	}
}
