package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peonify/peonify"
)

// The workflow mode (-modes workflow) measures what workflows cost on the
// stores that run them (peonify.WorkflowStore):
//
//   - chains: -chain-runs workflows of -chain-steps tasks, each task the
//     parent of the next, enqueued one at a time into an idle processor.
//     A chain's time runs from the return of EnqueueWorkflow to the
//     return of its last task's Ack, and is shown per step. Its steps do
//     nothing ("workflow-chain"), or read their parent's result with
//     peonify.ParentResults and set their own ("workflow-chain-results").
//   - fan-out and fan-in: a workflow of a root task, which spawns -children
//     children with peonify.Spawn (-batch per call), and a final task that
//     depends on the root, and so on all the children (-fanout spawn); or
//     one EnqueueWorkflow of the children and a final task that depends on
//     every one of them (-fanout workflow). Against it, "plain": the same
//     number of plain tasks, enqueued -batch per call into the running
//     processor. Both run from the first enqueue to the last completion
//     stored, on a fresh queue each, interleaved -count times.

// Report names of the workflow mode.
const (
	workflowMode  = "workflow"
	workflowPlain = "plain" // the system name of the plain tasks the fan-out is compared with
)

// Task types of the workflow mode, besides "bench" (the children).
const (
	chainType       = "bench-chain"
	fanoutRootType  = "bench-fanout-root"
	fanoutFinalType = "bench-fanout-final"
)

// Goals of the workflow mode.
const (
	chainStepGoal = 2 * time.Millisecond // p50 of a no-op chain's time per step
	workflowGoal  = 0.5                  // fan-out/fan-in rate against the plain tasks'
)

// workflowOptions are the flags of the workflow mode.
type workflowOptions struct {
	chainRuns  int    // chains per variant
	chainSteps int    // tasks per chain
	children   int    // tasks of the fan-out
	fanout     string // "spawn" or "workflow"
}

// workflowSystem is a Peonify system, whose stream the mode asks for its
// WorkflowStore and whose acks it watches.
type workflowSystem interface {
	system
	peonifyStream() peonify.Stream
	streamCalls() *streamCalls
}

// chainResult is what the chains of one variant measured. The slices are
// sorted.
type chainResult struct {
	name, config string
	runs, steps  int
	perStep      []time.Duration // per chain: its time divided by its steps
	hops         []time.Duration // from one step's handler start to the next one's
	gather       []time.Duration // from a step's handler return to the start of its Ack call
	ackCall      []time.Duration // the Ack call of a step: the ack and the release of the next
	pickup       []time.Duration // from the return of that Ack call to the next step's start; negative when the next started first
}

// runWorkflow runs the workflow mode: the chains, then count interleaved
// runs of the fan-out and of the plain tasks. mk makes a contender from a
// configuration. A store that cannot run workflows is reported as
// unsupported, which is not an error.
func runWorkflow(ctx context.Context, rep *report, r *runner, backend string, cfg peonifyConfig,
	mk func(peonifyConfig) contender, wo workflowOptions, count int) error {
	for _, results := range []bool{false, true} {
		res, err := r.chain(ctx, mk, cfg, wo, results)
		if errors.Is(err, errors.ErrUnsupported) {
			rep.workflowUnsupported = fmt.Sprintf("%s cannot run workflows (%v)", backend, err)
			fmt.Fprintf(rep.w, "%-21s unsupported: %s\n", workflowMode, rep.workflowUnsupported)
			return nil
		}
		if err != nil {
			return err
		}
		rep.addChain(res)
	}
	fan := func() (result, error) { return r.fanout(ctx, mk, cfg, wo) }
	plain := func() (result, error) { return r.plainFanout(ctx, mk, cfg, wo) }
	return rep.add(repeat(count, fan, plain))
}

// setupWorkflow makes a fresh system of c for n tasks and finds its
// WorkflowStore, or returns an error wrapping errors.ErrUnsupported.
func (r *runner) setupWorkflow(ctx context.Context, c contender, n int) (workflowSystem, *recorder, peonify.WorkflowStore, error) {
	sys, rec, err := r.setup(ctx, c, n)
	if err != nil {
		return nil, nil, nil, err
	}
	ws, ok := sys.(workflowSystem)
	if !ok {
		sys.Close()
		return nil, nil, nil, fmt.Errorf("%s: not a Peonify system", c.name)
	}
	wf, ok := peonify.As[peonify.WorkflowStore](ws.peonifyStream())
	if !ok {
		sys.Close()
		return nil, nil, nil, fmt.Errorf("the %s stream is not a peonify.WorkflowStore: %w", r.env.backend, errors.ErrUnsupported)
	}
	return ws, rec, wf, nil
}

// failure keeps the first error a handler reports and closes a channel
// then, so that a run waiting for its tasks gives up at once.
type failure struct {
	once sync.Once
	err  error
	c    chan struct{}
}

func newFailure() *failure { return &failure{c: make(chan struct{})} }

func (f *failure) set(err error) {
	f.once.Do(func() { f.err = err; close(f.c) })
}

// chainID is the ID of the chain task with sequence number seq.
func chainID(seq int) string { return "chain-" + strconv.Itoa(seq) }

// chainSeq returns the sequence number of a chain task's ID.
func chainSeq(id string) (int, bool) {
	s, ok := strings.CutPrefix(id, "chain-")
	if !ok {
		return 0, false
	}
	seq, err := strconv.Atoi(s)
	return seq, err == nil
}

// chainValue is the result a chain task with sequence number seq sets.
func chainValue(seq int) []byte { return []byte("r" + strconv.Itoa(seq)) }

// chain enqueues wo.chainRuns chains of wo.chainSteps tasks one at a time
// into an idle processor, each once the one before has finished, and
// measures them. With results, each step reads its parent's result and
// sets its own.
func (r *runner) chain(ctx context.Context, mk func(peonifyConfig) contender, cfg peonifyConfig,
	wo workflowOptions, results bool) (chainResult, error) {
	steps, runs := wo.chainSteps, wo.chainRuns
	n := steps * runs
	res := chainResult{name: "workflow-chain", runs: runs, steps: steps,
		config: fmt.Sprintf("%d chains of %d no-op steps, one at a time", runs, steps)}
	if results {
		res.name = "workflow-chain-results"
		res.config = fmt.Sprintf("%d chains of %d steps, one at a time; each step reads its parent's result (ParentResults) and sets its own (SetResult)", runs, steps)
	}
	ended := make([]atomic.Int64, n) // when each step's handler returned
	ackBegan := make([]atomic.Int64, n)
	ackReturned := make([]atomic.Int64, n)
	last := make([]chan struct{}, runs) // closed when the chain's last step was acked
	for i := range last {
		last[i] = make(chan struct{})
	}
	fail := newFailure()
	cfg.Handlers = func(rec *recorder) peonify.TaskList {
		return peonify.TaskList{chainType: peonify.JSON(func(ctx context.Context, a benchArgs) error {
			rec.started(a.Seq)
			if results {
				if err := chainResults(ctx, a.Seq, steps); err != nil {
					fail.set(err)
					return peonify.SkipRetry(err)
				}
			}
			if a.Seq >= 0 && a.Seq < n {
				ended[a.Seq].Store(rec.now())
			}
			return nil
		})}
	}
	c := mk(cfg)
	sys, rec, wf, err := r.setupWorkflow(ctx, c, n)
	if err != nil {
		return res, err
	}
	defer sys.Close()
	sys.streamCalls().onAck = func(ds []peonify.Delivery, began, returned int64) {
		for _, d := range ds {
			seq, ok := chainSeq(d.Task.ID)
			if !ok || seq < 0 || seq >= n {
				continue
			}
			if ackReturned[seq].Swap(returned) == 0 {
				ackBegan[seq].Store(began)
				if seq%steps == steps-1 {
					close(last[seq/steps])
				}
			}
		}
	}
	if err := sys.Start(ctx); err != nil {
		return res, fmt.Errorf("%s: start: %w", c.name, err)
	}
	time.Sleep(500 * time.Millisecond) // let the processor go idle
	for run := range runs {
		w := &peonify.Workflow{ID: "chain-run-" + strconv.Itoa(run)}
		var prev *peonify.Task
		for step := range steps {
			seq := run*steps + step
			t := &peonify.Task{ID: chainID(seq), Type: chainType, Payload: payload(seq)}
			if prev == nil {
				w.Add(t)
			} else {
				w.Add(t, prev)
			}
			prev = t
		}
		if err := wf.EnqueueWorkflow(ctx, w); err != nil {
			return res, fmt.Errorf("%s: EnqueueWorkflow: %w", c.name, err)
		}
		t0 := rec.now()
		rec.inserted(run*steps, steps, t0)
		select {
		case <-last[run]:
		case <-fail.c:
			return res, fmt.Errorf("%s: chain %d: %w", c.name, run, fail.err)
		case <-time.After(r.timeout):
			return res, fmt.Errorf("%s: chain %d did not finish within %s: %d of its %d steps started",
				c.name, run, r.timeout, int(rec.distinct.Load())-run*steps, steps)
		case <-ctx.Done():
			return res, ctx.Err()
		}
		res.perStep = append(res.perStep, time.Duration(ackReturned[run*steps+steps-1].Load()-t0)/time.Duration(steps))
		time.Sleep(r.idleEvery) // let the processor go idle again
	}
	for run := range runs {
		for step := 1; step < steps; step++ {
			seq := run*steps + step
			startPrev, start := rec.startedAt[seq-1].Load(), rec.startedAt[seq].Load()
			res.hops = append(res.hops, time.Duration(start-startPrev))
			res.gather = append(res.gather, time.Duration(ackBegan[seq-1].Load()-ended[seq-1].Load()))
			res.ackCall = append(res.ackCall, time.Duration(ackReturned[seq-1].Load()-ackBegan[seq-1].Load()))
			res.pickup = append(res.pickup, time.Duration(start-ackReturned[seq-1].Load()))
		}
	}
	for _, s := range [][]time.Duration{res.perStep, res.hops, res.gather, res.ackCall, res.pickup} {
		slices.Sort(s)
	}
	for run := range runs {
		if err := checkWorkflow(ctx, wf, "chain-run-"+strconv.Itoa(run), steps); err != nil {
			return res, fmt.Errorf("%s: %w", c.name, err)
		}
	}
	if err := stopAndCheck(ctx, c, sys, rec); err != nil {
		return res, err
	}
	return res, nil
}

// chainResults checks that the chain step seq was given its parent's
// result, and sets its own.
func chainResults(ctx context.Context, seq, steps int) error {
	got, err := peonify.ParentResults(ctx)
	if err != nil {
		return err
	}
	if seq%steps > 0 {
		if v, want := got[chainID(seq-1)], chainValue(seq-1); !bytes.Equal(v, want) {
			return fmt.Errorf("chain step %d read %q as its parent's result, want %q (all: %q)", seq, v, want, got)
		}
	}
	return peonify.SetResult(ctx, chainValue(seq))
}

// checkWorkflow checks that the workflow id succeeded with n tasks, all
// done.
func checkWorkflow(ctx context.Context, wf peonify.WorkflowStore, id string, n int) error {
	info, err := wf.GetWorkflow(ctx, id)
	if err != nil {
		return fmt.Errorf("GetWorkflow(%s): %w", id, err)
	}
	total := 0
	for _, c := range info.Counts {
		total += c
	}
	if info.State != peonify.WorkflowSucceeded || info.Counts[peonify.StateDone] != n || total != n {
		return fmt.Errorf("workflow %s is %s with tasks by state %v, want %s with %d done",
			id, info.State, info.Counts, peonify.WorkflowSucceeded, n)
	}
	return nil
}

// stopAndCheck stops sys and checks that each task ran once and was acked
// once.
func stopAndCheck(ctx context.Context, c contender, sys system, rec *recorder) error {
	stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := sys.Stop(stopCtx); err != nil {
		return fmt.Errorf("%s: stop: %w", c.name, err)
	}
	if err := rec.check(); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	return nil
}

// fanoutConfig describes the fan-out of wo for the report.
func fanoutConfig(wo workflowOptions, batch int) string {
	if wo.fanout == "workflow" {
		return fmt.Sprintf("one EnqueueWorkflow of %d tasks and a final task depending on all of them", wo.children)
	}
	return fmt.Sprintf("a root task spawns %d children (peonify.Spawn, %d per call); a final task depends on the root, so on all of them",
		wo.children, batch)
}

// fanout runs one workflow of wo.children tasks and a final task that
// waits for them all (see the mode's description) on a fresh queue, from
// its enqueue to the final task's ack. The rate counts the children only.
func (r *runner) fanout(ctx context.Context, mk func(peonifyConfig) contender, cfg peonifyConfig, wo workflowOptions) (result, error) {
	children, batch := wo.children, r.batch
	spawn := wo.fanout == "spawn"
	n := children + 1 // the children and the final task
	if spawn {
		n++ // and the root
	}
	rootSeq, finalSeq := children, n-1
	fail := newFailure()
	cfg.Handlers = func(rec *recorder) peonify.TaskList {
		return peonify.TaskList{
			fanoutRootType: peonify.JSON(func(ctx context.Context, a benchArgs) error {
				rec.started(a.Seq)
				for first := 0; first < children; first += batch {
					kids := make([]*peonify.Task, min(batch, children-first))
					for i := range kids {
						kids[i] = &peonify.Task{Type: "bench", Payload: payload(first + i)}
					}
					if err := peonify.Spawn(ctx, kids...); err != nil {
						fail.set(fmt.Errorf("Spawn: %w", err))
						return err
					}
				}
				return nil
			}),
			fanoutFinalType: peonify.JSON(func(_ context.Context, a benchArgs) error {
				rec.started(a.Seq)
				return nil
			}),
		}
	}
	c := mk(cfg)
	c.name = "peonify"
	c.config = cfg.String() + "; " + fanoutConfig(wo, batch)
	res := result{mode: workflowMode, system: c.name, config: c.config, n: children}
	sys, rec, wf, err := r.setupWorkflow(ctx, c, n)
	if err != nil {
		return res, err
	}
	defer sys.Close()
	w := &peonify.Workflow{ID: "fanout"}
	final := &peonify.Task{ID: "fanout-final", Type: fanoutFinalType, Payload: payload(finalSeq)}
	if spawn {
		root := w.Add(&peonify.Task{ID: "fanout-root", Type: fanoutRootType, Payload: payload(rootSeq)})
		w.Add(final, root)
	} else {
		kids := make([]*peonify.Task, children)
		for i := range kids {
			kids[i] = w.Add(&peonify.Task{ID: "fanout-" + strconv.Itoa(i), Type: "bench", Payload: payload(i)})
		}
		w.Add(final, kids...)
	}
	ph, err := r.startIdlePhase(ctx, workflowMode, c, sys, rec)
	if err != nil {
		return res, err
	}
	stopProfile := sync.OnceFunc(ph.stopProfile)
	defer stopProfile()
	if err := wf.EnqueueWorkflow(ctx, w); err != nil {
		return res, fmt.Errorf("%s: EnqueueWorkflow: %w", c.name, err)
	}
	rec.inserted(0, n, ph.start)
	select {
	case <-rec.done:
	case <-fail.c:
		return res, fmt.Errorf("%s: %w", c.name, fail.err)
	case <-time.After(r.timeout):
		return res, fmt.Errorf("%s: only %d of %d tasks completed (%d started) within %s",
			c.name, rec.completed.Load(), n, rec.distinct.Load(), r.timeout)
	case <-ctx.Done():
		return res, ctx.Err()
	}
	end := takeSample(ctx, sys)
	stopProfile()
	if err := checkWorkflow(ctx, wf, w.ID, n); err != nil {
		return res, fmt.Errorf("%s: %w", c.name, err)
	}
	if err := noLiveTasks(ctx, sys.peonifyStream()); err != nil {
		return res, fmt.Errorf("%s: %w", c.name, err)
	}
	if err := stopAndCheck(ctx, c, sys, rec); err != nil {
		return res, err
	}
	r.measure(&res, sys, rec, ph.start, ph.begin, end)
	return res, nil
}

// noLiveTasks checks with the stream's Inspector that no task is left
// unfinished, dead or cancelled: done tasks of a workflow are kept.
func noLiveTasks(ctx context.Context, s peonify.Stream) error {
	in, ok := peonify.As[peonify.Inspector](s)
	if !ok {
		return nil
	}
	counts, err := in.Counts(ctx)
	if err != nil {
		return err
	}
	var left []string
	for _, state := range peonify.States {
		if c := counts[state]; c != 0 && state != peonify.StateDone {
			left = append(left, fmt.Sprintf("%d %s", c, state))
		}
	}
	if left != nil {
		return fmt.Errorf("tasks left in the stream after the workflow succeeded: %v", left)
	}
	return nil
}

// plainFanout enqueues wo.children plain tasks, r.batch per call, into
// the running processor on a fresh queue, and times them from the first
// enqueue to the last ack: the peer of fanout.
func (r *runner) plainFanout(ctx context.Context, mk func(peonifyConfig) contender, cfg peonifyConfig, wo workflowOptions) (result, error) {
	n := wo.children
	c := mk(cfg)
	c.name = workflowPlain
	c.config = cfg.String() + fmt.Sprintf("; %d plain tasks enqueued %d per call into the running processor", n, r.batch)
	res := result{mode: workflowMode, system: c.name, config: c.config, n: n}
	sys, rec, err := r.setup(ctx, c, n)
	if err != nil {
		return res, err
	}
	defer sys.Close()
	ph, err := r.startIdlePhase(ctx, workflowMode, c, sys, rec)
	if err != nil {
		return res, err
	}
	for first := 0; first < n; first += r.batch {
		count := min(r.batch, n-first)
		if err := sys.Insert(ctx, first, count); err != nil {
			ph.stopProfile()
			return res, fmt.Errorf("%s: insert: %w", c.name, err)
		}
		rec.inserted(first, count, rec.now())
	}
	if err := r.endPhase(ctx, ph, &res, c, sys, rec); err != nil {
		return res, err
	}
	return res, nil
}

// addChain prints the result of one chain variant and keeps it.
func (r *report) addChain(c chainResult) {
	r.chains = append(r.chains, c)
	p := func(s []time.Duration, q float64) string { return fmtDur(percentile(s, q)) }
	fmt.Fprintf(r.w, "%-21s %-23s per step p50 %s p95 %s over %d chains of %d steps (a chain: p50 %s)\n",
		c.name, "peonify", p(c.perStep, 0.5), p(c.perStep, 0.95), c.runs, c.steps,
		fmtDur(percentile(c.perStep, 0.5)*time.Duration(c.steps)))
	fmt.Fprintf(r.w, "  step start to next step start p50 %s p95 %s: handler return to Ack call p50 %s, Ack call p50 %s, Ack return to next start p50 %s\n",
		p(c.hops, 0.5), p(c.hops, 0.95), p(c.gather, 0.5), p(c.ackCall, 0.5), p(c.pickup, 0.5))
	r.chainConfigs = append(r.chainConfigs, [2]string{c.name, c.config})
}

// workflowGoals checks the workflow mode's goals, if it ran, with check.
func (r *report) workflowGoals(check func(name string, ok bool, got string)) {
	if r.workflowUnsupported != "" {
		fmt.Fprintf(r.w, "  %-40s %-7s %s\n", "workflow ratio workflow/plain", "n/a", "unsupported")
		return
	}
	for _, c := range r.chains {
		if c.name == "workflow-chain" {
			p50 := percentile(c.perStep, 0.5)
			check(fmt.Sprintf("workflow-chain p50 per step <= %s", fmtDur(chainStepGoal)), p50 <= chainStepGoal, fmtDur(p50))
		}
	}
	wf, ok1 := r.get(workflowMode, "peonify")
	plain, ok2 := r.get(workflowMode, workflowPlain)
	if ok1 && ok2 && plain.jobsPerSec() > 0 {
		ratio := wf.jobsPerSec() / plain.jobsPerSec()
		check(fmt.Sprintf("workflow ratio workflow/plain >= %g", workflowGoal), ratio >= workflowGoal, fmt.Sprintf("%.2f", ratio))
	}
}

// workflowResult prints the workflow mode's RESULT line, if it ran:
//
//	RESULT backend=<b> mode=workflow peonify=<jobs/s> peer=plain:<jobs/s> ratio=<workflow/plain>
//
// or, on a store that cannot run workflows,
//
//	RESULT backend=<b> mode=workflow unsupported
func (r *report) workflowResult(backend string) {
	if r.workflowUnsupported != "" {
		fmt.Fprintf(r.w, "RESULT backend=%s mode=%s unsupported\n", backend, workflowMode)
		return
	}
	wf, ok1 := r.get(workflowMode, "peonify")
	plain, ok2 := r.get(workflowMode, workflowPlain)
	if !ok1 || !ok2 {
		return
	}
	line := resultLine(backend, workflowPlain, wf.jobsPerSec(), plain.jobsPerSec())
	fmt.Fprintln(r.w, strings.Replace(line, "RESULT backend="+backend, "RESULT backend="+backend+" mode="+workflowMode, 1))
}
