// Package resend remembers, for a window of time, the IDs of the tasks a
// push intake (wsstream, mqttstream) has stored, so that a resend of a task
// is recognised after the store has forgotten it: after the task ran and
// a store that keeps no finished tasks deleted it, or in a store that never
// detects duplicates (RabbitMQ).
//
// A Log holds a 16-byte hash of each ID with the time it was recorded, in
// memory, and, when it has a file, appends each record to the file and
// syncs it before Record returns, so that the window survives a restart
// (or kill -9) of the process. Concurrent Records share one write and
// sync of the file (a group commit): the first caller to find the file idle
// writes the records of every caller waiting, and the others wait for the
// sync that covers theirs. The file is read back by Open and rewritten
// without expired records when they make up most of it. One Log per file:
// two processes must not share a file.
//
// Config and Window are what the intakes share around a Log: the defaults
// and checks of their ResendWindow, ResendLog and ResendMaxIDs fields, a
// window turned off (a nil *Window), and the one log line when the file
// cannot be written.
package resend

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// recordSize is the size of one record of the file: the time it was
// recorded, in Unix milliseconds (8 bytes, big-endian), and the ID's hash.
const recordSize = 8 + hashSize

const hashSize = 16

type hash [hashSize]byte

func sum(id string) hash {
	s := sha256.Sum256([]byte(id))
	return hash(s[:hashSize])
}

// entry is one record, in the order of recording.
type entry struct {
	h  hash
	at int64 // Unix milliseconds
}

// Log remembers IDs for a window. Its methods are safe for concurrent use.
type Log struct {
	window time.Duration
	max    int
	now    func() time.Time
	path   string

	mu     sync.Mutex
	seen   map[hash]int64 // the latest time each ID was recorded
	order  []entry        // every record not yet expired, oldest first (a queue)
	head   int            // order[head:] is the queue
	f      *os.File       // nil without a file
	inFile int            // records in the file
	err    error          // a failed write: the file is no longer appended to

	// The group commit. At most one batch is being written (writing) and
	// at most one is open to more records (next, nil when none); a batch
	// is opened only while another is written, so next != nil implies
	// writing. synced is broadcast when a batch is written.
	writing bool
	next    *batch
	synced  *sync.Cond // on mu

	sync func(*os.File) error // (*os.File).Sync; the tests wrap it
}

// batch is the records of the Records that share one write and sync.
type batch struct {
	buf  []byte
	n    int   // records in buf
	done bool  // written, or failed with err
	err  error // what every Record of the batch returns
}

// Open returns a Log that remembers IDs for window, at most maxIDs of them
// (the oldest are forgotten first). With a path it reads the records of
// that file, creating it if needed, and appends new ones to it; without
// one the Log remembers in memory only. now is the clock (time.Now when
// nil).
func Open(path string, window time.Duration, maxIDs int, now func() time.Time) (*Log, error) {
	if now == nil {
		now = time.Now
	}
	l := &Log{window: window, max: maxIDs, now: now, path: path, seen: make(map[hash]int64)}
	l.synced = sync.NewCond(&l.mu)
	l.sync = (*os.File).Sync
	if path == "" {
		return l, nil
	}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading the resend log: %w", err)
	}
	data = data[:len(data)-len(data)%recordSize] // a record torn by a crash was never acknowledged
	for off := 0; off < len(data); off += recordSize {
		var e entry
		e.at = int64(binary.BigEndian.Uint64(data[off:]))
		copy(e.h[:], data[off+8:off+recordSize])
		l.push(e)
	}
	l.expire()
	if err := l.rewrite(); err != nil {
		return nil, err
	}
	return l, nil
}

// Window is how long an ID is remembered after it was recorded.
func (l *Log) Window() time.Duration { return l.window }

// Seen reports whether id was recorded within the window.
func (l *Log) Seen(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire()
	_, ok := l.seen[sum(id)]
	return ok
}

// Record remembers ids as stored now. With a file, it returns once the
// records are synced to it; after a write error the Log keeps remembering
// in memory and every Record returns that error (the Records whose
// records the failed write held included).
func (l *Log) Record(ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	at := l.now().UnixMilli()
	var b *batch // the batch the records join, nil when not written
	if l.f != nil && l.err == nil {
		if l.next == nil {
			l.next = new(batch)
		}
		b = l.next
	}
	for _, id := range ids {
		e := entry{h: sum(id), at: at}
		l.push(e)
		if b != nil {
			b.buf = binary.BigEndian.AppendUint64(b.buf, uint64(at))
			b.buf = append(b.buf, e.h[:]...)
			b.n++
		}
	}
	l.expire()
	if b == nil {
		return l.err
	}
	for !b.done && l.writing {
		l.synced.Wait()
	}
	if !b.done { // the file is idle and b is still open: write it
		l.write(b)
	}
	return b.err
}

// write writes and syncs b, the open batch, with l.mu held on entry and
// on return but not while it waits for the file, so that more Records
// join the next batch meanwhile. It wakes the Records waiting for b, and
// those of the next batch, one of which writes it.
func (l *Log) write(b *batch) {
	l.next = nil
	l.writing = true
	f := l.f
	l.mu.Unlock()
	var err error
	if _, werr := f.Write(b.buf); werr != nil {
		err = fmt.Errorf("writing the resend log %s: %w", l.path, werr)
	} else if serr := l.sync(f); serr != nil {
		err = fmt.Errorf("syncing the resend log %s: %w", l.path, serr)
	}
	l.mu.Lock()
	if err == nil {
		l.inFile += b.n
		// Rewrite the file when expired records make up most of it.
		// The new file holds every record remembered, those of the
		// next batch included: that batch is written too.
		if live := len(l.order) - l.head; l.inFile > 4096 && l.inFile > 4*live {
			if err = l.rewrite(); err == nil && l.next != nil {
				l.next.done = true
				l.next = nil
			}
		}
	}
	if err != nil {
		l.err = err
		if l.next != nil { // its records are not written: fail them too
			l.next.done, l.next.err = true, err
			l.next = nil
		}
	}
	b.done, b.err = true, err
	l.writing = false
	l.synced.Broadcast()
}

// Close closes the file, once the records of the Records under way are
// written.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.writing || l.next != nil {
		l.synced.Wait()
	}
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// push appends e to the queue and the index, forgetting the oldest
// records beyond max.
func (l *Log) push(e entry) {
	l.order = append(l.order, e)
	l.seen[e.h] = e.at
	for len(l.seen) > l.max {
		l.pop()
	}
}

// expire forgets the records older than the window.
func (l *Log) expire() {
	cut := l.now().Add(-l.window).UnixMilli()
	for l.head < len(l.order) && l.order[l.head].at < cut {
		l.pop()
	}
}

// pop forgets the oldest record.
func (l *Log) pop() {
	e := l.order[l.head]
	l.order[l.head] = entry{}
	l.head++
	if at, ok := l.seen[e.h]; ok && at == e.at {
		delete(l.seen, e.h)
	}
	if l.head > 1024 && l.head > len(l.order)/2 { // reclaim the front of the queue
		l.order = append([]entry(nil), l.order[l.head:]...)
		l.head = 0
	}
}

// rewrite replaces the file with the records not yet expired, through a
// temporary file that is renamed over it, and opens it for appending.
func (l *Log) rewrite() error {
	if l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
	var buf []byte
	n := 0
	for _, e := range l.order[l.head:] {
		if at, ok := l.seen[e.h]; !ok || at != e.at {
			continue // recorded again later
		}
		buf = binary.BigEndian.AppendUint64(buf, uint64(e.at))
		buf = append(buf, e.h[:]...)
		n++
	}
	tmp := l.path + ".tmp"
	if err := writeSync(tmp, buf); err != nil {
		return fmt.Errorf("writing the resend log: %w", err)
	}
	if err := os.Rename(tmp, l.path); err != nil {
		return fmt.Errorf("writing the resend log: %w", err)
	}
	if d, err := os.Open(filepath.Dir(l.path)); err == nil {
		_ = d.Sync() // make the rename durable where the system allows it
		_ = d.Close()
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("opening the resend log: %w", err)
	}
	l.f = f
	l.inFile = n
	return nil
}

func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

var _ io.Closer = (*Log)(nil)
