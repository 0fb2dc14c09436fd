//go:build unix

package chaostest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/goleak"

	"github.com/peonify/peonify"
)

// childEnv carries a child's orders, as JSON, to the re-executed test
// binary; TestMain runs the child instead of the tests when it is set.
const childEnv = "PEONIFY_CHAOS_CHILD"

// orders tell a child process what to run.
type orders struct {
	Spec         streamSpec
	Ledger       string        // the ledger file of the cell
	Name         string        // the child's name in logs, and its consumer name where the stream has one
	Workers      int           // Config.Workers
	QueueSize    int           // Config.QueueSize
	Grace        time.Duration // Config.ShutdownGrace
	MaxAttempts  int           // Config.Retry.MaxAttempts
	Gate         string        // when set, runs of attempt 2 or later wait until this file exists
	Stuck        bool          // honour work.Stuck: such runs ignore their context and never return
	Sample       time.Duration // when set, record live heap and goroutines at this interval
	Backlog      int           // enqueue this many tasks before running (b-0000000 on)
	Timed        bool          // record when each handler run begins and returns (Ledger.Timed)
	StoreTimeout time.Duration // Config.StoreTimeout; the processor's default when 0
	Shutdown     time.Duration // Config.ShutdownTimeout; the processor's default when 0
}

// work is a task's payload: what its handler does. Every field is
// optional; the zero work completes at once.
type work struct {
	Ms    int    `json:"ms,omitempty"`    // how long the handler works, honouring its context
	Busy  bool   `json:"busy,omitempty"`  // work ignoring the context, like a blocking call
	Panic int    `json:"panic,omitempty"` // panic on attempts up to this one
	Fail  bool   `json:"fail,omitempty"`  // fail every attempt
	Crash bool   `json:"crash,omitempty"` // crash the process
	Stuck bool   `json:"stuck,omitempty"` // ignore the context and never return, in a child with orders.Stuck
	Pad   string `json:"pad,omitempty"`   // filler that makes the payload big

	// Result, when set, is the task's result (peonify.SetResult): this
	// text, followed, if the task has parents, by their results in
	// parentheses, in the order of its Parents.
	Result string `json:"result,omitempty"`
	// Parents are the results the task's parents must have set, by
	// parent ID (peonify.ParentResults); a task given others fails for
	// good, so that it ends dead with the reason.
	Parents map[string]string `json:"parents,omitempty"`
}

// Exit codes of a child.
const (
	exitOK     = 0 // Run returned nil and no goroutine was left
	exitCrash  = 2 // the Go runtime's code for an unrecovered panic: a poison task
	exitRunErr = 3 // Run returned an error (handlers that ignored their context)
	exitSetup  = 4 // the child could not start: see its output
	exitLeak   = 5 // goroutines were left after Run returned and the clients closed
)

// Test-only ledger records.
const (
	kindRun     = 'R' // task ID and attempt of a run of a poison task, written when it starts
	kindGated   = 'G' // task ID of a run waiting at the gate
	kindStuck   = 'S' // task ID of a run that will never return
	kindPanic   = 'P' // task ID and attempt of a run about to panic on purpose
	kindSample  = 'M' // milliseconds since start, live heap bytes, goroutines, completed runs
	kindBacklog = 'B' // tasks enqueued and milliseconds taken, before the processor started
	kindExit    = 'E' // the child's exitReport, as escaped JSON
	kindUp      = 'U' // written just before Run: the child is about to poll
)

// exitReport is a child's last record.
type exitReport struct {
	Code       int
	RunErr     string
	Leak       string // goroutines left after Run, if any
	Baseline   int    // goroutines before the stream was opened
	Goroutines int    // goroutines after Run returned and the clients closed
	Stuck      int    // runs that never returned
	Stats      peonify.Stats
	Drain      time.Duration // from SIGTERM to Run's return
	Close      time.Duration // closing the stream's client after Run returned
}

// childRun is the state of a running child.
type childRun struct {
	o         orders
	led       *Ledger
	stuck     atomic.Int64
	completed atomic.Int64
}

// runChild runs a processor as ordered by env until SIGTERM and returns
// the process's exit code.
func runChild(env string) int {
	var o orders
	if err := json.Unmarshal([]byte(env), &o); err != nil {
		fmt.Fprintf(os.Stderr, "chaostest child: %s holds bad orders: %v\n", childEnv, err)
		return exitSetup
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("child", o.Name)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	// The baseline includes the signal package's goroutine, which stays.
	baseline := goleak.IgnoreCurrent()
	baseCount := runtime.NumGoroutine()
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "chaostest child %s: %s: %v\n", o.Name, what, err)
		return exitSetup
	}

	led, err := OpenLedger(o.Ledger, LedgerConfig{})
	if err != nil {
		return fail("opening the ledger", err)
	}
	defer led.Close()
	st, err := openStream(ctx, o.Spec, o.Name, logger)
	if err != nil {
		return fail("opening the stream", err)
	}
	c := &childRun{o: o, led: led}
	if o.Backlog > 0 {
		if err := c.fillBacklog(ctx, st.enq); err != nil {
			_ = st.s.Close(context.Background())
			st.done()
			return fail("enqueueing the backlog", err)
		}
	}

	middleware := []peonify.Middleware{led.Middleware()}
	if o.Timed {
		middleware = append(middleware, led.Timed()) // last: its times are the handler's
	}
	p, err := peonify.New(peonify.Config{
		Workers:         o.Workers,
		QueueSize:       o.QueueSize,
		ShutdownGrace:   o.Grace,
		PollInterval:    250 * time.Millisecond,
		StoreTimeout:    o.StoreTimeout,
		ShutdownTimeout: o.Shutdown,
		Retry:           peonify.RetryPolicy{MaxAttempts: o.MaxAttempts, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		Middleware:      middleware,
		Logger:          logger,
	})
	if err != nil {
		return fail("configuring the processor", err)
	}
	if err := p.AddTaskList(peonify.TaskList{"chaos": c.handler()}); err != nil {
		return fail("registering the handler", err)
	}
	s := st.s
	if o.Backlog == 0 {
		s = led.Wrap(s) // a million claims and acks would only slow the backlog down
	}
	if err := p.AddStream(s, peonify.StreamName(o.Spec.Kind)); err != nil {
		return fail("adding the stream", err)
	}

	sampled := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampled)
		c.sample(stopSampling)
	}()
	if err := led.write(kindUp); err != nil {
		return fail("writing the ledger", err)
	}
	var termAt atomic.Pointer[time.Time]
	context.AfterFunc(ctx, func() { now := time.Now(); termAt.Store(&now) })
	runErr := p.Run(ctx) // closes the stream
	ran := time.Now()
	close(stopSampling)
	<-sampled
	st.done()
	closed := time.Since(ran)
	if closed > time.Second {
		logger.Warn("chaostest child: closing the stream's client took long", "took", closed)
	}
	stop()

	r := exitReport{Baseline: baseCount, Stuck: int(c.stuck.Load()), Stats: p.Stats(), Close: closed}
	if at := termAt.Load(); at != nil {
		r.Drain = ran.Sub(*at)
	}
	r.Stats.InFlight = nil
	if runErr != nil {
		r.RunErr = runErr.Error()
		r.Code = exitRunErr
	}
	if r.Stuck == 0 {
		// pgx closes a connection whose query timed out in a goroutine
		// of its own that drains it until a fixed 15s deadline; on a
		// half-open connection that outlives Run and the pool's close.
		// It ends by itself, and is pgx's, not a leak of Peonify's.
		pgxDrain := goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgconn.(*PgConn).asyncClose.func1")
		if err := goleak.Find(baseline, pgxDrain); err != nil {
			r.Leak = err.Error()
		}
	} else {
		// Handlers that never return keep their worker goroutines, and
		// Run's wait for them: allow those, and nothing else.
		allowed := baseCount + r.Stuck + 1
		waitFor(2*time.Second, func() bool { return runtime.NumGoroutine() <= allowed })
		if n := runtime.NumGoroutine(); n > allowed {
			r.Leak = fmt.Sprintf("%d goroutines, more than the %d before the stream opened plus %d stuck handlers and Run's wait for them", n, baseCount, r.Stuck)
		}
	}
	r.Goroutines = runtime.NumGoroutine()
	if r.Leak != "" && r.Code == exitOK {
		r.Code = exitLeak
	}
	b, _ := json.Marshal(r)
	if err := led.write(kindExit, escape(string(b))); err != nil {
		fmt.Fprintf(os.Stderr, "chaostest child %s: %v\n", o.Name, err)
	}
	if r.Leak != "" {
		fmt.Fprintf(os.Stderr, "chaostest child %s: goroutines left after Run: %s\n", o.Name, r.Leak)
	}
	return r.Code
}

// handler returns the handler of "chaos" tasks: it decodes the payload as
// work with peonify.JSON, so a malformed payload goes dead as in any
// program, and does what the work says.
func (c *childRun) handler() peonify.Handler {
	return peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
		if sum, ok := t.Headers[sumHeader]; ok && sum != checksum(t.Payload) {
			return peonify.SkipRetry(fmt.Errorf("the payload of %d bytes changed on its way: its %s header does not match", len(t.Payload), sumHeader))
		}
		return peonify.JSON(func(ctx context.Context, w work) error { return c.run(ctx, t, w) }).Execute(ctx, t)
	})
}

// sumHeader is the task header that carries a checksum of the payload,
// checked by the handler: a payload must arrive byte for byte.
const sumHeader = "chaos-sha256"

func checksum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (c *childRun) run(ctx context.Context, t *peonify.Task, w work) error {
	if w.Fail || w.Crash {
		if err := c.led.write(kindRun, escape(t.ID), strconv.Itoa(t.Attempt)); err != nil {
			return err
		}
	}
	if c.o.Gate != "" && t.Attempt > 1 {
		if err := c.gate(ctx, t); err != nil {
			return err
		}
	}
	switch {
	case w.Crash:
		go func() { panic("chaostest: a poison task crashes its process, on purpose") }()
		select {}
	case w.Stuck && c.o.Stuck:
		c.stuck.Add(1)
		_ = c.led.write(kindStuck, escape(t.ID))
		stuck()
	case t.Attempt <= w.Panic:
		if err := c.led.write(kindPanic, escape(t.ID), strconv.Itoa(t.Attempt)); err != nil {
			return err
		}
		panic(fmt.Sprintf("chaostest: task %s panics on attempt %d, on purpose", t.ID, t.Attempt))
	case w.Fail:
		return errors.New("chaostest: this task fails every attempt, on purpose")
	}
	if w.Ms > 0 {
		d := time.Duration(w.Ms) * time.Millisecond
		if w.Busy {
			time.Sleep(d)
		} else {
			timer := time.NewTimer(d)
			select {
			case <-ctx.Done():
				timer.Stop()
				return context.Cause(ctx)
			case <-timer.C:
			}
		}
	}
	if w.Result != "" || len(w.Parents) > 0 {
		if err := results(ctx, t, w); err != nil {
			return err
		}
	}
	c.completed.Add(1)
	return nil
}

// results checks the results of t's parents against w.Parents and sets
// t's result as w.Result says.
func results(ctx context.Context, t *peonify.Task, w work) error {
	got, err := peonify.ParentResults(ctx)
	if err != nil {
		return err // the store failed: try again
	}
	for _, id := range t.Parents {
		want, ok := w.Parents[id]
		if v, has := got[id]; ok && (!has || string(v) != want) {
			return peonify.SkipRetry(fmt.Errorf("chaostest: parent %s's result is %q (present: %v), want %q: this task started before its parent succeeded, or was given another's result",
				id, v, has, want))
		}
	}
	if w.Result == "" {
		return nil
	}
	return peonify.SetResult(ctx, []byte(resultOf(w.Result, t.Parents, got)))
}

// resultOf is the result a task sets: text, followed by its parents'
// results, in the order of parents, in parentheses.
func resultOf(text string, parents []string, results map[string][]byte) string {
	if len(parents) == 0 {
		return text
	}
	vals := make([]string, len(parents))
	for i, id := range parents {
		vals[i] = string(results[id])
	}
	return text + "(" + strings.Join(vals, ",") + ")"
}

// gate holds a run until the gate file exists.
func (c *childRun) gate(ctx context.Context, t *peonify.Task) error {
	if err := c.led.write(kindGated, escape(t.ID)); err != nil {
		return err
	}
	for {
		if _, err := os.Stat(c.o.Gate); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stuck never returns, whatever its context says: a handler blocked in a
// call that takes no context.
func stuck() { select {} }

// fillBacklog enqueues o.Backlog tasks named b-0000000 on.
func (c *childRun) fillBacklog(ctx context.Context, enq peonify.Enqueuer) error {
	start := time.Now()
	const batch = 5000
	for i := 0; i < c.o.Backlog; i += batch {
		tasks := make([]*peonify.Task, min(batch, c.o.Backlog-i))
		for j := range tasks {
			tasks[j] = &peonify.Task{ID: backlogID(i + j), Type: "chaos"}
		}
		if err := enq.Enqueue(ctx, tasks...); err != nil {
			return err
		}
	}
	return c.led.write(kindBacklog, strconv.Itoa(c.o.Backlog), strconv.FormatInt(time.Since(start).Milliseconds(), 10))
}

func backlogID(i int) string { return fmt.Sprintf("b-%07d", i) }

// sample records the live heap and the goroutines every o.Sample until
// stop is closed.
func (c *childRun) sample(stop <-chan struct{}) {
	if c.o.Sample <= 0 {
		<-stop
		return
	}
	start := time.Now()
	tick := time.NewTicker(c.o.Sample)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		_ = c.led.write(kindSample, strconv.FormatInt(time.Since(start).Milliseconds(), 10),
			strconv.FormatUint(ms.HeapAlloc, 10), strconv.Itoa(runtime.NumGoroutine()),
			strconv.FormatInt(c.completed.Load(), 10))
	}
}
