package peonify

import (
	"fmt"
	"unicode/utf8"
)

// Limits every stream applies, so that a task one stream accepts, another
// accepts too. Task.Validate checks the task's own fields; stream
// decoders and intakes use the same constants for what they read from
// outside.
const (
	// MaxIDLen is the longest Task.ID, in bytes.
	MaxIDLen = 255

	// MaxTypeLen is the longest Task.Type, in bytes.
	MaxTypeLen = 255

	// MaxUniqueKeyLen is the longest Task.UniqueKey, in bytes.
	MaxUniqueKeyLen = 255

	// MaxHeaderNameLen is the longest header name, in bytes, that every
	// stream can carry (AMQP's limit on a field-table key). Streams whose
	// broker has no such limit accept longer names.
	MaxHeaderNameLen = 255

	// MaxReasonLen is the most of NackOptions.Reason, in bytes, that a
	// stream keeps as the task's last error or dead reason (see
	// TruncateReason).
	MaxReasonLen = 8 << 10

	// DefaultListLimit is the page size of Inspector.List when
	// ListOptions.Limit is 0.
	DefaultListLimit = 100
)

// TruncateReason cuts s to at most MaxReasonLen bytes, never inside a
// UTF-8 character: what it keeps is a prefix of s, and valid UTF-8 if s
// is. Invalid bytes count as characters of their own, so at most
// utf8.UTFMax-1 bytes fewer than MaxReasonLen are kept.
func TruncateReason(s string) string {
	return truncate(s, MaxReasonLen)
}

// truncate cuts s to at most n bytes, never inside a UTF-8 character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for i := n; i > n-utf8.UTFMax && i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i]
		}
	}
	return s[:n]
}

// Normalize checks o and returns it in the form streams store: an unknown
// Outcome is an error, a negative Delay becomes 0, Delay is 0 for
// OutcomeDead, and Reason is cut by TruncateReason. The processor calls it
// before a stream's Nack; streams call it at the top of Nack, so that
// callers of the library that nack directly get the same checks.
func (o NackOptions) Normalize() (NackOptions, error) {
	switch o.Outcome {
	case OutcomeFailed, OutcomeReleased:
		o.Delay = max(o.Delay, 0)
	case OutcomeDead:
		o.Delay = 0
	default:
		return o, fmt.Errorf("peonify: NackOptions.Outcome is %d: use OutcomeFailed, OutcomeReleased or OutcomeDead", int(o.Outcome))
	}
	o.Reason = TruncateReason(o.Reason)
	return o, nil
}

// Normalize checks o and returns it with its defaults filled in: State
// must be one of States, a Limit of 0 becomes DefaultListLimit, and a
// negative Limit is an error. The CLI and the dashboard call it before
// Inspector.List; Inspectors call it at the top of List.
func (o ListOptions) Normalize() (ListOptions, error) {
	switch o.State {
	case StatePending, StateScheduled, StateRunning, StateDead, StateDone, StateWaiting, StateCancelled:
	case "":
		return o, fmt.Errorf("peonify: ListOptions.State is empty: use one of %v", States)
	default:
		return o, fmt.Errorf("peonify: ListOptions.State %q is unknown: use one of %v", o.State, States)
	}
	switch {
	case o.Limit < 0:
		return o, fmt.Errorf("peonify: ListOptions.Limit is %d: use a positive page size, or 0 for %d", o.Limit, DefaultListLimit)
	case o.Limit == 0:
		o.Limit = DefaultListLimit
	}
	return o, nil
}
