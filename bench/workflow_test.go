package main

import (
	"regexp"
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

var workflowResultRE = regexp.MustCompile(`(?m)^RESULT backend=(\w+) mode=workflow peonify=\d+ peer=plain:\d+ ratio=\d+\.\d\d$`)

// checkWorkflowReport checks the report of -modes workflow on a store that
// runs workflows: both chains, the fan-out and its peer, the goals, and
// the RESULT line last.
func checkWorkflowReport(t *testing.T, out, backend string) {
	t.Helper()
	m := workflowResultRE.FindStringSubmatch(out)
	if m == nil || m[1] != backend {
		t.Fatalf("no workflow RESULT line for %s", backend)
	}
	if !strings.HasSuffix(strings.TrimSpace(out), m[0]) {
		t.Errorf("the workflow RESULT is not the last line")
	}
	for _, want := range []string{`(?m)^workflow-chain +peonify +per step p50 `, `(?m)^workflow-chain-results +peonify +per step p50 `,
		`(?m)^workflow +peonify +\d+ `, `(?m)^workflow +plain +\d+ `, `workflow-chain p50 per step <= 2ms +(met|MISSED)`,
		`workflow ratio workflow/plain >= 0.5 +(met|MISSED)`, `peonify\.Spawn, 100 per call`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("report lacks %s", want)
		}
	}
}

// smallWorkflow are the flags of a small run of the workflow mode.
var smallWorkflow = []string{"-modes", "workflow", "-chain-runs", "3", "-chain-steps", "4", "-children", "300", "-batch", "100"}

func TestWorkflowPostgres(t *testing.T) {
	url := testenv.URL(t, "postgres")
	checkWorkflowReport(t, runSmall(t, append([]string{"-backend", "postgres", "-pg-url", url}, smallWorkflow...)...), "postgres")
}

func TestWorkflowSQLite(t *testing.T) {
	checkWorkflowReport(t, runSmall(t, append([]string{"-backend", "sqlite"}, smallWorkflow...)...), "sqlite")
}

func TestWorkflowRedis(t *testing.T) {
	url := testenv.URL(t, "redis")
	checkWorkflowReport(t, runSmall(t, append([]string{"-backend", "redis", "-redis-url", url}, smallWorkflow...)...), "redis")
}

// -fanout workflow enqueues the fan-out as one workflow.
func TestWorkflowOneEnqueue(t *testing.T) {
	out := runSmall(t, append([]string{"-backend", "sqlite", "-fanout", "workflow", "-count", "1"}, smallWorkflow...)...)
	if !strings.Contains(out, "one EnqueueWorkflow of 300 tasks") {
		t.Errorf("the report does not say the fan-out was one EnqueueWorkflow")
	}
}
