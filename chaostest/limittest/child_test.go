//go:build unix

package limittest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/chaostest"
)

// childEnv carries a child's orders, as JSON, to the re-executed test
// binary; TestMain runs the child instead of the tests when it is set.
const childEnv = "PEONIFY_LIMITTEST_CHILD"

// orders tell a child process what to run.
type orders struct {
	Spec         streamSpec
	Ledger       string // the scenario's ledger file
	Name         string // the child's name in logs and to the server
	Types        []string
	Limits       []peonify.Limit
	Workers      int
	QueueSize    int
	PollInterval time.Duration // 0 for the processor's default
	MaxAttempts  int
	Gate         string // when set, the processor runs only once this file exists
}

// work is a task's payload: what its handler does.
type work struct {
	Ms       int  `json:"ms,omitempty"`        // how long the handler works, honouring its context
	FailOnce bool `json:"fail_once,omitempty"` // fail the first attempt
}

// Exit codes of a child.
const (
	exitOK     = 0
	exitRunErr = 3 // Run returned an error
	exitSetup  = 4 // the child could not start: see its output
)

// pollMark is the name of the ledger mark a child writes for each Poll,
// with the number of tasks it returned.
const pollMark = "poll"

// upMark is the mark a child writes once it is ready to run its
// processor, before it waits at its gate if it has one.
const upMark = "up"

// runChild runs a processor as ordered by env until SIGTERM and returns
// the process's exit code.
func runChild(env string) int {
	var o orders
	if err := json.Unmarshal([]byte(env), &o); err != nil {
		fmt.Fprintf(os.Stderr, "limittest child: %s holds bad orders: %v\n", childEnv, err)
		return exitSetup
	}
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "limittest child %s: %s: %v\n", o.Name, what, err)
		return exitSetup
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("child", o.Name)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	led, err := chaostest.OpenLedger(o.Ledger, chaostest.LedgerConfig{})
	if err != nil {
		return fail("opening the ledger", err)
	}
	defer led.Close()
	st, err := openStream(ctx, o.Spec, o.Name, logger)
	if err != nil {
		return fail("opening the stream", err)
	}
	defer st.done()
	p, err := peonify.New(peonify.Config{
		Workers:       o.Workers,
		QueueSize:     o.QueueSize,
		PollInterval:  o.PollInterval,
		ShutdownGrace: 2 * time.Second,
		Retry:         peonify.RetryPolicy{MaxAttempts: o.MaxAttempts, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond},
		// The ledger's Middleware records completions; Timed, next to
		// the handler, when each run began and returned.
		Middleware: []peonify.Middleware{led.Middleware(), led.Timed()},
		Logger:     logger,
	})
	if err != nil {
		_ = st.s.Close(context.Background())
		return fail("configuring the processor", err)
	}
	tl := peonify.TaskList{}
	for _, typ := range o.Types {
		tl[typ] = handler
	}
	if err := p.AddTaskList(tl); err != nil {
		_ = st.s.Close(context.Background())
		return fail("registering the handlers", err)
	}
	s := led.Wrap(polls{Stream: st.s, led: led})
	if err := p.AddStream(s, peonify.StreamName(o.Spec.Kind), peonify.Limits(o.Limits...)); err != nil {
		_ = st.s.Close(context.Background())
		return fail("adding the stream with its limits", err)
	}
	if err := led.Mark(upMark); err != nil {
		return fail("writing the ledger", err)
	}
	for o.Gate != "" && ctx.Err() == nil {
		if _, err := os.Stat(o.Gate); err == nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := p.Run(ctx); err != nil { // closes the stream
		fmt.Fprintf(os.Stderr, "limittest child %s: Run: %v\n", o.Name, err)
		return exitRunErr
	}
	return exitOK
}

// handler is the handler of every task type: it does what the payload
// says.
var handler = peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
	return peonify.JSON(func(ctx context.Context, w work) error { return run(ctx, t, w) }).Execute(ctx, t)
})

func run(ctx context.Context, t *peonify.Task, w work) error {
	if w.FailOnce && t.Attempt <= 1 {
		return errors.New("limittest: this task fails its first attempt, on purpose")
	}
	if w.Ms > 0 {
		timer := time.NewTimer(time.Duration(w.Ms) * time.Millisecond)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-timer.C:
		}
	}
	return nil
}

// polls marks each Poll in the ledger, with how many tasks it returned,
// so that a test can count a process's calls of its store. Unwrap leads
// the processor to the stream's capabilities, its Limiter among them.
type polls struct {
	peonify.Stream
	led *chaostest.Ledger
}

func (p polls) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	ds, err := p.Stream.Poll(ctx, limit)
	_ = p.led.Mark(pollMark, strconv.Itoa(len(ds)))
	return ds, err
}

// Unwrap returns the stream.
func (p polls) Unwrap() peonify.Stream { return p.Stream }
