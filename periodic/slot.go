package periodic

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"time"

	"github.com/peonify/peonify"
)

// Headers set on every task a Scheduler enqueues, so that a handler knows
// which job and which time slot it is running for.
const (
	// HeaderJob holds the job's Name.
	HeaderJob = "periodic-job"

	// HeaderSlot holds the slot's time in RFC 3339 form, in UTC.
	HeaderSlot = "periodic-slot"
)

// UniqueKey returns the Task.UniqueKey of the task that job name enqueues
// for slot: "periodic:<name>:<slot in RFC 3339, UTC>".
func UniqueKey(name string, slot time.Time) string {
	return "periodic:" + name + ":" + formatSlot(slot)
}

// TaskID returns the Task.ID of the task that job name enqueues for slot.
// It is a UUID in the version 7 layout whose timestamp is the slot and
// whose other bits are a hash of the name and the slot, so that every
// scheduler running the job derives the same ID, and IDs of one job sort
// by slot.
func TaskID(name string, slot time.Time) string {
	h := sha256.Sum256([]byte("peonify periodic\x00" + name + "\x00" + formatSlot(slot)))
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], uint64(max(slot.UnixMilli(), 0))<<16) // 48-bit milliseconds
	copy(b[6:], h[:10])
	b[6] = 0x70 | b[6]&0x0f // version 7
	b[8] = 0x80 | b[8]&0x3f // RFC 9562 variant

	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// Slot returns the time slot of a task enqueued by a Scheduler, read from
// its HeaderSlot header. ok is false if the task has no valid slot header.
func Slot(t *peonify.Task) (slot time.Time, ok bool) {
	if t == nil {
		return time.Time{}, false
	}
	v, found := t.Headers[HeaderSlot]
	if !found {
		return time.Time{}, false
	}
	slot, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, false
	}
	return slot, true
}

func formatSlot(slot time.Time) string { return slot.UTC().Format(time.RFC3339) }

// newTask builds the task of job j for slot from its template.
func (j *job) newTask(slot time.Time) *peonify.Task {
	t := j.tmpl.Clone()
	t.ID = TaskID(j.name, slot)
	t.UniqueKey = UniqueKey(j.name, slot)
	t.RunAt = slot
	if t.Headers == nil {
		t.Headers = make(map[string]string, 2)
	}
	t.Headers[HeaderJob] = j.name
	t.Headers[HeaderSlot] = formatSlot(slot)
	return t
}
