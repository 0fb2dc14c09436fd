package peonify

import "time"

// EventKind says what happened to a task.
type EventKind int

// The kinds of Event.
const (
	EventSucceeded EventKind = iota + 1 // the handler returned nil; the task is acked
	EventRetried                        // the attempt failed; the task will be retried after Event.Delay
	EventDead                           // the task was dead-lettered (permanent error, out of attempts, unknown type)
	EventReleased                       // the task was handed back unstarted or interrupted, not counted as an attempt
	EventSnoozed                        // the handler asked to run the task again after Event.Delay, not counted
	EventLeaseLost                      // the task's lease was lost while it ran; its result was discarded
)

// String returns the kind's lower-case name.
func (k EventKind) String() string {
	switch k {
	case EventSucceeded:
		return "succeeded"
	case EventRetried:
		return "retried"
	case EventDead:
		return "dead"
	case EventReleased:
		return "released"
	case EventSnoozed:
		return "snoozed"
	case EventLeaseLost:
		return "lease_lost"
	}
	return "unknown"
}

// Event reports one task outcome to Config.OnEvent.
type Event struct {
	Kind     EventKind
	Task     *Task         // read-only
	Stream   string        // name of the stream the task came from
	Duration time.Duration // how long the handler ran; zero if it did not run
	Delay    time.Duration // for EventRetried and EventSnoozed: wait before the next attempt
	Err      error         // the handler's error, or why the task is dead
}
