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
	"strings"
	"syscall"
	"time"
)

// options are the command's flags.
type options struct {
	backend      string
	tasks        int
	modes        string
	pgURL        string
	pgConns      int
	batch        int
	producers    int
	idleTasks    int
	idleEvery    time.Duration
	rawLoops     int
	workers      int
	queueSize    int
	riverDefault bool
	sweep        bool
	count        int
	timeout      time.Duration
	profileDir   string
	verbose      bool
}

// Peonify's configuration for the benchmark, chosen by measuring drains on
// both backends (see README.md): enough workers that a no-op handler never
// waits for one, and a local queue deep enough that each claim is a large
// batch.
const (
	defaultWorkers   = 200
	defaultQueueSize = 1000
)

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.backend, "backend", "sqlite", "database both libraries use: sqlite or postgres")
	fs.IntVar(&o.tasks, "tasks", 50000, "tasks in the drain and insert-while-working runs")
	fs.StringVar(&o.modes, "modes", "drain,insert,idle",
		"comma-separated runs: drain, insert (insert-while-working, postgres only), idle, raw (postgres only)")
	fs.StringVar(&o.pgURL, "pg-url", os.Getenv("PEONIFY_TEST_POSTGRES_URL"),
		"Postgres URL (default $PEONIFY_TEST_POSTGRES_URL); each run makes and drops its own schema there")
	fs.IntVar(&o.pgConns, "pg-conns", 20, "connection pool size of every system on postgres")
	fs.IntVar(&o.batch, "batch", 1000, "tasks per bulk insert before a drain")
	fs.IntVar(&o.producers, "producers", 2, "concurrent producers in insert-while-working")
	fs.IntVar(&o.idleTasks, "idle-tasks", 200, "tasks in the idle-pickup run")
	fs.DurationVar(&o.idleEvery, "idle-every", 20*time.Millisecond, "interval between idle-pickup tasks")
	fs.IntVar(&o.rawLoops, "raw-loops", 4, "concurrent loops of the raw SQL ceiling")
	fs.IntVar(&o.workers, "workers", defaultWorkers, "Peonify Config.Workers")
	fs.IntVar(&o.queueSize, "queue-size", defaultQueueSize, "Peonify Config.QueueSize")
	fs.IntVar(&o.count, "count", 3, "runs of each drain and insert-while-working, interleaved; the report shows the median")
	fs.BoolVar(&o.sweep, "sweep", false, "only drain with Peonify in several Workers/QueueSize configurations, to choose the best")
	fs.BoolVar(&o.riverDefault, "river-default", true, "on postgres, also drain with River's default configuration")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "longest wait for one run to finish")
	fs.StringVar(&o.profileDir, "profile", "", "write a CPU profile of each drain and insert-while-working run into this directory")
	fs.BoolVar(&o.verbose, "v", false, "log the libraries' warnings")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.backend != "sqlite" && o.backend != "postgres":
		return o, fmt.Errorf("-backend %q: use sqlite or postgres", o.backend)
	case o.tasks < 1 || o.idleTasks < 1 || o.batch < 1 || o.producers < 1 || o.rawLoops < 1 || o.count < 1:
		return o, errors.New("-tasks, -idle-tasks, -batch, -producers, -raw-loops and -count must be at least 1")
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
	for _, m := range strings.Split(o.modes, ",") {
		switch m {
		case "drain", "insert", "idle", "raw":
		default:
			return o, fmt.Errorf("-modes: unknown run %q: use drain, insert, idle or raw", m)
		}
	}
	return o, nil
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

	pcfg := peonifyConfig{Workers: o.workers, QueueSize: o.queueSize}
	peon := contender{name: "peonify", config: pcfg.String(), make: newPeonify(pcfg)}
	peer := contender{name: riverTuned.Label, config: riverTuned.String(), make: newRiver(riverTuned)}
	def := contender{name: riverDefault.Label, config: riverDefault.String(), make: newRiver(riverDefault)}

	fmt.Fprintf(w, "peonify bench: backend=%s tasks=%d %s/%s GOMAXPROCS=%d %s\n",
		o.backend, o.tasks, runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), runtime.Version())
	if o.backend == "sqlite" {
		fmt.Fprintln(w, "sqlite: a fresh file per run, WAL, synchronous=FULL for both")
	} else {
		fmt.Fprintf(w, "postgres: a fresh schema per run, pool of %d connections for each system\n", o.pgConns)
	}

	if o.sweep {
		return sweep(ctx, r, o.tasks, o.count, w)
	}

	modes := map[string]bool{}
	for _, m := range strings.Split(o.modes, ",") {
		modes[m] = true
	}
	var results []result
	printHeader(w)
	// show prints the median of each set of runs; the first is the
	// caller's to keep.
	show := func(rs []result, err error) ([]result, error) {
		if err != nil {
			return nil, err
		}
		for _, res := range rs {
			results = append(results, res)
			printResult(w, res)
		}
		return rs, nil
	}

	var peonDrain, peerDrain, rawAsync result
	if modes["drain"] {
		runs := []func() (result, error){
			func() (result, error) { return r.drain(ctx, peon, o.tasks) },
			func() (result, error) { return r.drain(ctx, peer, o.tasks) },
		}
		if o.backend == "postgres" && o.riverDefault {
			runs = append(runs, func() (result, error) { return r.drain(ctx, def, o.tasks) })
		}
		rs, err := show(repeat(o.count, runs...))
		if err != nil {
			return err
		}
		peonDrain, peerDrain = rs[0], rs[1]
	}
	if modes["raw"] || (modes["drain"] && o.backend == "postgres") {
		if o.backend != "postgres" {
			return errors.New("-modes raw needs -backend postgres")
		}
		rs, err := show(repeat(o.count,
			func() (result, error) { return rawCeiling(ctx, e, o.tasks, o.rawLoops, true) },
			func() (result, error) { return rawCeiling(ctx, e, o.tasks, o.rawLoops, false) }))
		if err != nil {
			return err
		}
		rawAsync = rs[0]
	}
	if modes["insert"] && o.backend == "postgres" {
		if _, err := show(repeat(o.count,
			func() (result, error) { return r.insertWhileWorking(ctx, peon, o.tasks) },
			func() (result, error) { return r.insertWhileWorking(ctx, peer, o.tasks) })); err != nil {
			return err
		}
	}
	var peonIdle result
	if modes["idle"] {
		rs, err := show(repeat(1,
			func() (result, error) { return r.idle(ctx, peon) },
			func() (result, error) { return r.idle(ctx, peer) }))
		if err != nil {
			return err
		}
		peonIdle = rs[0]
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "configurations:")
	seen := map[string]bool{}
	for _, res := range results {
		if !seen[res.system] {
			seen[res.system] = true
			fmt.Fprintf(w, "  %-26s %s\n", res.system, res.config)
		}
	}
	if peonDrain.n > 0 && peerDrain.n > 0 {
		printGoals(w, o.backend, peonDrain, peerDrain, rawAsync, peonIdle)
		fmt.Fprintln(w, resultLine(o.backend, peonDrain.jobsPerSec(), peerDrain.jobsPerSec()))
	}
	return nil
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
	fmt.Fprintf(w, "%-21s %-23s %8s %8s %8s %9s %10s  %s\n",
		"mode", "system", "jobs/s", "p50", "p99", "cpu-s/1k", "insert/s", "runs: jobs/s min-max")
}

func printResult(w io.Writer, r result) {
	rate, p50, p99, ins := "-", "-", "-", "-"
	if r.mode != "idle-pickup" {
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
	line := fmt.Sprintf("%-21s %-23s %8s %8s %8s %9.3f %10s  %s", r.mode, r.system, rate, p50, p99, r.cpuPer1k(), ins, spread)
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

// printGoals says whether Peonify meets the project's goals.
func printGoals(w io.Writer, backend string, peon, peer, raw, idle result) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "goals:")
	check := func(name string, ok bool, got string) {
		mark := "met"
		if !ok {
			mark = "MISSED"
		}
		fmt.Fprintf(w, "  %-40s %-7s %s\n", name, mark, got)
	}
	ratio := peon.jobsPerSec() / peer.jobsPerSec()
	check("drain ratio peonify/river >= 1.5", ratio >= 1.5, fmt.Sprintf("%.2f", ratio))
	if backend == "postgres" && raw.n > 0 {
		share := peon.jobsPerSec() / raw.jobsPerSec()
		check("drain >= 60% of the raw SQL ceiling", share >= 0.6, fmt.Sprintf("%.0f%%", 100*share))
	}
	if idle.n > 0 {
		check("idle pickup p50 <= 1ms", idle.p50 <= time.Millisecond, fmtDur(idle.p50))
		if backend == "postgres" {
			check("idle pickup p99 <= 5ms", idle.p99 <= 5*time.Millisecond, fmtDur(idle.p99))
		}
	}
}

// resultLine is the report's last line, for scripts.
func resultLine(backend string, peonify, peer float64) string {
	ratio := 0.0
	if peer > 0 {
		ratio = peonify / peer
	}
	return fmt.Sprintf("RESULT backend=%s peonify=%.0f peer=river:%.0f ratio=%.2f", backend, peonify, peer, ratio)
}

// sweepWorkers and sweepQueues are the configurations -sweep tries.
var (
	sweepWorkers = []int{20, 50, 100, 200, 500, 2000}
	sweepQueues  = []int{0, 1000, 5000} // 0: QueueSize = Workers
)

// sweep drains with Peonify in each configuration of the grid and reports
// which was fastest.
func sweep(ctx context.Context, r *runner, n, count int, w io.Writer) error {
	printHeader(w)
	var best result
	for _, workers := range sweepWorkers {
		for _, q := range sweepQueues {
			cfg := peonifyConfig{Workers: workers, QueueSize: cmp.Or(q, workers)}
			if q != 0 && q <= workers {
				continue
			}
			c := contender{name: fmt.Sprintf("peonify W=%d Q=%d", cfg.Workers, cfg.QueueSize),
				config: cfg.String(), make: newPeonify(cfg)}
			rs, err := repeat(count, func() (result, error) { return r.drain(ctx, c, n) })
			if err != nil {
				return err
			}
			res := rs[0]
			printResult(w, res)
			if res.jobsPerSec() > best.jobsPerSec() {
				best = res
			}
		}
	}
	fmt.Fprintf(w, "\nfastest: %s (%.0f jobs/s)\n", best.config, best.jobsPerSec())
	return nil
}
