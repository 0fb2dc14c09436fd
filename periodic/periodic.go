package periodic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/peonify/peonify"
)

// maxNameLen keeps UniqueKey within peonify.MaxUniqueKeyLen.
const maxNameLen = 200

// maxWait caps one timer, so that the scheduler notices a wall clock that
// jumped (NTP, a suspended machine) within a minute.
const maxWait = time.Minute

// ErrDuplicateJob is matched by the error of Add for a job whose Name is
// already taken.
var ErrDuplicateJob = errors.New("periodic: a job with this name was already added")

// SpecError reports a Job.Spec that cannot be used.
type SpecError struct {
	Job  string // the job's Name
	Spec string // the spec as given
	Err  error  // what is wrong with it
}

// Error names the job and its spec, says what is wrong, and shows valid specs.
func (e *SpecError) Error() string {
	return fmt.Sprintf("periodic: job %q: invalid Spec %q: %v; %s", e.Job, e.Spec, e.Err, specExamples)
}

// Unwrap returns the underlying parse error.
func (e *SpecError) Unwrap() error { return e.Err }

// Config configures a Scheduler. The zero value is valid: every field says
// what its zero value means. Negative durations are errors.
type Config struct {
	// Location is the time zone of cron expressions that have no CRON_TZ=
	// prefix. Defaults to UTC, so that processors on machines set to
	// different zones compute the same slots.
	Location *time.Location

	// DisableCatchUp turns catch-up off. By default, when Run starts (or a
	// job is added while Run runs), the last slot that passed before it
	// (only the last one: a catch-up never floods the stream) is
	// enqueued at once; the task ID of that slot is deterministic, so if
	// another processor enqueued it already the stream reports a duplicate
	// and nothing runs twice. With DisableCatchUp a job starts at its next
	// slot.
	DisableCatchUp bool

	// CatchUpWindow limits catch-up to a missed slot at most this old when
	// the job starts. Defaults to no limit.
	CatchUpWindow time.Duration

	// Lead is how long before its slot each task is enqueued, with
	// Task.RunAt set to the slot so that it does not run early. While the
	// task waits in the stream, the schedulers of other processors, whose
	// clocks may run a little behind, find it there and report a
	// duplicate; without a lead, a fast task could finish and be forgotten
	// by the stream before a slower clock reaches the slot, and run twice.
	// Keep it above the clock skew between processors. Defaults to 5s.
	Lead time.Duration

	// MinRetryDelay is the wait after a failed Enqueue before the slot is
	// tried again; it doubles, with jitter, after each failure. A slot is
	// retried until it is enqueued or its next slot is due. Defaults to 1s.
	MinRetryDelay time.Duration

	// MaxRetryDelay caps the wait between Enqueue attempts. Defaults to 1m.
	MaxRetryDelay time.Duration

	// EnqueueTimeout bounds one Enqueue call. Defaults to 30s.
	EnqueueTimeout time.Duration

	// Clock tells the time and makes timers. Defaults to the system clock;
	// tests set a clock they advance by hand.
	Clock Clock

	// Logger receives the scheduler's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

func (c Config) validate() error {
	switch {
	case c.CatchUpWindow < 0:
		return &peonify.ConfigError{Field: "periodic.Config.CatchUpWindow", Reason: "must not be negative (0 means no limit; set DisableCatchUp to turn catch-up off)"}
	case c.Lead < 0:
		return &peonify.ConfigError{Field: "periodic.Config.Lead", Reason: "must not be negative (0 means the default, 5s)"}
	case c.MinRetryDelay < 0:
		return &peonify.ConfigError{Field: "periodic.Config.MinRetryDelay", Reason: "must not be negative (0 means the default, 1s)"}
	case c.MaxRetryDelay < 0:
		return &peonify.ConfigError{Field: "periodic.Config.MaxRetryDelay", Reason: "must not be negative (0 means the default, 1m)"}
	case c.EnqueueTimeout < 0:
		return &peonify.ConfigError{Field: "periodic.Config.EnqueueTimeout", Reason: "must not be negative (0 means the default, 30s)"}
	}
	if d := c.withDefaults(); d.MinRetryDelay > d.MaxRetryDelay {
		return &peonify.ConfigError{Field: "periodic.Config.MinRetryDelay", Reason: fmt.Sprintf("%s exceeds MaxRetryDelay (%s)", d.MinRetryDelay, d.MaxRetryDelay)}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Location == nil {
		c.Location = time.UTC
	}
	if c.Lead == 0 {
		c.Lead = 5 * time.Second
	}
	if c.MinRetryDelay == 0 {
		c.MinRetryDelay = time.Second
	}
	if c.MaxRetryDelay == 0 {
		c.MaxRetryDelay = time.Minute
	}
	if c.EnqueueTimeout == 0 {
		c.EnqueueTimeout = 30 * time.Second
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Job is a task enqueued on a schedule.
type Job struct {
	// Name identifies the job across processors: every scheduler that runs
	// the job must give it the same Name, and different jobs that share a
	// stream need different Names. It is part of each task's ID and
	// UniqueKey. Required; at most 200 bytes.
	Name string

	// Spec says when the job runs: a cron expression with 5 fields
	// ("*/5 * * * *"), or 6 with seconds first ("30 */5 * * * *"), a
	// descriptor ("@hourly", "@daily", "@weekly", "@monthly", "@yearly",
	// "@midnight") or an interval ("@every 90s", a whole number of seconds).
	// A "CRON_TZ=Europe/Paris " prefix sets the time zone of a cron
	// expression; see Config.Location. Interval slots are multiples of the
	// interval since the Unix epoch, so "@every 1h" fires on the hour
	// whenever the processors started.
	Spec string

	// Task is the template of the task enqueued for each slot: set Type,
	// and Payload, Headers, Priority and MaxAttempts as needed. The
	// scheduler sets ID (see TaskID), UniqueKey (see UniqueKey), RunAt
	// (the slot) and the HeaderJob and HeaderSlot headers on each copy;
	// leave ID, UniqueKey, RunAt, EnqueuedAt, Attempt and LastError empty.
	Task peonify.Task
}

// JobInfo describes a job for dashboards and logs.
type JobInfo struct {
	Name string
	Spec string
	Type string    // the task type
	Next time.Time // the next slot after now; zero if the schedule has none
	Last time.Time // the last slot this scheduler enqueued, or found enqueued by another; zero if none
	Err  error     // the error of the last failed Enqueue, nil once a slot is enqueued
}

// Scheduler enqueues the tasks of periodic jobs, one per time slot. Any
// number of processors may run the same jobs against one shared stream:
// each slot's task has a deterministic ID and a UniqueKey, so the stream
// stores it once and the other schedulers' attempts are reported as
// duplicates, which they take as success.
//
// A Scheduler is safe for concurrent use. Run it once.
type Scheduler struct {
	enq   peonify.Enqueuer
	cfg   Config
	clock Clock
	log   *slog.Logger

	added chan struct{} // signals Run that pending has jobs; buffer of one

	mu      sync.Mutex
	state   runState
	jobs    map[string]*job
	order   []*job // in Add order, for Jobs
	pending []*job // added but not yet started by Run
}

type runState int

const (
	stateNew runState = iota
	stateRunning
	stateStopped
)

// job is an added Job. Its status fields are guarded by Scheduler.mu.
type job struct {
	name  string
	spec  string
	sched schedule
	tmpl  *peonify.Task

	last time.Time
	err  error
}

// New returns a Scheduler that enqueues into enq, usually a durable
// stream shared by every processor that runs the same jobs. The stream
// must report a task whose ID or UniqueKey it already holds with
// peonify.ErrDuplicate, as durable streams do.
func New(enq peonify.Enqueuer, cfg Config) (*Scheduler, error) {
	if enq == nil {
		return nil, &peonify.ConfigError{Field: "periodic.New enq", Reason: "is nil: pass the stream the periodic tasks go to"}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Scheduler{
		enq:   enq,
		cfg:   cfg,
		clock: cfg.Clock,
		log:   cfg.Logger,
		added: make(chan struct{}, 1),
		jobs:  make(map[string]*job),
	}, nil
}

// Add adds a job. It may be called before or while Run runs; a job added
// while Run runs starts at once. Add returns a *SpecError for a spec that
// cannot be parsed or never fires, an error matching ErrDuplicateJob for a
// Name already added, and a *peonify.ConfigError for other mistakes.
func (s *Scheduler) Add(j Job) error {
	switch {
	case j.Name == "":
		return &peonify.ConfigError{Field: "Job.Name", Reason: "is empty: name the job (the same name on every processor that runs it)"}
	case len(j.Name) > maxNameLen:
		return &peonify.ConfigError{Field: "Job.Name", Reason: fmt.Sprintf("is %d bytes long: use at most %d", len(j.Name), maxNameLen)}
	}
	if err := checkTemplate(&j.Task); err != nil {
		return err
	}
	sched, err := parseSpec(j.Spec, s.cfg.Location, s.clock.Now())
	if err != nil {
		return &SpecError{Job: j.Name, Spec: j.Spec, Err: err}
	}
	nj := &job{name: j.Name, spec: j.Spec, sched: sched, tmpl: j.Task.Clone()}
	if err := nj.newTask(time.Unix(0, 0)).Validate(); err != nil {
		return fmt.Errorf("periodic: job %q: Task is not valid: %w", j.Name, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateStopped {
		return fmt.Errorf("periodic: job %q added after Run returned: add jobs before or while Run runs", j.Name)
	}
	if _, dup := s.jobs[j.Name]; dup {
		return fmt.Errorf("%w: %q; give each job its own Name", ErrDuplicateJob, j.Name)
	}
	s.jobs[j.Name] = nj
	s.order = append(s.order, nj)
	s.pending = append(s.pending, nj)
	select {
	case s.added <- struct{}{}:
	default:
	}
	return nil
}

// checkTemplate rejects template fields that the scheduler sets itself or
// that make no sense on a template.
func checkTemplate(t *peonify.Task) error {
	field := ""
	switch {
	case t.ID != "":
		field = "ID"
	case t.UniqueKey != "":
		field = "UniqueKey"
	case !t.RunAt.IsZero():
		field = "RunAt"
	case !t.EnqueuedAt.IsZero():
		field = "EnqueuedAt"
	case t.Attempt != 0:
		field = "Attempt"
	case t.LastError != "":
		field = "LastError"
	default:
		return nil
	}
	return &peonify.ConfigError{Field: "Job.Task." + field, Reason: "must be empty: the scheduler sets it for each slot"}
}

// Jobs describes the added jobs in the order they were added.
func (s *Scheduler) Jobs() []JobInfo {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	infos := make([]JobInfo, 0, len(s.order))
	for _, j := range s.order {
		infos = append(infos, JobInfo{
			Name: j.name,
			Spec: j.spec,
			Type: j.tmpl.Type,
			Next: j.sched.next(now),
			Last: j.last,
			Err:  j.err,
		})
	}
	return infos
}

// Run enqueues each job's task when its slot is due, until ctx ends; then
// it waits for its goroutines and returns nil. Enqueue errors are logged
// and retried with backoff until the slot is enqueued or the next slot is
// due; a slot the stream rejects as invalid is skipped. When slots were
// missed (the machine slept, Enqueue failed for long), only the latest is
// enqueued. Run returns an error only if called twice.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.state != stateNew {
		s.mu.Unlock()
		return errors.New("periodic: Run called twice: a Scheduler runs once; make another with New")
	}
	s.state = stateRunning
	s.mu.Unlock()

	var wg sync.WaitGroup
	for {
		s.mu.Lock()
		started := s.pending
		s.pending = nil
		s.mu.Unlock()
		for _, j := range started {
			wg.Go(func() { s.runJob(ctx, j) })
		}

		select {
		case <-s.added:
		case <-ctx.Done():
			s.mu.Lock()
			s.state = stateStopped
			s.mu.Unlock()
			wg.Wait()
			return nil
		}
	}
}

// runJob enqueues the slots of one job until ctx ends.
func (s *Scheduler) runJob(ctx context.Context, j *job) {
	start := s.clock.Now()
	slot := j.sched.next(start.Add(-time.Nanosecond)) // the first slot at or after start
	if !s.cfg.DisableCatchUp {
		if p := j.sched.prev(start); !p.IsZero() && p.Before(start) &&
			(s.cfg.CatchUpWindow == 0 || start.Sub(p) <= s.cfg.CatchUpWindow) {
			s.log.Info("periodic: catching up the last missed slot", "job", j.name, "slot", formatSlot(p))
			slot = p
		}
	}
	for {
		if slot.IsZero() {
			s.log.Warn("periodic: job has no further slot within five years; it stops", "job", j.name)
			return
		}
		if !s.waitUntil(ctx, slot.Add(-s.cfg.Lead)) {
			return
		}
		now := s.clock.Now()
		if n := j.sched.next(slot); !n.IsZero() && !n.After(now) {
			latest := j.sched.prev(now)
			s.log.Warn("periodic: slots missed (the clock jumped or the process stalled); enqueueing only the latest",
				"job", j.name, "from", formatSlot(slot), "latest", formatSlot(latest))
			slot = latest
		}
		s.enqueue(ctx, j, slot)
		if ctx.Err() != nil {
			return
		}
		slot = j.sched.next(slot)
	}
}

// enqueue stores the task of one slot, retrying with backoff until it is
// stored, the stream rejects it as invalid, the next slot is due or ctx
// ends.
func (s *Scheduler) enqueue(ctx context.Context, j *job, slot time.Time) {
	backoff := peonify.RetryPolicy{MinBackoff: s.cfg.MinRetryDelay, MaxBackoff: s.cfg.MaxRetryDelay}
	for attempt := 1; ; attempt++ {
		t := j.newTask(slot)
		ectx, cancel := context.WithTimeout(ctx, s.cfg.EnqueueTimeout)
		err := s.enq.Enqueue(ectx, t)
		cancel()
		switch {
		case err == nil:
			s.log.Debug("periodic: enqueued", "job", j.name, "slot", formatSlot(slot), "task_id", t.ID)
			s.record(j, slot)
			return
		case errors.Is(err, peonify.ErrDuplicate):
			s.log.Debug("periodic: slot already enqueued by another scheduler", "job", j.name, "slot", formatSlot(slot), "task_id", t.ID)
			s.record(j, slot)
			return
		case ctx.Err() != nil:
			return
		}
		s.recordErr(j, err)
		var invalid *peonify.InvalidTaskError
		if errors.As(err, &invalid) {
			s.log.Error("periodic: stream rejected the task; slot skipped", "job", j.name, "slot", formatSlot(slot), "err", err)
			return
		}
		delay := backoff.Backoff(attempt)
		retryAt := s.clock.Now().Add(delay)
		if n := j.sched.next(slot); !n.IsZero() && !retryAt.Before(n) {
			s.log.Error("periodic: enqueue failed and the next slot is due before a retry; slot skipped",
				"job", j.name, "slot", formatSlot(slot), "attempt", attempt, "err", err)
			return
		}
		s.log.Warn("periodic: enqueue failed; retrying", "job", j.name, "slot", formatSlot(slot),
			"attempt", attempt, "retry_in", delay, "err", err)
		if !s.waitUntil(ctx, retryAt) {
			return
		}
	}
}

// record notes that a job's slot is enqueued.
func (s *Scheduler) record(j *job, slot time.Time) {
	s.mu.Lock()
	j.last, j.err = slot, nil
	s.mu.Unlock()
}

// recordErr notes a failed Enqueue of a job.
func (s *Scheduler) recordErr(j *job, err error) {
	s.mu.Lock()
	j.err = err
	s.mu.Unlock()
}

// waitUntil waits until the clock reaches t. It reports false if ctx ended
// first.
func (s *Scheduler) waitUntil(ctx context.Context, t time.Time) bool {
	for {
		d := t.Sub(s.clock.Now())
		if d <= 0 {
			return ctx.Err() == nil
		}
		timer := s.clock.NewTimer(min(d, maxWait))
		select {
		case <-ctx.Done():
			timer.Stop()
			return false
		case <-timer.C():
		}
	}
}
