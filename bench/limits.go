package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/peonify/peonify"
)

// The limits mode (-modes limits) measures what flow control costs: a
// drain of tasks spread over -keys keys with a PerKey Concurrency 1 limit
// (peonify.Limit), against the same drain, the same keys, with no limit.
// Each key then runs one task at a time, so a claim may take only the
// oldest ready task of each key that runs nothing: the store does that
// inside its claim.

// Report names of the limits mode.
const (
	limitsMode      = "limits"
	limitsUnlimited = "unlimited" // the system name of the drain without limits
)

// benchLimit is the limit of the limits mode.
var benchLimit = peonify.Limit{Name: "bench/key", Type: "bench", PerKey: true, Concurrency: 1}

// limitsGoal is the least ratio of the limited drain to the unlimited one
// that the project accepts on a store that enforces limits in its claim.
const limitsGoal = 0.5

// runLimits runs the limits mode: count interleaved drains of the limited
// and the unlimited Peonify, which mk makes from a configuration, with
// drain running each. A store that cannot enforce limits is reported as
// unsupported, which is not an error.
func runLimits(rep *report, backend string, keys int, cfg peonifyConfig, mk func(peonifyConfig) contender,
	drain func(contender) func() (result, error), count int) error {
	limited, unlimited := cfg, cfg
	limited.Keys, unlimited.Keys = keys, keys
	limited.Limits = []peonify.Limit{benchLimit}
	lc, uc := mk(limited), mk(unlimited)
	lc.name, uc.name = "peonify", limitsUnlimited
	// The limited drain runs first, so that a store that cannot enforce
	// limits says so before anything is measured.
	rs, err := repeat(count, drain(lc), drain(uc))
	if errors.Is(err, errors.ErrUnsupported) {
		rep.limitsUnsupported = fmt.Sprintf("%s cannot enforce limits in its claims (%v)", backend, err)
		fmt.Fprintf(rep.w, "%-21s unsupported: %s\n", limitsMode, rep.limitsUnsupported)
		return nil
	}
	return rep.add(rs, err)
}

// limitsGoals checks the limits mode's goal, if it ran, with check.
func (r *report) limitsGoals(check func(name string, ok bool, got string)) {
	if r.limitsUnsupported != "" {
		fmt.Fprintf(r.w, "  %-40s %-7s %s\n", "limits ratio limited/unlimited", "n/a", "unsupported")
		return
	}
	lim, ok1 := r.get(limitsMode, "peonify")
	un, ok2 := r.get(limitsMode, limitsUnlimited)
	if ok1 && ok2 && un.jobsPerSec() > 0 {
		ratio := lim.jobsPerSec() / un.jobsPerSec()
		check(fmt.Sprintf("limits ratio limited/unlimited >= %g", limitsGoal), ratio >= limitsGoal, fmt.Sprintf("%.2f", ratio))
	}
}

// limitsResult prints the limits mode's RESULT line, if it ran:
//
//	RESULT backend=<b> mode=limits peonify=<jobs/s> peer=unlimited:<jobs/s> ratio=<limited/unlimited>
//
// or, on a store that cannot enforce limits,
//
//	RESULT backend=<b> mode=limits unsupported
func (r *report) limitsResult(backend string) {
	if r.limitsUnsupported != "" {
		fmt.Fprintf(r.w, "RESULT backend=%s mode=%s unsupported\n", backend, limitsMode)
		return
	}
	lim, ok1 := r.get(limitsMode, "peonify")
	un, ok2 := r.get(limitsMode, limitsUnlimited)
	if !ok1 || !ok2 {
		return
	}
	line := resultLine(backend, limitsUnlimited, lim.jobsPerSec(), un.jobsPerSec())
	fmt.Fprintln(r.w, strings.Replace(line, "RESULT backend="+backend, "RESULT backend="+backend+" mode="+limitsMode, 1))
}
