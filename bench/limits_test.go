package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/peonify/peonify/internal/testenv"
)

var limitsResultRE = regexp.MustCompile(`(?m)^RESULT backend=(\w+) mode=limits peonify=\d+ peer=unlimited:\d+ ratio=\d+\.\d\d$`)

// checkLimitsReport checks the report of -modes limits on a store that
// enforces limits: both drains, the goal, and the RESULT line last.
func checkLimitsReport(t *testing.T, out, backend string) {
	t.Helper()
	m := limitsResultRE.FindStringSubmatch(out)
	if m == nil || m[1] != backend {
		t.Fatalf("no limits RESULT line for %s", backend)
	}
	if !strings.HasSuffix(strings.TrimSpace(out), m[0]) {
		t.Errorf("the limits RESULT is not the last line")
	}
	for _, want := range []string{"limits                peonify ", "limits                unlimited ",
		"limits ratio limited/unlimited >= 0.5", "limit PerKey Concurrency 1", "tasks over 10 keys"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestLimitsSQLite(t *testing.T) {
	checkLimitsReport(t, runSmall(t, "-backend", "sqlite", "-modes", "limits", "-keys", "10"), "sqlite")
}

func TestLimitsPostgres(t *testing.T) {
	url := testenv.URL(t, "postgres")
	checkLimitsReport(t, runSmall(t, "-backend", "postgres", "-pg-url", url, "-modes", "limits", "-keys", "10"), "postgres")
}

func TestLimitsRedis(t *testing.T) {
	url := testenv.URL(t, "redis")
	checkLimitsReport(t, runSmall(t, "-backend", "redis", "-redis-url", url, "-modes", "limits", "-keys", "10"), "redis")
}

// On a broker whose stream cannot enforce limits the mode says so, and
// the run still succeeds.
func TestLimitsUnsupported(t *testing.T) {
	url := testenv.URL(t, "nats")
	out := runSmall(t, "-backend", "nats", "-nats-url", url, "-modes", "limits")
	if !strings.HasSuffix(strings.TrimSpace(out), "RESULT backend=nats mode=limits unsupported") {
		t.Errorf("the last line is not the unsupported RESULT")
	}
	if !strings.Contains(out, "unsupported: nats cannot enforce limits") {
		t.Errorf("the report does not say why")
	}
}
