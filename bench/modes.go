package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// result is one line of the report.
type result struct {
	mode, system, config string
	n                    int
	elapsed              time.Duration // from start of work until all n were done
	cpu                  time.Duration // process CPU time over elapsed
	dbCPU                time.Duration // CPU time of the Postgres server processes serving the system
	hasDBCPU             bool
	p50, p99             time.Duration
	hasLatency           bool
	insertRate           float64 // tasks/s of the preceding bulk insert, 0 if none

	detail string // what the system says about the run, for -v

	runs             int // runs this result is the median of
	minRate, maxRate float64
}

func (r result) jobsPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.n) / r.elapsed.Seconds()
}

// cpuPer1k is the process's CPU seconds per 1,000 tasks.
func (r result) cpuPer1k() float64 {
	if r.n == 0 {
		return 0
	}
	return r.cpu.Seconds() * 1000 / float64(r.n)
}

// dbCPUPer1k is the database server's CPU seconds per 1,000 tasks.
func (r result) dbCPUPer1k() float64 {
	if r.n == 0 {
		return 0
	}
	return r.dbCPU.Seconds() * 1000 / float64(r.n)
}

// remoteInserter is implemented by systems that can insert through a
// second handle on their database, as another process would.
type remoteInserter interface {
	RemoteInsert(ctx context.Context, first, count int) error
}

// serverCPUer is implemented by systems on a Postgres server on this
// machine, whose server processes' CPU time the report shows.
type serverCPUer interface {
	schema() *freshSchema
}

// contender is a system to run, with the name and configuration the report
// shows.
type contender struct {
	name, config string
	make         newSystemFunc
}

// runner runs the modes of one benchmark.
type runner struct {
	env        *env
	batch      int           // bulk insert batch size
	producers  int           // concurrent producers in insert-while-working
	idleTasks  int           // tasks in the idle-pickup run
	idleEvery  time.Duration // interval between them
	timeout    time.Duration // longest wait for a run to finish
	profileDir string        // where CPU profiles go, if set
}

// setup makes a fresh system for one run.
func (r *runner) setup(ctx context.Context, c contender, n int) (system, *recorder, error) {
	rec := newRecorder(n)
	sys, err := c.make(ctx, r.env, rec)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: set up: %w", c.name, err)
	}
	return sys, rec, nil
}

// sample is the process's and the server's CPU time at one moment.
type sample struct {
	cpu time.Duration
	db  map[int]time.Duration // nil if the server's CPU cannot be read
}

func takeSample(ctx context.Context, sys system) sample {
	var db map[int]time.Duration
	if s, ok := sys.(serverCPUer); ok && s.schema() != nil {
		db = s.schema().backendCPU(ctx)
	}
	return sample{cpu: cpuTime(), db: db}
}

// finish waits for every task to complete, samples the CPU times, stops
// the system and checks that each task ran once and none is left in the
// database.
func (r *runner) finish(ctx context.Context, c contender, sys system, rec *recorder) (sample, error) {
	timer := time.NewTimer(r.timeout)
	defer timer.Stop()
	select {
	case <-rec.done:
	case <-timer.C:
		return sample{}, fmt.Errorf("%s: only %d of %d tasks completed (%d started) within %s",
			c.name, rec.completed.Load(), rec.n, rec.distinct.Load(), r.timeout)
	case <-ctx.Done():
		return sample{}, ctx.Err()
	}
	end := takeSample(ctx, sys)
	stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := sys.Stop(stopCtx); err != nil {
		return sample{}, fmt.Errorf("%s: stop: %w", c.name, err)
	}
	if err := rec.check(); err != nil {
		return sample{}, fmt.Errorf("%s: %w", c.name, err)
	}
	if err := sys.Verify(ctx, rec.n); err != nil {
		return sample{}, fmt.Errorf("%s: %w", c.name, err)
	}
	return end, nil
}

// profile starts a CPU profile of one run if -profile is set, and returns
// the function that ends it.
func (r *runner) profile(mode, name string) (func(), error) {
	if r.profileDir == "" {
		return func() {}, nil
	}
	clean := strings.NewReplacer(" ", "", "(", "", ")", "", ",", "").Replace(name)
	f, err := os.Create(filepath.Join(r.profileDir, fmt.Sprintf("%s-%s-%s.pprof", r.env.backend, mode, clean)))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// insertAll bulk-inserts n tasks in batches and returns the insert rate.
func (r *runner) insertAll(ctx context.Context, sys system, n int) (float64, error) {
	t0 := time.Now()
	for first := 0; first < n; first += r.batch {
		if err := sys.Insert(ctx, first, min(r.batch, n-first)); err != nil {
			return 0, fmt.Errorf("insert: %w", err)
		}
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// drain inserts n tasks first, then times the system working all of them.
// Latency is from the start of work to each handler's start.
func (r *runner) drain(ctx context.Context, c contender, n int) (result, error) {
	return r.drainAs(ctx, "drain", c, n)
}

// drainAs is drain reported as mode.
func (r *runner) drainAs(ctx context.Context, mode string, c contender, n int) (result, error) {
	res := result{mode: mode, system: c.name, config: c.config, n: n, hasLatency: true}
	sys, rec, err := r.setup(ctx, c, n)
	if err != nil {
		return res, err
	}
	defer sys.Close()
	if res.insertRate, err = r.insertAll(ctx, sys, n); err != nil {
		return res, fmt.Errorf("%s: %w", c.name, err)
	}
	ph, err := r.startPhase(ctx, mode, c.name, sys, rec)
	if err != nil {
		return res, err
	}
	rec.inserted(0, n, ph.start)
	if err := sys.Start(ctx); err != nil {
		ph.stopProfile()
		return res, fmt.Errorf("%s: start: %w", c.name, err)
	}
	if err := r.endPhase(ctx, ph, &res, c, sys, rec); err != nil {
		return res, err
	}
	return res, nil
}

// measure fills res from a finished run that started at start (recorder
// time), with the CPU samples taken at its start and when all was done.
func (r *runner) measure(res *result, sys system, rec *recorder, start int64, begin, end sample) {
	res.elapsed = time.Duration(rec.doneAt.Load() - start)
	res.cpu = end.cpu - begin.cpu
	res.dbCPU, res.hasDBCPU = serverCPUBetween(begin.db, end.db)
	if d, ok := sys.(interface{ Detail() string }); ok {
		res.detail = d.Detail()
	}
	lat := rec.latencies()
	res.p50, res.p99 = percentile(lat, 0.50), percentile(lat, 0.99)
}

// insertWhileWorking starts the system first, then has r.producers
// goroutines insert n tasks in batches of 100 as fast as they can. The time
// runs from the first insert until all n are done; latency is from each
// batch's committed insert to its handler's start.
func (r *runner) insertWhileWorking(ctx context.Context, c contender, n int) (result, error) {
	const batch = 100
	res := result{mode: "insert-while-working", system: c.name, config: c.config, n: n, hasLatency: true}
	sys, rec, err := r.setup(ctx, c, n)
	if err != nil {
		return res, err
	}
	defer sys.Close()
	ph, err := r.startIdlePhase(ctx, "insert-while-working", c, sys, rec)
	if err != nil {
		return res, err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, r.producers)
	for range r.producers {
		wg.Go(func() {
			for {
				first := int(next.Add(batch)) - batch
				if first >= n {
					return
				}
				count := min(batch, n-first)
				if err := sys.Insert(ctx, first, count); err != nil {
					errs <- fmt.Errorf("%s: insert: %w", c.name, err)
					return
				}
				rec.inserted(first, count, rec.now())
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		ph.stopProfile()
		return res, err
	}
	if err := r.endPhase(ctx, ph, &res, c, sys, rec); err != nil {
		return res, err
	}
	return res, nil
}

// idle inserts one task every r.idleEvery into an idle system and measures
// the time from each insert's return to its handler's start.
//
// With remote set, the tasks are inserted through a second handle on the
// database (a producer-only stream, an insert-only River client), as by
// another process: the processor then learns of them through the
// database's notifications rather than from its own handle.
func (r *runner) idle(ctx context.Context, c contender, remote bool) (result, error) {
	n := r.idleTasks
	res := result{mode: "idle-pickup", system: c.name, config: c.config, n: n, hasLatency: true}
	if remote {
		res.mode = "idle-pickup-remote"
	}
	sys, rec, err := r.setup(ctx, c, n)
	if err != nil {
		return res, err
	}
	defer sys.Close()
	insert := sys.Insert
	if remote {
		rs, ok := sys.(remoteInserter)
		if !ok {
			return res, fmt.Errorf("%s has no remote producer on %s", c.name, r.env.backend)
		}
		insert = rs.RemoteInsert
	}
	if err := sys.Start(ctx); err != nil {
		return res, fmt.Errorf("%s: start: %w", c.name, err)
	}
	time.Sleep(500 * time.Millisecond) // let the system go idle
	begin := takeSample(ctx, sys)
	start := rec.now()
	tick := time.NewTicker(r.idleEvery)
	defer tick.Stop()
	for i := range n {
		if err := insert(ctx, i, 1); err != nil {
			return res, fmt.Errorf("%s: insert: %w", c.name, err)
		}
		rec.inserted(i, 1, rec.now())
		select {
		case <-tick.C:
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	end, err := r.finish(ctx, c, sys, rec)
	if err != nil {
		return res, err
	}
	r.measure(&res, sys, rec, start, begin, end)
	return res, nil
}

// phase is a measured part of a run: its profile, and the samples and
// recorder time it starts from.
type phase struct {
	stopProfile func()
	begin       sample
	start       int64
}

// startPhase begins a measured phase of mode: it collects garbage, starts
// the profile and takes the samples and time the phase starts from.
func (r *runner) startPhase(ctx context.Context, mode, name string, sys system, rec *recorder) (phase, error) {
	runtime.GC()
	stopProfile, err := r.profile(mode, name)
	if err != nil {
		return phase{}, err
	}
	return phase{stopProfile: stopProfile, begin: takeSample(ctx, sys), start: rec.now()}, nil
}

// startIdlePhase starts sys, lets it reach its steady idle state, and then
// begins a measured phase of mode, for the modes that give tasks to a
// system already running.
func (r *runner) startIdlePhase(ctx context.Context, mode string, c contender, sys system, rec *recorder) (phase, error) {
	if err := sys.Start(ctx); err != nil {
		return phase{}, fmt.Errorf("%s: start: %w", c.name, err)
	}
	time.Sleep(100 * time.Millisecond)
	return r.startPhase(ctx, mode, c.name, sys, rec)
}

// endPhase waits for the run to finish, stops the profile and fills res.
func (r *runner) endPhase(ctx context.Context, ph phase, res *result, c contender, sys system, rec *recorder) error {
	end, err := r.finish(ctx, c, sys, rec)
	ph.stopProfile()
	if err != nil {
		return err
	}
	r.measure(res, sys, rec, ph.start, ph.begin, end)
	return nil
}
