package yamlfile

import (
	"errors"
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
