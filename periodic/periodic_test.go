package periodic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

var taskTemplate = peonify.Task{Type: "report", Payload: []byte(`{"kind":"daily"}`)}

// newTestScheduler returns a scheduler on clock writing its logs into the
// returned buffer.
func newTestScheduler(t *testing.T, enq peonify.Enqueuer, clock Clock, cfg Config) (*Scheduler, *streamtest.SyncBuffer) {
	t.Helper()
	log, buf := testLogger()
	cfg.Clock = clock
	cfg.Logger = log
	s, err := New(enq, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("scheduler log:\n%s", buf)
		}
	})
	return s, buf
}

func mustAdd(t *testing.T, s *Scheduler, j Job) {
	t.Helper()
	if err := s.Add(j); err != nil {
		t.Fatalf("Add(%s): %v", j.Name, err)
	}
}

func TestNewErrors(t *testing.T) {
	enq := newStore(time.Now)
	tests := []struct {
		name string
		enq  peonify.Enqueuer
		cfg  Config
		want string
	}{
		{"nil enqueuer", nil, Config{}, "pass the stream"},
		{"negative lead", enq, Config{Lead: -time.Second}, "Config.Lead"},
		{"negative window", enq, Config{CatchUpWindow: -time.Second}, "DisableCatchUp"},
		{"negative min retry", enq, Config{MinRetryDelay: -1}, "MinRetryDelay"},
		{"negative max retry", enq, Config{MaxRetryDelay: -1}, "MaxRetryDelay"},
		{"negative timeout", enq, Config{EnqueueTimeout: -1}, "EnqueueTimeout"},
		{"min above max", enq, Config{MinRetryDelay: time.Hour}, "exceeds MaxRetryDelay (1m0s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.enq, tt.cfg)
			if err == nil || s != nil {
				t.Fatalf("New = %v, %v; want an error", s, err)
			}
			var ce *peonify.ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New error = %q, want a *peonify.ConfigError containing %q", err, tt.want)
			}
		})
	}
}

func TestAddErrors(t *testing.T) {
	s, _ := newTestScheduler(t, newStore(time.Now), newFakeClock(someTime), Config{})
	mustAdd(t, s, Job{Name: "report", Spec: "@daily", Task: taskTemplate})

	with := func(f func(*peonify.Task)) peonify.Task {
		task := taskTemplate
		f(&task)
		return task
	}
	tests := []struct {
		name string
		job  Job
		want string
	}{
		{"empty name", Job{Spec: "@daily", Task: taskTemplate}, "Job.Name: is empty"},
		{"long name", Job{Name: strings.Repeat("x", 201), Spec: "@daily", Task: taskTemplate}, "at most 200"},
		{"duplicate", Job{Name: "report", Spec: "@hourly", Task: taskTemplate}, "already added"},
		{"bad spec", Job{Name: "b", Spec: "@every 1ms", Task: taskTemplate}, "invalid Spec"},
		{"no type", Job{Name: "c", Spec: "@daily"}, "has no Type"},
		{"ID set", Job{Name: "d", Spec: "@daily", Task: with(func(t *peonify.Task) { t.ID = "x" })}, "Job.Task.ID: must be empty"},
		{"key set", Job{Name: "e", Spec: "@daily", Task: with(func(t *peonify.Task) { t.UniqueKey = "x" })}, "Job.Task.UniqueKey"},
		{"RunAt set", Job{Name: "f", Spec: "@daily", Task: with(func(t *peonify.Task) { t.RunAt = someTime })}, "Job.Task.RunAt"},
		{"attempt set", Job{Name: "g", Spec: "@daily", Task: with(func(t *peonify.Task) { t.Attempt = 2 })}, "Job.Task.Attempt"},
		{"negative max attempts", Job{Name: "h", Spec: "@daily", Task: with(func(t *peonify.Task) { t.MaxAttempts = -1 })}, "MaxAttempts is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Add(tt.job)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Add = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if err := s.Add(Job{Name: "report", Spec: "@daily", Task: taskTemplate}); !errors.Is(err, ErrDuplicateJob) {
		t.Errorf("Add of a duplicate name = %v, want ErrDuplicateJob", err)
	}
	if got := len(s.Jobs()); got != 1 {
		t.Errorf("after failed Adds, %d jobs; want 1", got)
	}
}

func TestTaskIDAndKey(t *testing.T) {
	slot := at(t, "2025-03-14T10:00:00Z")
	id := TaskID("report", slot)
	if id != TaskID("report", slot.In(time.FixedZone("X", 3600))) {
		t.Error("TaskID depends on the slot's time zone")
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) {
		t.Errorf("TaskID = %s, want a version 7 UUID", id)
	}
	others := []string{TaskID("report", slot.Add(time.Second)), TaskID("report2", slot), TaskID("repor", slot)}
	if slices.Contains(others, id) {
		t.Errorf("TaskID collides: %s in %v", id, others)
	}
	if !(TaskID("report", slot) < TaskID("report", slot.Add(time.Hour))) {
		t.Error("IDs of one job do not sort by slot")
	}
	if got, want := UniqueKey("report", slot.In(time.FixedZone("X", 3600))), "periodic:report:2025-03-14T10:00:00Z"; got != want {
		t.Errorf("UniqueKey = %s, want %s", got, want)
	}
}

func TestTaskOfSlot(t *testing.T) {
	clock := newFakeClock(at(t, "2025-03-14T10:30:00Z"))
	st := newStore(clock.Now)
	s, _ := newTestScheduler(t, st, clock, Config{})
	tmpl := taskTemplate
	tmpl.Headers = map[string]string{"tenant": "acme"}
	tmpl.Priority = 3
	tmpl.MaxAttempts = 2
	mustAdd(t, s, Job{Name: "report", Spec: "@hourly", Task: tmpl})
	tmpl.Headers["tenant"] = "changed after Add"
	runScheduler(t, s)
	clock.WaitTimers(t, 1)

	tasks := st.Tasks(t)
	if len(tasks) != 1 {
		t.Fatalf("stored %d tasks, want the caught-up 10:00 slot only", len(tasks))
	}
	task := tasks[0]
	slot := at(t, "2025-03-14T10:00:00Z")
	if task.ID != TaskID("report", slot) || task.UniqueKey != UniqueKey("report", slot) || !task.RunAt.Equal(slot) {
		t.Errorf("task ID, UniqueKey, RunAt = %s, %s, %s; want %s, %s, %s",
			task.ID, task.UniqueKey, task.RunAt, TaskID("report", slot), UniqueKey("report", slot), slot)
	}
	if task.Type != "report" || string(task.Payload) != `{"kind":"daily"}` || task.Priority != 3 || task.MaxAttempts != 2 {
		t.Errorf("task = %+v, want the template's Type, Payload, Priority and MaxAttempts", task)
	}
	want := map[string]string{"tenant": "acme", HeaderJob: "report", HeaderSlot: "2025-03-14T10:00:00Z"}
	if fmt.Sprint(task.Headers) != fmt.Sprint(want) {
		t.Errorf("headers = %v, want %v", task.Headers, want)
	}
	if got, ok := Slot(task); !ok || !got.Equal(slot) {
		t.Errorf("Slot = %s, %v; want %s, true", got, ok, slot)
	}
	if _, ok := Slot(&peonify.Task{Headers: map[string]string{HeaderSlot: "yesterday"}}); ok {
		t.Error("Slot accepted a malformed header")
	}
	if _, ok := Slot(nil); ok {
		t.Error("Slot accepted a nil task")
	}
}

// TestOneTaskPerSlot races three schedulers, whose clocks disagree by up
// to a second, on one shared store that forgets completed tasks at once:
// every slot of every job runs exactly once.
func TestOneTaskPerSlot(t *testing.T) {
	start := at(t, "2025-03-14T09:59:30Z")
	clock := newFakeClock(start)
	st := newStore(clock.Now)
	skews := []time.Duration{0, 400 * time.Millisecond, -900 * time.Millisecond}
	jobs := []Job{
		{Name: "every-minute", Spec: "@every 1m", Task: taskTemplate},
		{Name: "quarter-past", Spec: "15 * * * * *", Task: taskTemplate},
	}
	for _, skew := range skews {
		s, _ := newTestScheduler(t, st, skewedClock{clock, skew}, Config{DisableCatchUp: true})
		for _, j := range jobs {
			mustAdd(t, s, j)
		}
		runScheduler(t, s)
	}
	armed := len(skews) * len(jobs)
	clock.WaitTimers(t, armed)

	ran := map[string]int{}
	for range 10 * 60 * 4 { // ten minutes in steps of 250ms
		clock.Advance(250 * time.Millisecond)
		clock.WaitTimers(t, armed)
		for _, task := range st.Drain(t) {
			ran[task.UniqueKey]++
			if now := clock.Now(); task.RunAt.After(now) {
				t.Errorf("task of slot %s ran early, at %s", task.RunAt, now)
			}
		}
	}
	for _, j := range jobs {
		s, _ := parseSpec(j.Spec, time.UTC, start)
		var n int
		for slot := s.next(start); !slot.After(clock.Now()); slot = s.next(slot) {
			n++
			if got := ran[UniqueKey(j.Name, slot)]; got != 1 {
				t.Errorf("%s slot %s ran %d times, want 1", j.Name, slot.Format(time.TimeOnly), got)
			}
		}
		if n != 10 {
			t.Errorf("%s: checked %d slots, want 10", j.Name, n)
		}
	}
	if len(ran) != 20 {
		t.Errorf("%d distinct slots ran, want 20: %v", len(ran), ran)
	}
}

func TestCatchUp(t *testing.T) {
	start := at(t, "2025-03-14T10:35:00Z")
	tests := []struct {
		name string
		cfg  Config
		spec string
		want []string // slots stored right after Run starts
	}{
		{"default: the last missed slot", Config{}, "@hourly", []string{"2025-03-14T10:00:00Z"}},
		{"only the last of many", Config{}, "@every 10m", []string{"2025-03-14T10:30:00Z"}},
		{"within the window", Config{CatchUpWindow: 40 * time.Minute}, "@hourly", []string{"2025-03-14T10:00:00Z"}},
		{"outside the window", Config{CatchUpWindow: 30 * time.Minute}, "@hourly", nil},
		{"disabled", Config{DisableCatchUp: true}, "@hourly", nil},
		{"lead takes the next slot early", Config{Lead: 30 * time.Minute, DisableCatchUp: true}, "@hourly", []string{"2025-03-14T11:00:00Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock(start)
			st := newStore(clock.Now)
			s, _ := newTestScheduler(t, st, clock, tt.cfg)
			mustAdd(t, s, Job{Name: "job", Spec: tt.spec, Task: taskTemplate})
			runScheduler(t, s)
			clock.WaitTimers(t, 1)
			if got := slots(t, st.Tasks(t)); !slices.Equal(got, tt.want) {
				t.Errorf("stored slots %v, want %v", got, tt.want)
			}
		})
	}
}

// TestMissedSlotsWhileRunning jumps the clock over five slots, as a
// suspended machine would see it: only the latest is enqueued.
func TestMissedSlotsWhileRunning(t *testing.T) {
	clock := newFakeClock(at(t, "2025-03-14T10:30:00Z"))
	st := newStore(clock.Now)
	s, log := newTestScheduler(t, st, clock, Config{DisableCatchUp: true})
	mustAdd(t, s, Job{Name: "job", Spec: "@hourly", Task: taskTemplate})
	runScheduler(t, s)
	clock.WaitTimers(t, 1)

	clock.Advance(5 * time.Hour) // 15:30
	clock.WaitTimers(t, 1)
	want := []string{"2025-03-14T15:00:00Z"}
	if got := slots(t, st.Tasks(t)); !slices.Equal(got, want) {
		t.Errorf("stored slots %v, want %v", got, want)
	}
	if !strings.Contains(log.String(), "slots missed") {
		t.Errorf("no warning about missed slots in the log:\n%s", log)
	}
	info := s.Jobs()[0]
	if !info.Last.Equal(at(t, want[0])) || info.Err != nil || !info.Next.Equal(at(t, "2025-03-14T16:00:00Z")) {
		t.Errorf("JobInfo = %+v, want Last 15:00, Next 16:00, no error", info)
	}
}

// TestEnqueueRetries fails Enqueue twice: the scheduler logs, backs off
// on its clock, and stores the slot on the third attempt.
func TestEnqueueRetries(t *testing.T) {
	clock := newFakeClock(at(t, "2025-03-14T10:30:00Z"))
	st := newStore(clock.Now)
	broken := errors.New("connection refused")
	enq := newFailing(st, func(call int) error {
		if call <= 2 {
			return broken
		}
		return nil
	})
	s, log := newTestScheduler(t, enq, clock, Config{MinRetryDelay: time.Second, MaxRetryDelay: 10 * time.Second})
	mustAdd(t, s, Job{Name: "job", Spec: "@hourly", Task: taskTemplate})
	runScheduler(t, s)

	clock.WaitTimers(t, 1) // waiting to retry after the first failure
	if got := enq.Calls(); got != 1 {
		t.Fatalf("%d Enqueue calls before the backoff, want 1", got)
	}
	if info := s.Jobs()[0]; !errors.Is(info.Err, broken) || !info.Last.IsZero() {
		t.Errorf("JobInfo while failing = %+v, want Err %v and no Last", info, broken)
	}
	clock.Advance(1200 * time.Millisecond) // the first backoff is 1s ±20%
	clock.WaitTimers(t, 1)
	if got := enq.Calls(); got != 2 {
		t.Fatalf("%d Enqueue calls after the first backoff, want 2", got)
	}
	clock.Advance(2400 * time.Millisecond) // then 2s ±20%
	clock.WaitTimers(t, 1)                 // now waiting for 11:00
	if got := enq.Calls(); got != 3 {
		t.Fatalf("%d Enqueue calls after the second backoff, want 3", got)
	}
	if got, want := slots(t, st.Tasks(t)), []string{"2025-03-14T10:00:00Z"}; !slices.Equal(got, want) {
		t.Errorf("stored slots %v, want %v", got, want)
	}
	if info := s.Jobs()[0]; info.Err != nil || !info.Last.Equal(at(t, "2025-03-14T10:00:00Z")) {
		t.Errorf("JobInfo after success = %+v, want no Err and Last 10:00", info)
	}
	if got := strings.Count(log.String(), "enqueue failed; retrying"); got != 2 {
		t.Errorf("%d retry warnings in the log, want 2:\n%s", got, log)
	}
}

// TestEnqueueGivesUpAtNextSlot keeps Enqueue failing: the scheduler backs
// off (no busy loop), gives the slot up when the next is due, and goes on.
func TestEnqueueGivesUpAtNextSlot(t *testing.T) {
	clock := newFakeClock(at(t, "2025-03-14T10:00:30Z"))
	st := newStore(clock.Now)
	var up atomic.Bool
	enq := newFailing(st, func(int) error {
		if !up.Load() {
			return errors.New("broker down")
		}
		return nil
	})
	s, log := newTestScheduler(t, enq, clock, Config{Lead: time.Second, DisableCatchUp: true})
	mustAdd(t, s, Job{Name: "job", Spec: "@every 1m", Task: taskTemplate})
	runScheduler(t, s)
	clock.WaitTimers(t, 1)

	for clock.Now().Before(at(t, "2025-03-14T10:03:00Z")) {
		clock.Advance(500 * time.Millisecond)
		clock.WaitTimers(t, 1)
	}
	// Each slot gets about six attempts (backoff 1s, 2s, 4s ... within a minute).
	if got := enq.Calls(); got < 3*4 || got > 3*8 {
		t.Errorf("%d Enqueue calls over three failing slots, want 12 to 24", got)
	}
	if got := strings.Count(log.String(), "slot skipped"); got != 2 {
		t.Errorf("%d slots given up, want 2 (10:01 and 10:02; 10:03 is still being retried):\n%s", got, log)
	}

	up.Store(true)
	clock.AdvanceTo(at(t, "2025-03-14T10:04:00Z"))
	clock.WaitTimers(t, 1)
	if got, want := slots(t, st.Tasks(t)), []string{"2025-03-14T10:03:00Z", "2025-03-14T10:04:00Z"}; !slices.Equal(got, want) {
		t.Errorf("after recovery, stored slots %v, want %v", got, want)
	}
}

// TestDuplicateIsSuccess enqueues the slot's task before the scheduler
// does: the scheduler takes the duplicate as done and does not retry.
func TestDuplicateIsSuccess(t *testing.T) {
	clock := newFakeClock(at(t, "2025-03-14T10:30:00Z"))
	st := newStore(clock.Now)
	slot := at(t, "2025-03-14T10:00:00Z")
	other := taskTemplate
	other.ID = TaskID("job", slot)
	if err := st.Enqueue(context.Background(), &other); err != nil {
		t.Fatal(err)
	}
	s, log := newTestScheduler(t, st, clock, Config{})
	mustAdd(t, s, Job{Name: "job", Spec: "@hourly", Task: taskTemplate})
	runScheduler(t, s)
	clock.WaitTimers(t, 1)
	if got := st.Calls(); got != 2 {
		t.Errorf("%d Enqueue calls, want 2 (the other processor's and one attempt)", got)
	}
	if info := s.Jobs()[0]; info.Err != nil || !info.Last.Equal(slot) {
		t.Errorf("JobInfo = %+v, want Last %s and no Err", info, slot)
	}
	if strings.Contains(log.String(), "level=WARN") || strings.Contains(log.String(), "level=ERROR") {
		t.Errorf("a duplicate was logged as a problem:\n%s", log)
	}
}

// TestInvalidTaskSkipsSlot: a task the stream rejects is not retried.
func TestInvalidTaskSkipsSlot(t *testing.T) {
	clock := newFakeClock(at(t, "2025-03-14T10:30:00Z"))
	enq := newFailing(newStore(clock.Now), func(int) error {
		return &peonify.InvalidTaskError{Reason: "payload larger than the broker accepts"}
	})
	s, log := newTestScheduler(t, enq, clock, Config{})
	mustAdd(t, s, Job{Name: "job", Spec: "@hourly", Task: taskTemplate})
	runScheduler(t, s)
	clock.WaitTimers(t, 1)
	if got := enq.Calls(); got != 1 {
		t.Errorf("%d Enqueue calls, want 1", got)
	}
	if !strings.Contains(log.String(), "stream rejected the task; slot skipped") {
		t.Errorf("rejection not logged:\n%s", log)
	}
}

func TestAddWhileRunning(t *testing.T) {
	clock := newFakeClock(at(t, "2025-03-14T10:30:00Z"))
	st := newStore(clock.Now)
	s, _ := newTestScheduler(t, st, clock, Config{})
	stop := runScheduler(t, s)
	mustAdd(t, s, Job{Name: "late", Spec: "@hourly", Task: taskTemplate})
	clock.WaitTimers(t, 1)
	if got, want := slots(t, st.Tasks(t)), []string{"2025-03-14T10:00:00Z"}; !slices.Equal(got, want) {
		t.Errorf("stored slots %v, want %v", got, want)
	}
	stop()
	if err := s.Add(Job{Name: "after", Spec: "@hourly", Task: taskTemplate}); err == nil || !strings.Contains(err.Error(), "after Run returned") {
		t.Errorf("Add after Run = %v, want an error", err)
	}
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Errorf("second Run = %v, want an error", err)
	}
}

func TestJobs(t *testing.T) {
	clock := newFakeClock(at(t, "2025-03-14T10:30:00Z"))
	s, _ := newTestScheduler(t, newStore(clock.Now), clock, Config{})
	mustAdd(t, s, Job{Name: "b", Spec: "@hourly", Task: taskTemplate})
	mustAdd(t, s, Job{Name: "a", Spec: "*/20 * * * *", Task: peonify.Task{Type: "cleanup"}})
	got := s.Jobs()
	want := []JobInfo{
		{Name: "b", Spec: "@hourly", Type: "report", Next: at(t, "2025-03-14T11:00:00Z")},
		{Name: "a", Spec: "*/20 * * * *", Type: "cleanup", Next: at(t, "2025-03-14T10:40:00Z")},
	}
	if len(got) != len(want) {
		t.Fatalf("Jobs = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].Name != want[i].Name || got[i].Spec != want[i].Spec || got[i].Type != want[i].Type ||
			!got[i].Next.Equal(want[i].Next) || !got[i].Last.IsZero() || got[i].Err != nil {
			t.Errorf("Jobs()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestShutdown ends Run while one job waits for its slot and another
// backs off after a failure; goleak in TestMain checks nothing is left.
func TestShutdown(t *testing.T) {
	clock := newFakeClock(at(t, "2025-03-14T10:30:00Z"))
	st := newStore(clock.Now)
	enq := newFailing(st, func(int) error { return errors.New("down") })
	s, _ := newTestScheduler(t, enq, clock, Config{})
	mustAdd(t, s, Job{Name: "waits", Spec: "@hourly", Task: taskTemplate})
	s2, _ := newTestScheduler(t, st, clock, Config{DisableCatchUp: true})
	mustAdd(t, s2, Job{Name: "waits", Spec: "@hourly", Task: taskTemplate})
	stop, stop2 := runScheduler(t, s), runScheduler(t, s2)
	clock.WaitTimers(t, 2)
	stop()
	stop2()
}

// TestShutdownDuringEnqueue ends Run while Enqueue blocks: the call's
// context ends with Run's and Run returns.
func TestShutdownDuringEnqueue(t *testing.T) {
	clock := newFakeClock(at(t, "2025-03-14T10:30:00Z"))
	entered := make(chan struct{})
	enq := enqueueFunc(func(ctx context.Context, _ ...*peonify.Task) error {
		close(entered)
		<-ctx.Done()
		return ctx.Err()
	})
	s, _ := newTestScheduler(t, enq, clock, Config{})
	mustAdd(t, s, Job{Name: "job", Spec: "@hourly", Task: taskTemplate})
	stop := runScheduler(t, s)
	<-entered
	stop()
}

// TestSystemClock runs three schedulers on the real clock inside a
// synctest bubble, where time passes only when every goroutine waits.
func TestSystemClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		time.Sleep(30 * time.Second) // start between two slots
		st := newStore(time.Now)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 3)
		for range 3 {
			s, err := New(st, Config{DisableCatchUp: true, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			mustAdd(t, s, Job{Name: "tick", Spec: "@every 1m", Task: taskTemplate})
			go func() { done <- s.Run(ctx) }()
		}
		start := time.Now()
		var ran []*peonify.Task
		for range 10 * 60 {
			time.Sleep(time.Second)
			ran = append(ran, st.Drain(t)...)
		}
		cancel()
		for range 3 {
			if err := <-done; err != nil {
				t.Errorf("Run = %v", err)
			}
		}
		if len(ran) != 10 {
			t.Errorf("%d tasks ran in ten minutes of @every 1m, want 10: %v", len(ran), slots(t, ran))
		}
		for i, task := range ran {
			want := start.Truncate(time.Minute).Add(time.Duration(i+1) * time.Minute)
			if !task.RunAt.Equal(want) {
				t.Errorf("task %d is for slot %s, want %s", i, task.RunAt, want)
			}
		}
	})
}

type enqueueFunc func(ctx context.Context, tasks ...*peonify.Task) error

func (f enqueueFunc) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	return f(ctx, tasks...)
}
