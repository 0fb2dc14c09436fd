package mqttstream

import (
	"errors"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+", "a/", true},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
	} {
		if got := match(tc.filter, tc.topic); got != tc.want {
			t.Errorf("match(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/#", "a", true},
		{"a/#", "b/#", false},
		{"a/+/c", "a/b/+", true},
		{"a/+/c", "a/b/d", false},
		{"a/b", "a/b/c", false},
		{"+/x", "$SYS/x", false},
		{"#", "$SYS/#", false},
		{"$SYS/+", "$SYS/a", true},
		{"a/+", "a/+/b", false},
	} {
		if got := overlap(tc.a, tc.b); got != tc.want {
			t.Errorf("overlap(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := overlap(tc.b, tc.a); got != tc.want {
			t.Errorf("overlap(%q, %q) = %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	ok := Config{Servers: []string{"mqtt://localhost:1883"}, ClientID: "c", Routes: map[string]string{"a/#": "t"}}
	if _, err := New(intaketest.NewMem(t), ok); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.Servers = nil }, "Servers"},
		{func(c *Config) { c.Servers = []string{"http://x:1"} }, "scheme"},
		{func(c *Config) { c.Servers = []string{"localhost:1883"} }, "not a URL"},
		{func(c *Config) { c.ClientID = "" }, "ClientID"},
		{func(c *Config) { c.Routes = nil }, "Routes"},
		{func(c *Config) { c.Routes = map[string]string{"a/#/b": "t"} }, "# must be the last level"},
		{func(c *Config) { c.Routes = map[string]string{"a/b+": "t"} }, "+ must be a whole level"},
		{func(c *Config) { c.Routes = map[string]string{"a/+": "t", "a/b": "u"} }, "both match"},
		{func(c *Config) { c.Routes = map[string]string{"a": ""} }, "task type"},
		{func(c *Config) { c.Routes = map[string]string{"$share/g/a": "t"}; c.ShareGroup = "h" }, "share group"},
		{func(c *Config) { c.ShareGroup = "a/b" }, "ShareGroup"},
		{func(c *Config) { c.SessionExpiry = 10 }, "SessionExpiry"},
		{func(c *Config) { c.ReceiveMaximum = 70000 }, "ReceiveMaximum"},
		{func(c *Config) { c.KeepAlive = -1 }, "KeepAlive"},
	} {
		cfg := ok
		cfg.Routes = map[string]string{"a/#": "t"}
		tc.change(&cfg)
		_, err := New(intaketest.NewMem(t), cfg)
		var ce *peonify.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %+v: error %v, want a ConfigError mentioning %q", cfg, err, tc.want)
		}
	}
	if _, err := New(nil, ok); err == nil {
		t.Error("New with a nil store succeeded")
	}
}

func TestNewTakesCredentialsAndShareGroup(t *testing.T) {
	in, err := New(intaketest.NewMem(t), Config{
		Servers:    []string{"mqtt://ada:s3cret@broker.example", "tcp://other.example:1883"},
		ClientID:   "c",
		Routes:     map[string]string{"a/+": "t", "$share/explicit/b": "u"},
		ShareGroup: "",
	})
	if err != nil {
		t.Fatal(err)
	}
	if in.username != "ada" || in.password != "s3cret" || in.servers[0].User != nil {
		t.Errorf("credentials: user %q, password %q, URL %v", in.username, in.password, in.servers[0])
	}
	if in.servers[0].Host != "broker.example:1883" || in.servers[1].Host != "other.example:1883" {
		t.Errorf("servers = %v", in.servers)
	}
	if strings.Join(in.filters, " ") != "$share/explicit/b a/+" {
		t.Errorf("filters = %v", in.filters)
	}

	in, err = New(intaketest.NewMem(t), Config{Servers: []string{"mqtt://b:1883"}, ClientID: "c", Routes: map[string]string{"a/+": "t"}, ShareGroup: "workers"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(in.filters, " ") != "$share/workers/a/+" {
		t.Errorf("filters = %v", in.filters)
	}
}

func TestTaskFromMessage(t *testing.T) {
	in, err := New(intaketest.NewMem(t), Config{Servers: []string{"mqtt://b:1883"}, ClientID: "c", Routes: map[string]string{"dev/+/ev": "event"}})
	if err != nil {
		t.Fatal(err)
	}
	pb := &paho.Publish{Topic: "dev/7/ev", Payload: []byte{0, 1}, Properties: &paho.PublishProperties{
		CorrelationData: []byte{0x00, 0xff},
		User:            paho.UserProperties{{Key: "k", Value: "1"}, {Key: "k", Value: "2"}, {Key: HeaderTopic, Value: "spoofed"}},
		ResponseTopic:   "replies/7",
	}}
	tk, own, ok, _ := in.task(pb)
	switch {
	case !ok:
		t.Fatal("no route for dev/7/ev")
	case !own:
		t.Fatal("an ID from correlation data is not reported as the message's own")
	case tk.ID != "00ff", tk.Type != "event", string(tk.Payload) != "\x00\x01",
		tk.Headers["k"] != "1, 2", tk.Headers[HeaderTopic] != "dev/7/ev", tk.Headers[HeaderResponseTopic] != "replies/7":
		t.Fatalf("task = %+v", tk)
	}
	if _, _, ok, _ := in.task(&paho.Publish{Topic: "dev/7/other"}); ok {
		t.Fatal("dev/7/other was routed")
	}
	if _, own, _, _ := in.task(&paho.Publish{Topic: "dev/7/ev"}); own {
		t.Fatal("a new random ID is reported as the message's own")
	}
	long := strings.Repeat("x", 300)
	tk, _, _, _ = in.task(&paho.Publish{Topic: "dev/1/ev", Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: IDProperty, Value: long}}}})
	if len(tk.ID) > 255 || tk.ID != clampID(long) {
		t.Fatalf("long id became %q", tk.ID)
	}
	a, b := contentID(&paho.Publish{Topic: "t", Payload: []byte("ab")}), contentID(&paho.Publish{Topic: "ta", Payload: []byte("b")})
	if a == b {
		t.Fatal("content IDs of different messages collide")
	}
}
