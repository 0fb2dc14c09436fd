package chaostest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// History is what a ledger file says happened, read by ReadLedger and
// brought up to date by Refresh while the processes go on writing.
type History struct {
	path    string
	off     int64  // bytes of the file read so far
	partial []byte // a record whose end has not been written yet

	queued []string                    // tasks recorded as enqueued, in order
	done   map[string]int              // completed runs per task ID
	held   map[int]map[string]struct{} // per process: tasks claimed and not yet acked or nacked
	acked  map[string]int              // acks that returned nil, per task ID
	// settled is, per process, how each task's last ack or nack ended:
	// kindAck, kindAckErr or kindNack.
	settled map[int]map[string]byte
	notes   []note // records of other kinds, in file order

	runs    []Run          // handler runs recorded by Ledger.Timed, in file order
	running map[runKey]int // index in runs of each run that has not returned
	marks   []namedMark    // records written by Ledger.Mark, in file order
}

// Run is one handler run, as Ledger.Timed recorded it.
type Run struct {
	ID      string
	Key     string // the task's Task.Key
	Attempt int
	Pid     int       // the process that ran it
	Start   time.Time // when the handler was called
	End     time.Time // when it returned; zero if it had not returned when last read (or its process died)
	Failed  bool      // it returned an error
}

// Ended reports whether the run returned.
func (r Run) Ended() bool { return !r.End.IsZero() }

// Mark is a record written by Ledger.Mark.
type Mark struct {
	Pid    int
	At     time.Time
	Fields []string // the fields after the name
}

type namedMark struct {
	name string
	Mark
}

// runKey identifies a run that has begun and not yet returned.
type runKey struct {
	pid     int
	id      string
	attempt int
}

// note is a record of a kind History does not interpret itself.
type note struct {
	kind   byte
	pid    int
	fields []string
}

// ReadLedger reads the ledger file at path. A file that does not exist
// yet reads as an empty history.
func ReadLedger(path string) (*History, error) {
	h := &History{
		path:    path,
		done:    make(map[string]int),
		held:    make(map[int]map[string]struct{}),
		acked:   make(map[string]int),
		settled: make(map[int]map[string]byte),
		running: make(map[runKey]int),
	}
	return h, h.Refresh()
}

// Refresh reads the records appended to the file since the last read.
func (h *History) Refresh() error {
	f, err := os.Open(h.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("chaostest: reading ledger: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(h.off, io.SeekStart); err != nil {
		return fmt.Errorf("chaostest: reading ledger: %w", err)
	}
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			h.off += int64(n)
			h.consume(buf[:n])
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("chaostest: reading ledger: %w", err)
		}
	}
}

// consume parses the complete records in b, keeping an unfinished last one
// for the next read.
func (h *History) consume(b []byte) {
	if len(h.partial) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			h.partial = append(h.partial, b...)
			return
		}
		h.partial = append(h.partial, b[:i]...)
		h.parse(string(h.partial))
		h.partial = h.partial[:0]
		b = b[i+1:]
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			h.partial = append(h.partial, b...)
			return
		}
		h.parse(string(b[:i]))
		b = b[i+1:]
	}
}

// parse applies one record. Malformed records are ignored: a test that
// depends on one fails on what it then misses.
func (h *History) parse(line string) {
	// Fields are separated by single spaces; escape keeps them out of IDs.
	fields := strings.Split(line, " ")
	if len(fields) < 3 || len(fields[0]) != 1 {
		return
	}
	pid, err := strconv.Atoi(fields[1])
	if err != nil {
		return
	}
	kind, args := fields[0][0], fields[3:]
	switch kind {
	case kindBegin, kindEnd, kindMark:
		us, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			return
		}
		h.timed(kind, pid, time.UnixMicro(us), args)
		return
	case kindQueued:
		for _, id := range args {
			h.queued = append(h.queued, unescape(id))
		}
	case kindDone:
		if len(args) >= 1 {
			h.done[unescape(args[0])]++
		}
	case kindClaim:
		held := h.held[pid]
		if held == nil {
			held = make(map[string]struct{})
			h.held[pid] = held
		}
		for i := 0; i+1 < len(args); i += 2 {
			held[unescape(args[i])] = struct{}{}
		}
	case kindAck:
		for _, id := range args {
			id = unescape(id)
			delete(h.held[pid], id)
			h.acked[id]++
			h.settle(pid, id, kindAck)
		}
	case kindAckErr:
		// A failed ack leaves its tasks held: they may run again.
		for _, id := range args {
			h.settle(pid, unescape(id), kindAckErr)
		}
	case kindNack:
		if len(args) >= 2 {
			id := unescape(args[1])
			delete(h.held[pid], id)
			h.settle(pid, id, kindNack)
		}
	default:
		h.notes = append(h.notes, note{kind: kind, pid: pid, fields: args})
	}
}

// timed applies a record of Ledger.Timed or Ledger.Mark.
func (h *History) timed(kind byte, pid int, at time.Time, args []string) {
	if kind == kindMark {
		if len(args) == 0 {
			return
		}
		m := namedMark{name: unescape(args[0]), Mark: Mark{Pid: pid, At: at, Fields: make([]string, len(args)-1)}}
		for i, f := range args[1:] {
			m.Fields[i] = unescape(f)
		}
		h.marks = append(h.marks, m)
		return
	}
	if len(args) < 3 {
		return
	}
	attempt, err := strconv.Atoi(args[1])
	if err != nil {
		return
	}
	k := runKey{pid: pid, id: unescape(args[0]), attempt: attempt}
	if kind == kindBegin {
		h.running[k] = len(h.runs)
		h.runs = append(h.runs, Run{ID: k.id, Key: unescape(args[2]), Attempt: attempt, Pid: pid, Start: at})
		return
	}
	if i, ok := h.running[k]; ok {
		delete(h.running, k)
		h.runs[i].End = at
		h.runs[i].Failed = args[2] != "ok"
	}
}

func (h *History) settle(pid int, id string, kind byte) {
	m := h.settled[pid]
	if m == nil {
		m = make(map[string]byte)
		h.settled[pid] = m
	}
	m[id] = kind
}

// Enqueued returns the tasks recorded with Ledger.Enqueued, in the order
// they were recorded.
func (h *History) Enqueued() []string { return slices.Clone(h.queued) }

// Completions returns how many runs of the task with this ID completed.
func (h *History) Completions(id string) int { return h.done[id] }

// Completed returns how many distinct tasks completed at least once.
func (h *History) Completed() int { return len(h.done) }

// Acked returns how many acks of the task with this ID returned nil.
func (h *History) Acked(id string) int { return h.acked[id] }

// Held returns, sorted, the tasks that process pid claimed and has not
// acked or nacked successfully: the tasks it holds. Read right after the
// process was killed or stopped, they are the tasks in flight at the
// fault, the only ones that may run again because of it.
func (h *History) Held(pid int) []string {
	ids := make([]string, 0, len(h.held[pid]))
	for id := range h.held[pid] {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Runs returns the handler runs recorded with Ledger.Timed, in the order
// they were recorded. A run that had not returned when the ledger was
// last read has a zero End.
func (h *History) Runs() []Run { return slices.Clone(h.runs) }

// Marks returns, in the order they were recorded, the records that
// Ledger.Mark wrote with this name.
func (h *History) Marks(name string) []Mark {
	var out []Mark
	for _, m := range h.marks {
		if m.name == name {
			out = append(out, Mark{Pid: m.Pid, At: m.At, Fields: slices.Clone(m.Fields)})
		}
	}
	return out
}

// Verdict is the outcome of History.Verify.
type Verdict struct {
	Tasks      int      // distinct tasks enqueued
	Lost       []string // enqueued but never completed
	Unknown    []string // completed but never enqueued
	Duplicates int      // completed runs beyond the first, over all tasks
	Bound      int      // duplicates the faults allow: tasks in flight at them
	Excess     []string // tasks that ran more often than the faults they were in flight at allow
	// MayLose are the lost tasks that the faults may lose by what the
	// stream documents (see AllowLoss); Err does not count them.
	MayLose []string
}

// AllowLoss moves the lost tasks that are among mayLose from Lost to
// MayLose: tasks that a fault may lose by the stream's documented
// guarantees, such as those enqueued within the replication lag before an
// asynchronous standby was promoted.
func (v *Verdict) AllowLoss(mayLose []string) {
	allowed := make(map[string]bool, len(mayLose))
	for _, id := range mayLose {
		allowed[id] = true
	}
	lost := v.Lost[:0]
	for _, id := range v.Lost {
		if allowed[id] {
			v.MayLose = append(v.MayLose, id)
		} else {
			lost = append(lost, id)
		}
	}
	v.Lost = lost
}

// Verify checks the history against the tasks whose Enqueue returned nil
// and the tasks in flight at each fault (for a killed process, its Held
// tasks at the kill). Every enqueued task must have completed; no other
// task may have; a task may have completed more than once only as often as
// faults found it in flight. Tasks expected to end dead rather than
// complete belong in neither list.
func (h *History) Verify(enqueued []string, inFlight ...[]string) Verdict {
	want := make(map[string]bool, len(enqueued))
	for _, id := range enqueued {
		want[id] = true
	}
	allowed := make(map[string]int)
	var v Verdict
	for _, set := range inFlight {
		for _, id := range set {
			allowed[id]++
		}
		v.Bound += len(set)
	}
	v.Tasks = len(want)
	for id := range want {
		if h.done[id] == 0 {
			v.Lost = append(v.Lost, id)
		}
	}
	for id, n := range h.done {
		if !want[id] {
			v.Unknown = append(v.Unknown, id)
		}
		if n > 1 {
			v.Duplicates += n - 1
			if n-1 > allowed[id] {
				v.Excess = append(v.Excess, id)
			}
		}
	}
	slices.Sort(v.Lost)
	slices.Sort(v.Unknown)
	slices.Sort(v.Excess)
	return v
}

// Err returns nil if the verdict passes, or an error that names what went
// wrong and the first few tasks concerned.
func (v Verdict) Err() error {
	var errs []error
	if len(v.Lost) > 0 {
		errs = append(errs, fmt.Errorf("%d of %d enqueued tasks never completed (lost): %s", len(v.Lost), v.Tasks, some(v.Lost)))
	}
	if len(v.Unknown) > 0 {
		errs = append(errs, fmt.Errorf("%d tasks completed that were never enqueued: %s", len(v.Unknown), some(v.Unknown)))
	}
	if len(v.Excess) > 0 {
		errs = append(errs, fmt.Errorf("%d tasks ran more often than the faults they were in flight at allow "+
			"(a live process lost a lease, or a stale ack or nack touched a newer claim): %s", len(v.Excess), some(v.Excess)))
	}
	if v.Duplicates > v.Bound {
		errs = append(errs, fmt.Errorf("%d duplicate runs, more than the %d tasks in flight at the faults", v.Duplicates, v.Bound))
	}
	return errors.Join(errs...)
}

// some lists the first few IDs of ids.
func some(ids []string) string {
	const n = 5
	if len(ids) <= n {
		return strings.Join(ids, ", ")
	}
	return strings.Join(ids[:n], ", ") + fmt.Sprintf(" and %d more", len(ids)-n)
}
