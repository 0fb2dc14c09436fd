package yamlfile

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml/parser"
)

type entry struct {
	Common struct {
		Name string `yaml:"name"`
	} `yaml:",inline"`
	Lease   Duration `yaml:"lease"`
	Servers []string `yaml:"servers"`
	Retry   struct {
		MaxAttempts int `yaml:"max_attempts"`
	} `yaml:"retry"`
}

func TestPathOf(t *testing.T) {
	for goPath, want := range map[string]string{
		"Name":              ".name", // inline
		"Lease":             ".lease",
		"Servers[2]":        ".servers[2]",
		"Retry.MaxAttempts": ".retry.max_attempts",
		"Retry.Nothing":     ".retry",
		"Nothing":           "",
	} {
		if got := PathOf(entry{}, goPath); got != want {
			t.Errorf("PathOf(%q) = %q, want %q", goPath, got, want)
		}
	}
}

// A check's error found after decoding gets the position of its field.
func TestDecodeAndPosition(t *testing.T) {
	f, err := parser.ParseBytes([]byte("name: a\nlease: 2m\nretry:\n  max_attempts: 3\n"), 0)
	if err != nil {
		t.Fatal(err)
	}
	body := f.Docs[0].Body
	var e entry
	if err := DecodeStrict(body, &e); err != nil {
		t.Fatal(err)
	}
	if e.Common.Name != "a" || time.Duration(e.Lease) != 2*time.Minute || e.Retry.MaxAttempts != 3 {
		t.Fatalf("decoded %+v", e)
	}
	err = WithPosition(Errorf("retry.max_attempts", "too many"), body)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Pos == nil || fe.Pos.Line != 4 || err.Error() != "retry.max_attempts: too many" {
		t.Fatalf("WithPosition: %v (%+v)", err, fe)
	}
	if err := DecodeStrict(body, &struct{}{}); err == nil {
		t.Fatal("DecodeStrict took unknown fields")
	}
}

func TestRate(t *testing.T) {
	for in, want := range map[string]Rate{
		"20/s":          {20, time.Second},
		"600/m":         {600, time.Minute},
		"1000/h":        {1000, time.Hour},
		"5/10s":         {5, 10 * time.Second},
		"' 3 / 1m30s '": {3, 90 * time.Second},
		"0":             {},
		"0/s":           {},
		"~":             {},
	} {
		f, err := parser.ParseBytes([]byte("rate: "+in+"\n"), 0)
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Rate Rate `yaml:"rate"`
		}
		if err := DecodeStrict(f.Docs[0].Body, &v); err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if v.Rate != want {
			t.Errorf("%s: got %+v, want %+v", in, v.Rate, want)
		}
	}
	for in, want := range map[string]string{
		"20":     "rate: 20 has no period: write the starts per period, like 20/s",
		"fast":   `rate: "fast" is not a rate`,
		"x/s":    `rate: "x/s" is not a rate: the part before / must be a whole number`,
		"-1/s":   `rate: "-1/s" is not a rate: the part before / must be a whole number`,
		"5/week": `rate: "5/week" is not a rate: the part after / must be s, m, h`,
		"5/-1s":  `rate: "5/-1s" is not a rate: the part after / must be s, m, h`,
		"[1]":    "rate: want a rate like 20/s",
	} {
		f, err := parser.ParseBytes([]byte("rate: "+in+"\n"), 0)
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Rate Rate `yaml:"rate"`
		}
		err = DecodeStrict(f.Docs[0].Body, &v)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Pos == nil || fe.Pos.Line != 1 || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: error %v, want one at line 1 starting %q", in, err, want)
		}
	}
	if s := (Rate{20, time.Second}).String() + " " + (Rate{5, 10 * time.Second}).String(); s != "20/s 5/10s" {
		t.Errorf("String: %s", s)
	}
}
