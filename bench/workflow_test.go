package main

import (
	"strings"
	"testing"

	"github.com/peonify/peonify/internal/testenv"
)

// On a broker whose stream runs no workflows the mode says so, and the
// run still succeeds.
func TestWorkflowUnsupported(t *testing.T) {
	url := testenv.URL(t, "nats")
	out := runSmall(t, "-backend", "nats", "-nats-url", url, "-modes", "workflow")
	if !strings.HasSuffix(strings.TrimSpace(out), "RESULT backend=nats mode=workflow unsupported") {
		t.Errorf("the last line is not the unsupported RESULT")
	}
	if !strings.Contains(out, "unsupported: nats cannot run workflows") {
		t.Errorf("the report does not say why")
	}
}
