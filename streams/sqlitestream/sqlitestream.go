package sqlitestream

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peonify/peonify"
)

// Compile-time checks of the interfaces Stream implements.
var (
	_ peonify.Stream    = (*Stream)(nil)
	_ peonify.Extender  = (*Stream)(nil)
	_ peonify.Waker     = (*Stream)(nil)
	_ peonify.Enqueuer  = (*Stream)(nil)
	_ peonify.Inspector = (*Stream)(nil)
	_ peonify.Limiter   = (*Stream)(nil)

	_ peonify.Tracker       = (*Stream)(nil)
	_ peonify.WorkflowStore = (*Stream)(nil)
)

// Synchronous selects how hard SQLite works to make a commit durable: the
// database's synchronous setting in WAL mode.
type Synchronous int

const (
	// SynchronousFull syncs the write-ahead log to disk at every commit, so
	// a task whose Enqueue returned survives a process crash, an operating
	// system crash and a power loss. This is the default. Group commit
	// shares each sync among all the writes that arrived meanwhile.
	SynchronousFull Synchronous = iota

	// SynchronousNormal syncs only at checkpoints. A task whose Enqueue
	// returned survives a crash of the process (kill -9) because the write
	// is in the operating system's cache, but the last commits before an
	// operating system crash or a power loss may be lost. The database
	// itself is never corrupted. Faster on disks with slow syncs.
	SynchronousNormal
)

// String returns the SQLite name of the setting.
func (s Synchronous) String() string {
	switch s {
	case SynchronousFull:
		return "FULL"
	case SynchronousNormal:
		return "NORMAL"
	}
	return "Synchronous(" + strconv.Itoa(int(s)) + ")"
}

// Config configures a Stream. The zero value is valid: every field says what
// its zero value means. Negative durations and sizes are errors, except
// where a field says otherwise.
type Config struct {
	// Name names the stream in the processor's logs, stats and events.
	// Defaults to "sqlite:" and the file's base name, such as
	// "sqlite:tasks.db".
	Name string

	// Lease is how long a claimed task stays invisible to other polls before
	// it is handed out again unless acked, nacked or extended. It bounds
	// how long the tasks of a crashed process wait before they run again.
	// Defaults to 30s.
	Lease time.Duration

	// KeepDone keeps acked tasks as peonify.StateDone for this long before a
	// cleanup deletes them, so they can be inspected and their IDs keep
	// deduplicating Enqueue. Defaults to 0: acked tasks are deleted at once.
	KeepDone time.Duration

	// KeepDead deletes dead-lettered and cancelled tasks this long after
	// they died or were cancelled. Defaults to 0: they are kept until
	// retried, deleted or purged.
	KeepDead time.Duration

	// ResultRetention keeps the done tasks that have a result (see
	// peonify.SetResult) or belong to a workflow as peonify.StateDone,
	// with their result, for this long after they finished (or KeepDone,
	// if longer), so that Get, Results and Wait find them and a
	// workflow's dependents read their parents' results; then the
	// cleanup deletes them. Defaults to 24h.
	ResultRetention time.Duration

	// Synchronous trades durability for speed; see its constants. Defaults
	// to SynchronousFull.
	Synchronous Synchronous

	// BusyTimeout is how long a write waits for another process that holds
	// the database's write lock before it fails. Defaults to 5s.
	BusyTimeout time.Duration

	// MaxBatch bounds how many operations (enqueues, claims, acks, nacks,
	// extensions) one group-commit transaction carries. Defaults to 256.
	MaxBatch int

	// WatchInterval is how often the stream looks for commits made by other
	// processes (another producer enqueueing into the same file) to wake
	// the processor, so that their tasks are picked up within about this
	// interval instead of at the processor's next idle poll. It costs one
	// tiny read per interval. Defaults to 100ms; a negative value turns the
	// watch off.
	WatchInterval time.Duration

	// Logger receives errors of background work (the cleanup of finished
	// tasks). Defaults to slog.Default().
	Logger *slog.Logger
}

func (c Config) validate() error {
	switch {
	case c.Lease < 0:
		return &peonify.ConfigError{Field: "sqlitestream.Config.Lease", Reason: "must not be negative (0 means the default, 30s)"}
	case c.KeepDone < 0:
		return &peonify.ConfigError{Field: "sqlitestream.Config.KeepDone", Reason: "must not be negative (0 deletes tasks when they are acked)"}
	case c.KeepDead < 0:
		return &peonify.ConfigError{Field: "sqlitestream.Config.KeepDead", Reason: "must not be negative (0 keeps dead tasks until they are purged)"}
	case c.ResultRetention < 0:
		return &peonify.ConfigError{Field: "sqlitestream.Config.ResultRetention", Reason: "is negative: use a positive duration (0 means the default, 24h)"}
	case c.Synchronous != SynchronousFull && c.Synchronous != SynchronousNormal:
		return &peonify.ConfigError{Field: "sqlitestream.Config.Synchronous", Reason: "must be SynchronousFull or SynchronousNormal"}
	case c.BusyTimeout < 0:
		return &peonify.ConfigError{Field: "sqlitestream.Config.BusyTimeout", Reason: "must not be negative (0 means the default, 5s)"}
	case c.MaxBatch < 0:
		return &peonify.ConfigError{Field: "sqlitestream.Config.MaxBatch", Reason: "must not be negative (0 means the default, 256)"}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Lease == 0 {
		c.Lease = 30 * time.Second
	}
	if c.BusyTimeout == 0 {
		c.BusyTimeout = 5 * time.Second
	}
	if c.ResultRetention == 0 {
		c.ResultRetention = 24 * time.Hour
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 256
	}
	if c.WatchInterval == 0 {
		c.WatchInterval = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Stream is a durable task store in one SQLite file. It implements
// peonify.Stream, Extender, Waker, Enqueuer, Inspector, Limiter, Tracker
// and WorkflowStore. It is safe for concurrent use, and several processes
// may open the same file.
type Stream struct {
	cfg  Config
	db   *sql.DB
	w    *writer
	now  func() time.Time
	wake chan struct{}

	// instance identifies this Stream's claims in the file (the
	// claimed_by column), which Local limits count.
	instance int64
	limits   atomic.Pointer[limitSet] // nil: no limits, the plain claim

	lastFull atomic.Bool // the last Poll returned as many tasks as asked

	// sweptAt is when a limited claim last deleted the full buckets of
	// rate limits (Unix nanoseconds); see sweepBuckets.
	sweptAt atomic.Int64

	// groupsReady is set once a limited claim of this Stream has made
	// sure the file has the groups index (see groupsIndex).
	groupsReady atomic.Bool

	// cursor is the group (key and type) of pending tasks after which
	// the next limited claim starts visiting groups; see claim.visit.
	cursorMu sync.Mutex
	cursor   group

	timerMu sync.Mutex
	timer   *time.Timer // wakes the processor when a scheduled task is due
	timerAt time.Time   // when timer fires; zero when it is not armed
	closed  bool        // guarded by timerMu: no timer may be armed

	// waits are the Wait calls in progress, woken when their task
	// finishes (see track.go).
	waits waitSet

	closeOnce sync.Once
}

// Open opens the SQLite database file at path, creating it and its schema
// when missing, and returns a Stream that stores its tasks there. The file
// may hold other tables: the stream's table is named peonify_tasks. Close
// closes the database.
//
// The schema is created or upgraded on Open and its version kept in the
// file's PRAGMA user_version, so that number belongs to sqlitestream in a
// file shared with other tables.
func Open(path string, cfg Config) (*Stream, error) {
	return open(path, cfg, time.Now)
}

// open is Open with a clock that tests can drive.
func open(path string, cfg Config, now func() time.Time) (*Stream, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	switch {
	case path == "":
		return nil, errors.New("sqlitestream: empty path: give the name of a database file (it is created if missing)")
	case path == ":memory:" || strings.HasPrefix(path, "file::memory:"):
		return nil, errors.New("sqlitestream: an in-memory database is not durable and not shared between connections: " +
			"give a file name (a temporary file in tests), or use the memstream package")
	case strings.ContainsAny(path, "?#"):
		return nil, fmt.Errorf("sqlitestream: path %q contains '?' or '#': choose a file name without them", path)
	}
	if cfg.Name == "" {
		cfg.Name = "sqlite:" + filepath.Base(path)
	}

	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(cfg.BusyTimeout.Milliseconds(), 10)+")")
	q.Add("_pragma", "synchronous("+cfg.Synchronous.String()+")")
	// A statement that changes several rows keeps the pages it changes
	// in a statement journal, to undo itself alone; in memory, not in a
	// temporary file that costs a write call a page.
	q.Add("_pragma", "temp_store(memory)")
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlitestream: open %s: %w", path, err)
	}
	// One connection belongs to the writer for the stream's lifetime and
	// one to the watch; the others serve the Inspector's reads, which WAL
	// mode runs beside the writer.
	db.SetMaxOpenConns(5)
	db.SetMaxIdleConns(5)

	s := &Stream{cfg: cfg, db: db, now: now, wake: make(chan struct{}, 1), instance: rand.Int64() | 1}
	w, err := newWriter(db, cfg, now)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitestream: open %s: %w", path, err)
	}
	s.w = w
	if cfg.WatchInterval > 0 {
		w.watchDone = make(chan struct{})
		go s.watch(cfg.WatchInterval)
	}
	go w.loop()
	return s, nil
}

// watch wakes the processor when another connection, usually another
// process, commits to the database, until the stream is closed. SQLite's
// data_version changes on every such commit; a transaction that changed
// nothing, like an empty poll, does not change it.
func (s *Stream) watch(every time.Duration) {
	defer close(s.w.watchDone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.w.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.Error("sqlitestream: cannot watch for tasks from other processes; they are found by polling", "err", err)
		}
		return
	}
	defer conn.Close()
	t := time.NewTicker(every)
	defer t.Stop()
	// The version at the start, so that a commit before the first tick
	// wakes too: a Wait may have read its task before it.
	last := int64(-1)
	if err := conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&last); err != nil {
		last = -1
	}
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		var v int64
		if err := conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
			continue // transient (busy); the processor still polls
		}
		if last >= 0 && v != last {
			s.signal()
			s.checkWaits(ctx, conn)
		}
		last = v
	}
}

// Name returns Config.Name; the processor uses it to name the stream.
func (s *Stream) Name() string { return s.cfg.Name }

// Wake returns a channel that receives when a task may have become ready:
// at once after an Enqueue, a Nack or a Retry through this Stream, when a
// scheduled task or a retry delay falls due, and within
// Config.WatchInterval after another process commits to the file. With
// limits (see SetLimits) it also receives at once after an Ack, a Nack or
// a Delete through this Stream frees a permit, and when the token a held
// back task waits for is due.
func (s *Stream) Wake() <-chan struct{} { return s.wake }

// signal wakes a waiting processor without blocking.
func (s *Stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// wakeAt arms the wake timer to fire at t, unless it is armed to fire
// earlier already.
func (s *Stream) wakeAt(t time.Time) {
	d := t.Sub(s.now())
	if d <= 0 {
		s.signal()
		return
	}
	s.timerMu.Lock()
	defer s.timerMu.Unlock()
	if s.closed {
		return
	}
	if !s.timerAt.IsZero() && !t.Before(s.timerAt) && s.timerAt.After(s.now()) {
		return
	}
	s.timerAt = t
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.timerFired)
	} else {
		s.timer.Reset(d)
	}
}

func (s *Stream) timerFired() {
	s.timerMu.Lock()
	if !s.timerAt.After(s.now()) { // not re-armed for later meanwhile
		s.timerAt = time.Time{}
	}
	s.timerMu.Unlock()
	s.signal()
}

// Close waits for the writes in progress, then closes the database. Later
// calls of any method return an error wrapping peonify.ErrClosed. Close is
// idempotent. If ctx ends first, Close returns its error and the database
// is closed as soon as the last write finishes.
func (s *Stream) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.timerMu.Lock()
		s.closed = true
		if s.timer != nil {
			s.timer.Stop()
		}
		s.timerMu.Unlock()
		close(s.w.quit)
	})
	select {
	case <-s.w.exited:
		return s.w.closeErr
	case <-ctx.Done():
		return fmt.Errorf("sqlitestream: close: %w (the database closes when the write in progress ends)", ctx.Err())
	}
}

// errClosed is returned by every method after Close.
var errClosed = fmt.Errorf("sqlitestream: %w", peonify.ErrClosed)

// toNanos stores a time as Unix nanoseconds; the zero time is 0.
func toNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of toNanos.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
