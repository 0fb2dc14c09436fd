package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command's flags.
type options struct {
	backend    string
	tasks      int
	modes      map[string]bool
	systems    map[string]bool
	pgURL      string
	pgConns    int
	batch      int
	producers  int
	idleTasks  int
	idleEvery  time.Duration
	rawLoops   int
	keys       int
	workers    int
	queueSize  int
	sweep      []peonifyConfig
	splitPoll  int
	count      int
	timeout    time.Duration
	profileDir string
	verbose    bool

	clusterReplicas bool // -backend redis-cluster: a replica per master (cluster.go)

	workflowOptions // -modes workflow (workflow.go)
	apiOptions      // -modes api (api.go)
	brokerOptions   // -backend redis, nats and amqp (brokers.go)
}

// Peonify's configuration for the benchmark, chosen by measuring drains on
// both backends (see README.md): enough workers that a no-op handler never
// waits for one, and a local queue deep enough that each claim is a large
// batch.
const (
	defaultWorkers   = 50
	defaultQueueSize = 20000
)

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.backend, "backend", "sqlite", "database or broker the systems use: sqlite, postgres, redis, nats or amqp")
	fs.IntVar(&o.tasks, "tasks", 50000, "tasks in the drain and insert-while-working runs")
	modes := fs.String("modes", "drain,insert,idle",
		"comma-separated runs: drain, insert (insert-while-working, not sqlite), idle, "+
			"raw (the raw ceiling, postgres and brokers; runs with drain too), "+
			"limits (Peonify draining -keys keys with PerKey Concurrency 1, against the same unlimited), "+
			"workflow (chains and a fan-out), api (enqueue through the HTTP API against the Go Enqueue)")
	systems := fs.String("systems", "peonify,river,river-default",
		"comma-separated systems to run: peonify, river (tuned), river-default (postgres drain only); "+
			"redis: peonify, asynq, asynq-default, raw (default all); nats, amqp: peonify, raw (default both)")
	fs.StringVar(&o.pgURL, "pg-url", os.Getenv("PEONIFY_TEST_POSTGRES_URL"),
		"Postgres URL (default $PEONIFY_TEST_POSTGRES_URL); each run makes and drops its own schema there")
	fs.IntVar(&o.pgConns, "pg-conns", 20, "connection pool size of every system on postgres")
	fs.IntVar(&o.batch, "batch", 1000, "tasks per bulk insert before a drain")
	fs.IntVar(&o.producers, "producers", 2, "concurrent producers in insert-while-working")
	fs.IntVar(&o.idleTasks, "idle-tasks", 200, "tasks in the idle-pickup run")
	fs.DurationVar(&o.idleEvery, "idle-every", 20*time.Millisecond, "interval between idle-pickup tasks")
	fs.IntVar(&o.rawLoops, "raw-loops", 4, "concurrent loops of the raw SQL ceiling")
	fs.IntVar(&o.keys, "keys", 1000, "keys the tasks of -modes limits are spread over, each limited to one running task")
	fs.IntVar(&o.chainRuns, "chain-runs", 20, "workflow mode: chains of each variant, one at a time")
	fs.IntVar(&o.chainSteps, "chain-steps", 10, "workflow mode: tasks per chain")
	fs.IntVar(&o.children, "children", 10000, "workflow mode: tasks of the fan-out, and plain tasks it is compared with")
	fs.StringVar(&o.fanout, "fanout", "spawn", `workflow mode: "spawn" (a root task spawns the children) or "workflow" (one EnqueueWorkflow of all of them)`)
	fs.IntVar(&o.apiTasks, "api-tasks", 20000, "api mode: tasks enqueued by each variant")
	fs.IntVar(&o.apiClients, "api-clients", 16, "api mode: concurrent HTTP clients, and goroutines calling Enqueue")
	fs.IntVar(&o.apiBatch, "api-batch", 100, "api mode: tasks per POST /v1/tasks/batch, and per batch Enqueue")
	fs.IntVar(&o.workers, "workers", defaultWorkers, "Peonify Config.Workers")
	fs.IntVar(&o.queueSize, "queue-size", defaultQueueSize, "Peonify Config.QueueSize")
	fs.IntVar(&o.splitPoll, "split-poll", 1, "experiment: split each Peonify Poll into this many concurrent claims")
	fs.IntVar(&o.count, "count", 3, "runs of each drain and insert-while-working, interleaved; the report shows the median")
	sweepSpec := fs.String("sweep", "", `only drain with Peonify in these configurations, interleaved, to choose the best: `+
		`comma-separated Workers/QueueSize[/SplitPoll], or "grid" for a standard set`)
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "longest wait for one run to finish")
	fs.StringVar(&o.profileDir, "profile", "", "write a CPU profile of each drain and insert-while-working run into this directory")
	fs.BoolVar(&o.clusterReplicas, "cluster-replicas", false, "-backend redis-cluster: give each master a replica (the single server has none)")
	fs.BoolVar(&o.verbose, "v", false, "log the libraries' warnings and show how Peonify used its stream")
	addBrokerFlags(fs, &o.brokerOptions)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.backend != "sqlite" && o.backend != "postgres" && !isBroker(o.backend) && o.backend != clusterBackend:
		return o, fmt.Errorf("-backend %q: use sqlite, postgres, redis, redis-cluster, nats or amqp", o.backend)
	case o.tasks < 1 || o.idleTasks < 1 || o.batch < 1 || o.producers < 1 || o.rawLoops < 1 || o.count < 1 || o.keys < 1 ||
		o.chainRuns < 1 || o.children < 1 || o.apiTasks < 1 || o.apiClients < 1 || o.apiBatch < 1:
		return o, errors.New("-tasks, -idle-tasks, -batch, -producers, -raw-loops, -count, -keys, -chain-runs, -children, " +
			"-api-tasks, -api-clients and -api-batch must be at least 1")
	case o.chainSteps < 2:
		return o, errors.New("-chain-steps must be at least 2")
	case o.fanout != "spawn" && o.fanout != "workflow":
		return o, fmt.Errorf(`-fanout %q: use "spawn" or "workflow"`, o.fanout)
	case o.pgConns < 2:
		return o, errors.New("-pg-conns must be at least 2")
	case o.workers < 1 || o.queueSize < 2:
		return o, errors.New("-workers must be at least 1 and -queue-size at least 2")
	case o.idleEvery <= 0 || o.timeout <= 0:
		return o, errors.New("-idle-every and -timeout must be positive")
	case o.backend == "postgres" && o.pgURL == "":
		return o, errors.New("-backend postgres needs -pg-url or PEONIFY_TEST_POSTGRES_URL " +
			"(e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	var err error
	if *sweepSpec != "" {
		if o.sweep, err = parseSweep(*sweepSpec); err != nil {
			return o, err
		}
	}
	if o.modes, err = set("-modes", *modes, "drain", "insert", "idle", "raw", limitsMode, workflowMode, apiMode); err != nil {
		return o, err
	}
	if o.systems, err = set("-systems", *systems, "peonify", riverTuned.Label, riverDefault.Label,
		asynqTuned.Label, asynqDefault.Label, rawSystem); err != nil {
		return o, err
	}
	return o, checkBrokerFlags(&o, fs)
}

// set parses a comma-separated list of names from allowed.
func set(flagName, list string, allowed ...string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		if !slices.Contains(allowed, name) {
			return nil, fmt.Errorf("%s: unknown name %q: use %s", flagName, name, strings.Join(allowed, ", "))
		}
		out[name] = true
	}
	return out, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench: FAIL:", err)
		stop()
		os.Exit(1)
	}
}

// run runs the benchmark that o describes and writes the report to w.
func run(ctx context.Context, o options, w io.Writer) error {
	if isBroker(o.backend) {
		return runBroker(ctx, o, w)
	}
	if o.backend == clusterBackend {
		return runRedisCluster(ctx, o, w) // cluster.go
	}
	dir, err := os.MkdirTemp("", "peonify-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	level := slog.LevelError
	if o.verbose {
		level = slog.LevelWarn
	}
	e := &env{backend: o.backend, pgURL: o.pgURL, pgConns: int32(o.pgConns), dir: dir,
		log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))}
	r := &runner{env: e, batch: o.batch, producers: o.producers, idleTasks: o.idleTasks,
		idleEvery: o.idleEvery, timeout: o.timeout, profileDir: o.profileDir}

	fmt.Fprintf(w, "peonify bench: backend=%s tasks=%d %s/%s GOMAXPROCS=%d %s\n",
		o.backend, o.tasks, runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), runtime.Version())
	if o.backend == "sqlite" {
		fmt.Fprintln(w, "sqlite: a fresh file per run, WAL, synchronous=FULL for both")
	} else {
		fmt.Fprintf(w, "postgres: a fresh schema per run, pool of %d connections for each system\n", o.pgConns)
	}
	if la := loadAverage(); la != "" {
		fmt.Fprintf(w, "load average before: %s (other processes on this machine skew the figures)\n", la)
	}
	if o.sweep != nil {
		return sweep(ctx, r, o.sweep, o.tasks, o.count, w)
	}

	pcfg := peonifyConfig{Workers: o.workers, QueueSize: o.queueSize, SplitPoll: o.splitPoll}
	peon := contender{name: "peonify", config: pcfg.String(), make: newPeonify(pcfg)}
	peer := contender{name: riverTuned.Label, config: riverTuned.String(), make: newRiver(riverTuned)}
	def := contender{name: riverDefault.Label, config: riverDefault.String(), make: newRiver(riverDefault)}
	var chosen []contender // peonify and tuned River, as selected
	for _, c := range []contender{peon, peer} {
		if o.systems[c.name] {
			chosen = append(chosen, c)
		}
	}
	pg := o.backend == "postgres"

	rep := report{w: w, verbose: o.verbose, byKey: map[string]result{}}
	rep.header()
	if o.modes["drain"] {
		var runs []func() (result, error)
		for _, c := range chosen {
			runs = append(runs, func() (result, error) { return r.drain(ctx, c, o.tasks) })
		}
		if err := rep.add(repeat(o.count, runs...)); err != nil {
			return err
		}
		if pg && o.systems[def.name] {
			// Its rate is set by its fetch cooldown, the same every run.
			if err := rep.add(repeat(1, func() (result, error) { return r.drain(ctx, def, o.tasks) })); err != nil {
				return err
			}
		}
	}
	if pg && (o.modes["raw"] || o.modes["drain"]) {
		if err := rep.add(repeat(o.count,
			func() (result, error) { return rawCeiling(ctx, e, o.tasks, o.rawLoops, true) },
			func() (result, error) { return rawCeiling(ctx, e, o.tasks, o.rawLoops, false) })); err != nil {
			return err
		}
	}
	if pg && o.modes["insert"] {
		var runs []func() (result, error)
		for _, c := range chosen {
			runs = append(runs, func() (result, error) { return r.insertWhileWorking(ctx, c, o.tasks) })
		}
		if err := rep.add(repeat(o.count, runs...)); err != nil {
			return err
		}
	}
	if o.modes["idle"] {
		var runs []func() (result, error)
		for _, c := range chosen {
			runs = append(runs, func() (result, error) { return r.idle(ctx, c, false) })
		}
		if pg {
			for _, c := range chosen {
				runs = append(runs, func() (result, error) { return r.idle(ctx, c, true) })
			}
		}
		if err := rep.add(repeat(1, runs...)); err != nil {
			return err
		}
	}
	if o.modes[limitsMode] {
		drain := func(c contender) func() (result, error) {
			return func() (result, error) { return r.drainAs(ctx, limitsMode, c, o.tasks) }
		}
		mk := func(cfg peonifyConfig) contender {
			return contender{name: "peonify", config: cfg.String(), make: newPeonify(cfg)}
		}
		if err := runLimits(&rep, o.backend, o.keys, pcfg, mk, drain, o.count); err != nil {
			return err
		}
	}
	if o.modes[workflowMode] {
		mk := func(cfg peonifyConfig) contender {
			return contender{name: "peonify", config: cfg.String(), make: newPeonify(cfg)}
		}
		if err := runWorkflow(ctx, &rep, r, o.backend, pcfg, mk, o.workflowOptions, o.count); err != nil {
			return err
		}
	}
	if o.modes[apiMode] {
		mk := func(cfg peonifyConfig) contender {
			return contender{name: "peonify", config: cfg.String(), make: newPeonify(cfg)}
		}
		if err := runAPI(ctx, &rep, r, pcfg, mk, o.apiOptions, o.count); err != nil {
			return err
		}
	}
	rep.configurations()
	if la := loadAverage(); la != "" {
		fmt.Fprintf(w, "load average after: %s\n", la)
	}
	rep.goals(o.backend)
	return nil
}

// loadAverage returns the 1, 5 and 15 minute load averages of the
// machine, or "" where /proc/loadavg does not exist.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// report prints results as they come and keeps them by mode and system.
type report struct {
	w       io.Writer
	verbose bool // print each result's detail
	results []result
	byKey   map[string]result

	// limitsUnsupported says why the limits mode could not run: the
	// store cannot enforce limits.
	limitsUnsupported string

	chains       []chainResult // the workflow mode's chains
	chainConfigs [][2]string   // their names and configurations
	// workflowUnsupported says why the workflow mode could not run: the
	// store has no workflows.
	workflowUnsupported string
}

func (r *report) add(rs []result, err error) error {
	if err != nil {
		return err
	}
	for _, res := range rs {
		r.results = append(r.results, res)
		r.byKey[res.mode+"/"+res.system] = res
		printResult(r.w, res)
		if r.verbose && res.detail != "" {
			fmt.Fprintf(r.w, "  %s\n", res.detail)
		}
	}
	return nil
}

func (r *report) get(mode, system string) (result, bool) {
	res, ok := r.byKey[mode+"/"+system]
	return res, ok
}

func (r *report) header() { printHeader(r.w) }

// configurations lists how each system was configured.
func (r *report) configurations() {
	fmt.Fprintln(r.w)
	fmt.Fprintln(r.w, "configurations:")
	seen := map[string]bool{}
	for _, res := range r.results {
		if !seen[res.system] {
			seen[res.system] = true
			fmt.Fprintf(r.w, "  %-23s %s\n", res.system, res.config)
		}
	}
	for _, c := range r.chainConfigs {
		fmt.Fprintf(r.w, "  %-23s %s\n", c[0], c[1])
	}
}

// goalChecker starts the goals section of the report and returns the
// function that prints one goal, met or missed.
func (r *report) goalChecker() func(name string, ok bool, got string) {
	fmt.Fprintln(r.w)
	fmt.Fprintln(r.w, "goals:")
	return func(name string, ok bool, got string) {
		mark := "met"
		if !ok {
			mark = "MISSED"
		}
		fmt.Fprintf(r.w, "  %-40s %-7s %s\n", name, mark, got)
	}
}

// goals says whether Peonify meets the project's goals, and ends with the
// RESULT line when both drains ran.
func (r *report) goals(backend string) {
	check := r.goalChecker()
	peon, okPeon := r.get("drain", "peonify")
	peer, okPeer := r.get("drain", riverTuned.Label)
	if okPeon && okPeer {
		ratio := peon.jobsPerSec() / peer.jobsPerSec()
		check("drain ratio peonify/river >= 1.5", ratio >= 1.5, fmt.Sprintf("%.2f", ratio))
	}
	if raw, ok := r.get("drain", rawAsyncLabel); ok && okPeon {
		share := peon.jobsPerSec() / raw.jobsPerSec()
		check("drain >= 60% of the raw SQL ceiling", share >= 0.6, fmt.Sprintf("%.0f%% of %s", 100*share, rawAsyncLabel))
	}
	for _, mode := range []string{"idle-pickup", "idle-pickup-remote"} {
		idle, ok := r.get(mode, "peonify")
		if !ok {
			continue
		}
		check(mode+" p50 <= 1ms", idle.p50 <= time.Millisecond, fmtDur(idle.p50))
		if backend == "postgres" {
			check(mode+" p99 <= 5ms", idle.p99 <= 5*time.Millisecond, fmtDur(idle.p99))
		}
	}
	r.limitsGoals(check)
	r.workflowGoals(check)
	r.apiGoals(check)
	if okPeon && okPeer {
		fmt.Fprintln(r.w, resultLine(backend, "river", peon.jobsPerSec(), peer.jobsPerSec()))
	}
	r.limitsResult(backend)
	r.workflowResult(backend)
	r.apiResult(backend)
}

// repeat runs each of fns count times, interleaved so that a slow
// moment of the machine falls on every system alike, and returns for each
// its median run by jobs/s, with the spread of all its runs.
func repeat(count int, fns ...func() (result, error)) ([]result, error) {
	all := make([][]result, len(fns))
	for range count {
		for i, fn := range fns {
			res, err := fn()
			if err != nil {
				return nil, err
			}
			all[i] = append(all[i], res)
		}
	}
	out := make([]result, len(fns))
	for i, rs := range all {
		slices.SortFunc(rs, func(a, b result) int { return cmp.Compare(a.jobsPerSec(), b.jobsPerSec()) })
		med := rs[len(rs)/2]
		med.runs = len(rs)
		med.minRate, med.maxRate = rs[0].jobsPerSec(), rs[len(rs)-1].jobsPerSec()
		out[i] = med
	}
	return out, nil
}

func printHeader(w io.Writer) {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-21s %-23s %8s %8s %8s %8s %8s %9s  %s\n",
		"mode", "system", "jobs/s", "p50", "p99", "cpu/1k", "db-cpu/1k", "insert/s", "runs: jobs/s min-max")
}

func printResult(w io.Writer, r result) {
	rate, p50, p99, ins := "-", "-", "-", "-"
	if !strings.HasPrefix(r.mode, "idle-pickup") {
		rate = fmt.Sprintf("%.0f", r.jobsPerSec())
	}
	if r.hasLatency {
		p50, p99 = fmtDur(r.p50), fmtDur(r.p99)
	}
	if r.insertRate > 0 {
		ins = fmt.Sprintf("%.0f", r.insertRate)
	}
	spread := ""
	if r.runs > 1 {
		spread = fmt.Sprintf("%d: %.0f-%.0f", r.runs, r.minRate, r.maxRate)
	}
	db := "-"
	if r.hasDBCPU {
		db = fmt.Sprintf("%.3f", r.dbCPUPer1k())
	}
	line := fmt.Sprintf("%-21s %-23s %8s %8s %8s %8.3f %9s %9s  %s",
		r.mode, r.system, rate, p50, p99, r.cpuPer1k(), db, ins, spread)
	fmt.Fprintln(w, strings.TrimRight(line, " "))
}

// fmtDur prints a latency with three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.3gs", d.Seconds())
}

// resultLine is the report's last line, for scripts: the drain rates of
// Peonify and of the peer system named peerName (river, asynq, raw).
func resultLine(backend, peerName string, peonify, peer float64) string {
	ratio := 0.0
	if peer > 0 {
		ratio = peonify / peer
	}
	return fmt.Sprintf("RESULT backend=%s peonify=%.0f peer=%s:%.0f ratio=%.2f", backend, peonify, peerName, peer, ratio)
}

// sweepGrid is what "-sweep grid" tries: Workers/QueueSize pairs.
const sweepGrid = "20/20,20/1000,20/5000,50/50,50/1000,50/5000,100/100,100/1000,100/5000," +
	"200/200,200/1000,200/5000,500/500,500/1000,500/5000,2000/2000,2000/5000"

// parseSweep parses -sweep: comma-separated Workers/QueueSize pairs, each
// optionally followed by /S to split every Poll into S concurrent claims
// (an experiment), or "grid" for sweepGrid.
func parseSweep(spec string) ([]peonifyConfig, error) {
	if spec == "grid" {
		spec = sweepGrid
	}
	var out []peonifyConfig
	for _, item := range strings.Split(spec, ",") {
		var nums []int
		for _, f := range strings.Split(item, "/") {
			v, err := strconv.Atoi(f)
			if err != nil || v < 1 {
				return nil, fmt.Errorf("-sweep: %q is not Workers/QueueSize[/SplitPoll] with positive numbers", item)
			}
			nums = append(nums, v)
		}
		if len(nums) < 2 || len(nums) > 3 || nums[1] < 2 {
			return nil, fmt.Errorf("-sweep: %q is not Workers/QueueSize[/SplitPoll] with QueueSize at least 2", item)
		}
		c := peonifyConfig{Workers: nums[0], QueueSize: nums[1]}
		if len(nums) == 3 {
			c.SplitPoll = nums[2]
		}
		out = append(out, c)
	}
	return out, nil
}

// sweep drains with Peonify in each configuration, the runs of all of them
// interleaved, and reports which was fastest.
func sweep(ctx context.Context, r *runner, cfgs []peonifyConfig, n, count int, w io.Writer) error {
	printHeader(w)
	var runs []func() (result, error)
	for _, cfg := range cfgs {
		name := fmt.Sprintf("peonify %d/%d", cfg.Workers, cfg.QueueSize)
		if cfg.SplitPoll > 1 {
			name += fmt.Sprintf("/%d", cfg.SplitPoll)
		}
		c := contender{name: name, config: cfg.String(), make: newPeonify(cfg)}
		runs = append(runs, func() (result, error) { return r.drain(ctx, c, n) })
	}
	rs, err := repeat(count, runs...)
	if err != nil {
		return err
	}
	for _, res := range rs {
		printResult(w, res)
	}
	printFastest(w, rs)
	return nil
}

// printFastest names the fastest of rs and the load average after them.
func printFastest(w io.Writer, rs []result) {
	var best result
	for _, res := range rs {
		if res.jobsPerSec() > best.jobsPerSec() {
			best = res
		}
	}
	fmt.Fprintf(w, "\nfastest: %s (%.0f jobs/s)\n", best.config, best.jobsPerSec())
	if la := loadAverage(); la != "" {
		fmt.Fprintf(w, "load average after: %s\n", la)
	}
}
