package peonify

import (
	"strings"
	"testing"
)

func TestChildIDFitsAndIsStable(t *testing.T) {
	if got := childID("p", 3); got != "p.c3" {
		t.Errorf("childID(p, 3) = %q, want p.c3", got)
	}
	long := strings.Repeat("x", MaxIDLen)
	a, b := childID(long, 1), childID(long, 12)
	if len(a) > MaxIDLen || len(b) > MaxIDLen || a == b {
		t.Errorf("children of a %d-byte ID: %d and %d bytes, equal: %v; want distinct IDs of at most %d bytes",
			len(long), len(a), len(b), a == b, MaxIDLen)
	}
	if childID(long, 12) != b {
		t.Error("childID is not deterministic")
	}
}
