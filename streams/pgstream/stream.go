package pgstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamkit"
)

// maxBatch caps one claim, whatever the processor asks for.
const maxBatch = 10000

// Stream is a Peonify stream backed by a Postgres table: one named queue
// in the peonify_tasks table. It implements peonify.Stream, Extender,
// Waker, Starter, Enqueuer, Inspector, PollLimiter, Limiter, Tracker and
// WorkflowStore, and adds EnqueueTx, Pause and Resume.
//
// A Stream used only to enqueue starts nothing in the background. Start
// (or else the first Poll) starts, until Close, the rescuer and cleaner
// goroutine and (unless Config.NoListen) subscribes to a Listener: its own,
// which holds one connection, or the one shared through Config.Listener.
//
// All methods are safe for concurrent use.
type Stream struct {
	pool    *pgxpool.Pool
	cfg     Config
	sql     statements
	channel string // NOTIFY channel of the schema; the payload is the queue
	lease   int64  // Config.Lease in microseconds

	// fullClaimEvery bounds how long claims may resume after hint before
	// one starts from the front of the queue again.
	fullClaimEvery time.Duration
	hintMu         sync.Mutex
	hint           claimHint

	// Flow control (see flow.go): the limits' plan, nil without limits;
	// where the next limited claim's rotation over keys starts (guarded by
	// hintMu); and the wake-up timer for a rate limit's next token.
	plan      atomic.Pointer[flowPlan]
	keyCursor string
	hints     map[string]struct{} // keys whose permits were given back since the last claim
	needFull  bool                // the next limited claim looks at every key
	lastFull  time.Time           // of the last limited claim that looked at every key
	free      string              // the free channel (see freeNote)
	freeMu    sync.Mutex          // guards freeKeys and freeAll
	freeKeys  []string            // keys whose permits were given back, to announce
	freeAll   bool                // a permit not of a key was given back
	freeKick  chan struct{}       // wakes announceFreed
	timerMu   sync.Mutex
	timer     *time.Timer
	timerAt   time.Time

	wake     chan struct{}
	fin      string        // NOTIFY channel of finished tasks, for Wait
	finKick  chan struct{} // wakes watchFinished
	waitHub  waitHub
	listener *Listener // shared or own; nil with NoListen or before Start or the first Poll

	closed atomic.Bool
	mu     sync.Mutex // guards start, stop and listener
	start  bool
	stop   func(context.Context) error // stops the listening; nil until started
	bg     streamkit.Group             // the rescuer and cleaner
	checks atomic.Pointer[Listener]    // the listener, for suspect; nil while there is none
}

var (
	_ peonify.Stream    = (*Stream)(nil)
	_ peonify.Extender  = (*Stream)(nil)
	_ peonify.Waker     = (*Stream)(nil)
	_ peonify.Starter   = (*Stream)(nil)
	_ peonify.Enqueuer  = (*Stream)(nil)
	_ peonify.Inspector = (*Stream)(nil)
)

// New returns a stream on cfg.Queue in the database behind pool. The
// schema must already exist: run Migrate (or MigrateSchema) once first.
//
// The caller owns pool and closes it after Close has returned; Close does
// not close it. A polling stream takes one connection out of the pool for
// LISTEN (see Config.NoListen); the pool then opens another in its place,
// so the stream uses one connection beyond the pool's MaxConns.
//
// Give the pool a connect timeout (connect_timeout in the URL, or
// ConnConfig.ConnectTimeout). Every call of the stream ends with its
// context, and a connection whose query was cut short is dropped, so a
// connection that died without a reset costs one timeout. But pgxpool goes
// on opening a connection after the call that asked for it gave up: with
// no connect timeout, an attempt into a network that swallows packets
// hangs for good and holds a place in the pool, and enough of them stall
// the pool after the network recovers. Even with one, the attempts made
// while the network was silent hold their places until it ends them, so
// after a half-open link heals, a processor may take up to about the
// connect timeout to work again: the chaos matrix's halfopen cell
// measures under a second with 2s, and about 9s with 10s, cmd/peonify's
// default. And a connection whose query was cut short keeps its place in
// the pool until pgx has closed it: pgx sends the server a cancel request
// and waits for its close, for up to 15s, which on a link that died
// without a reset never comes. A pool whose every connection was cut
// short works again only then, up to 15s after the cut however soon the
// link heals (TestEveryConnectionCutHoldsThePool); give the pool more
// connections than the processor has calls in flight (MaxConns; pgx's
// default is 4 or the number of CPUs) so that new ones have room.
func New(pool *pgxpool.Pool, cfg Config) (*Stream, error) {
	if pool == nil {
		return nil, errors.New("pgstream: New needs a *pgxpool.Pool, got nil")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Stream{
		pool:     pool,
		cfg:      cfg,
		sql:      newStatements(cfg.Schema, cfg.SyncCommit),
		channel:  channelName(cfg.Schema),
		free:     freeChannelName(cfg.Schema),
		fin:      finishedChannelName(cfg.Schema),
		finKick:  make(chan struct{}, 1),
		lease:    cfg.Lease.Microseconds(),
		wake:     make(chan struct{}, 1),
		freeKick: make(chan struct{}, 1),

		fullClaimEvery: 250 * time.Millisecond,
	}, nil
}

// Queue returns the name of the stream's queue.
func (s *Stream) Queue() string { return s.cfg.Queue }

// Poll claims up to limit ready tasks of the queue in one statement, highest
// Priority first, then by RunAt and ID, and leases them for Config.Lease.
// It returns nothing while the queue is paused.
//
// While a backlog drains, a stream's claims resume where its previous
// claim ended, so a task that sorts before that point (a higher priority
// enqueued meanwhile, a task whose lease expired) waits for the next claim
// from the front of the queue: at most about a quarter of a second.
func (s *Stream) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	if s.closed.Load() {
		return nil, peonify.ErrClosed
	}
	s.startBackground()
	if limit <= 0 {
		return nil, nil
	}
	limit = min(limit, maxBatch)
	if p := s.plan.Load(); p != nil {
		return s.pollLimited(ctx, p, limit)
	}

	// While a backlog drains, resume after the last task claimed: a claim
	// from the front of the queue would walk the index entries of every
	// task claimed since the last VACUUM. A full claim now and then (and
	// whenever the resumed one comes up short) still finds tasks that
	// sort before that point: higher priorities enqueued meanwhile, and
	// tasks whose lease expired.
	s.hintMu.Lock()
	h := s.hint
	useHint := h.valid && time.Since(h.lastFull) < s.fullClaimEvery
	s.hintMu.Unlock()

	var ds []peonify.Delivery
	if useHint {
		var err error
		ds, err = s.claim(ctx, s.sql.claimAfter, limit, h.priority, h.runAt, h.id)
		if err != nil {
			return nil, err
		}
		if len(ds) == limit {
			s.setHint(ds, false, true)
			return ds, nil
		}
	}
	rest, err := s.claim(ctx, s.sql.claim, limit-len(ds))
	if err != nil {
		if len(ds) > 0 {
			// Keep what the first claim leased rather than leave it to
			// expire; the error shows again on the next Poll.
			return ds, nil
		}
		return nil, err
	}
	// A full claim that comes up short means the backlog is gone: until
	// the next full batch, claims start from the front.
	s.setHint(rest, true, len(rest) == limit-len(ds))
	return append(ds, rest...), nil
}

// claimHint is where the last claim of this stream ended.
type claimHint struct {
	valid    bool
	priority int
	runAt    time.Time
	id       string
	lastFull time.Time // of the last claim from the front of the queue
}

// setHint records the end of a claim that returned ds (sorted), and when
// the last full claim ran. keep says whether a hint is worth keeping.
func (s *Stream) setHint(ds []peonify.Delivery, full, keep bool) {
	s.hintMu.Lock()
	defer s.hintMu.Unlock()
	if full {
		s.hint.lastFull = time.Now()
	}
	if !keep || len(ds) == 0 {
		s.hint.valid = false
		return
	}
	last := ds[len(ds)-1].Task
	s.hint.valid, s.hint.priority, s.hint.runAt, s.hint.id = true, last.Priority, last.RunAt, last.ID
}

// claim runs one claim statement and returns its deliveries in delivery
// order.
func (s *Stream) claim(ctx context.Context, q string, limit int, after ...any) ([]peonify.Delivery, error) {
	args := append([]any{s.cfg.Queue, limit, s.lease, s.cfg.Identity}, after...)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, s.dbError("claiming tasks", err)
	}
	ds := make([]peonify.Delivery, 0, min(limit, 64))
	for rows.Next() {
		info, token, err := scanTask(rows)
		if err != nil {
			rows.Close()
			return nil, s.dbError("reading claimed tasks", err)
		}
		ds = append(ds, peonify.Delivery{Task: &info.Task, Token: token, Deadline: info.LeaseUntil})
	}
	if err := rows.Err(); err != nil {
		// Nothing is leased if the statement failed; if only its reply was
		// lost, the leases expire and the rescuer hands the tasks out again.
		return nil, s.dbError("claiming tasks", err)
	}
	slices.SortFunc(ds, func(a, b peonify.Delivery) int {
		if c := cmp.Compare(b.Task.Priority, a.Task.Priority); c != 0 {
			return c
		}
		if c := a.Task.RunAt.Compare(b.Task.RunAt); c != 0 {
			return c
		}
		return cmp.Compare(a.Task.ID, b.Task.ID)
	})
	return ds, nil
}

// Ack completes deliveries in one statement: their tasks are deleted, or
// kept in state done when Config.KeepDone is set. A task with a result
// (Delivery.Result not nil) or in a workflow is kept done, with its
// result, for Config.ResultRetention, and its waiting dependents are
// released, in the same transaction (one call of a function that
// migration 3 installs; a batch of tasks without either takes the plain
// statement). A delivery whose lease was lost, or that was already acked,
// is silently ignored: it releases nothing.
func (s *Stream) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	if len(ds) == 0 {
		return nil
	}
	if tracked(ds) {
		if err := s.ackTracked(ctx, ds); err != nil {
			return err
		}
		s.freed(ds...)
		return nil
	}
	ids := make([]string, 0, len(ds))
	tokens := make([]int64, 0, len(ds))
	for _, d := range ds {
		if d.Task == nil || d.Token == 0 {
			continue // not a delivery of this stream: there is nothing to ack
		}
		ids = append(ids, d.Task.ID)
		tokens = append(tokens, int64(d.Token))
	}
	if len(ids) == 0 {
		return nil
	}
	q := s.sql.ackDelete
	if s.cfg.KeepDone > 0 {
		q = s.sql.ackDone
	}
	args := []any{s.cfg.Queue, ids, tokens}
	if _, err := s.pool.Exec(ctx, q, args...); err != nil {
		return s.dbError("acking tasks", err)
	}
	// With limits, an ack of a task that holds a permit wakes this
	// stream and, through NOTIFY, the other processors of the queue.
	s.freed(ds...)
	return nil
}

// Nack hands a delivery back: OutcomeFailed and OutcomeReleased make the
// task pending again after opts.Delay (Released does not count the
// attempt); OutcomeDead moves it to state dead with opts.Reason as its last
// error. A nack of a lost lease changes nothing and returns an error
// wrapping peonify.ErrLeaseLost.
func (s *Stream) Nack(ctx context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	if err := streamkit.CheckDelivery(s.closed.Load(), d, "pgstream", "Nack"); err != nil {
		return err
	}
	if d.Token == 0 {
		return fmt.Errorf("pgstream: Nack of task %s without a claim token (not a delivery from Poll): %w", d.Task.ID, peonify.ErrLeaseLost)
	}
	opts, err := opts.Normalize()
	if err != nil {
		return fmt.Errorf("pgstream: Nack of task %s: %w", d.Task.ID, err)
	}
	var q string
	switch opts.Outcome {
	case peonify.OutcomeFailed:
		q = s.sql.nackFailed
	case peonify.OutcomeReleased:
		q = s.sql.nackReleased
	case peonify.OutcomeDead:
		q = s.sql.nackDead
	}
	var reason *string
	if opts.Reason != "" {
		r := peonify.TruncateReason(storableText(opts.Reason))
		reason = &r
	}
	args := []any{s.cfg.Queue, d.Task.ID, int64(d.Token), s.channel, reason}
	if opts.Outcome != peonify.OutcomeDead {
		args = append(args, opts.Delay.Microseconds())
	} else {
		args[3] = s.fin // a dead task wakes Wait's waiters
	}

	var n, notified int
	if opts.Outcome == peonify.OutcomeDead && d.Task.Workflow != "" {
		// Its dependents are cancelled (or released) in the same
		// transaction.
		n, err = s.nackDeadWorkflow(ctx, d, args, reason)
	} else {
		err = s.pool.QueryRow(ctx, q, args...).Scan(&n, &notified)
	}
	if err != nil {
		return s.dbError("nacking task "+d.Task.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("pgstream: nack of task %s ignored: %w", d.Task.ID, peonify.ErrLeaseLost)
	}
	if opts.Outcome == peonify.OutcomeDead {
		s.kickWaiters()
	}
	s.freed(d) // a permit is free again: here, and for the other processors
	if p := s.plan.Load(); p != nil && p.perKey && d.Task.Key != "" && opts.Outcome != peonify.OutcomeDead && opts.Delay > 0 {
		// The retry is ready again after its backoff without a
		// notification: look at its key then.
		key := []string{d.Task.Key}
		time.AfterFunc(opts.Delay, func() {
			s.addHints(key)
			s.wakeUp()
		})
	}
	return nil
}

// Extend renews the lease of d so that it ends lease from now (Config.Lease
// when lease <= 0). It returns an error wrapping peonify.ErrCancelled if
// the task was cancelled during this claim (see Cancel), and one wrapping
// peonify.ErrLeaseLost if it was acked, nacked or claimed again since.
func (s *Stream) Extend(ctx context.Context, d peonify.Delivery, lease time.Duration) (peonify.Delivery, error) {
	if err := streamkit.CheckDelivery(s.closed.Load(), d, "pgstream", "Extend"); err != nil {
		return d, err
	}
	if d.Token == 0 {
		return d, fmt.Errorf("pgstream: Extend of task %s without a claim token (not a delivery from Poll): %w", d.Task.ID, peonify.ErrLeaseLost)
	}
	us := s.lease
	if lease > 0 {
		us = max(lease.Microseconds(), 1)
	}
	var until time.Time
	err := s.pool.QueryRow(ctx, s.sql.extend, s.cfg.Queue, d.Task.ID, int64(d.Token), us).Scan(&until)
	if errors.Is(err, pgx.ErrNoRows) {
		return d, s.claimGone(ctx, d, "extend")
	}
	if err != nil {
		return d, s.dbError("extending the lease of task "+d.Task.ID, err)
	}
	d.Deadline = until
	return d, nil
}

// Name returns "postgres:" and the queue name, such as "postgres:emails";
// the processor uses it in logs and stats unless AddStream is given another.
func (s *Stream) Name() string { return "postgres:" + s.cfg.Queue }

// Wake returns a channel that receives when tasks become ready in the
// queue: on a NOTIFY from any producer (see the package documentation),
// once the stream is started (see Start), and on this stream's own
// Enqueue. Wake does no I/O. The channel is never closed.
func (s *Stream) Wake() <-chan struct{} { return s.wake }

// Start starts the rescuer and cleaner goroutine and, unless
// Config.NoListen, subscribes to the stream's Listener, which connects in
// the background. It does not wait for the listening connection: the
// listener wakes the stream each time it has (re)connected, so a task
// stored before it listens is found then. A processor's Run calls Start;
// without it, the first Poll starts the same. Start is idempotent; after
// Close it returns peonify.ErrClosed.
func (s *Stream) Start(ctx context.Context) error {
	if !s.startBackground() {
		return peonify.ErrClosed
	}
	return nil
}

// Close stops the stream's background goroutines and, unless it shares a
// Config.Listener, closes its listening connection; a Wait in progress
// returns peonify.ErrClosed. It does not close the
// pool. Close is idempotent; after it, the stream's methods return
// peonify.ErrClosed.
func (s *Stream) Close(ctx context.Context) error {
	s.closed.Store(true)
	s.checks.Store(nil)
	s.waitHub.wake(nil, true) // Wait returns ErrClosed
	s.timerMu.Lock()
	if s.timer != nil {
		s.timer.Stop()
	}
	s.timerMu.Unlock()
	s.mu.Lock()
	stop := s.stop
	s.stop = nil
	s.mu.Unlock()
	if stop == nil {
		return nil
	}
	s.bg.Cancel()
	err := stop(ctx)
	if werr := s.bg.Wait(ctx); werr != nil {
		return fmt.Errorf("pgstream: Close gave up waiting for background goroutines: %w", werr)
	}
	return err
}

// startBackground starts the rescuer and cleaner, and subscribes to a
// listener, once. It reports false if the stream is closed.
func (s *Stream) startBackground() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return false
	}
	if s.start {
		return true
	}
	s.start = true
	s.bg.Go(s.maintain)
	s.bg.Go(s.announceFreed)
	s.bg.Go(s.watchFinished)
	var unsubscribe, unsubscribeFin func()
	var own *Listener
	switch {
	case s.cfg.Listener != nil:
		s.listener = s.cfg.Listener
	case !s.cfg.NoListen:
		// New validated the schema, so NewListener cannot fail.
		own, _ = NewListener(s.pool, ListenerConfig{Schema: s.cfg.Schema, Logger: s.cfg.Logger})
		s.listener = own
	}
	if s.listener != nil {
		s.checks.Store(s.listener)
		unsubscribe = s.listener.subscribe(s.cfg.Queue, s.wake, s.addHints)
		unsubscribeFin = s.listener.subscribeFinished(s.cfg.Queue, s.finKick)
	}
	s.stop = func(ctx context.Context) error {
		if unsubscribe != nil {
			unsubscribe()
			unsubscribeFin()
		}
		if own != nil {
			return own.Close(ctx)
		}
		return nil
	}
	return true
}

// signal wakes an idle processor without blocking. Tasks may be ready
// anywhere in the queue: the next limited claim looks at every key.
func (s *Stream) signal() {
	s.addHints(nil)
	s.wakeUp()
}

// wakeUp wakes an idle processor without blocking.
func (s *Stream) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// dbError wraps a database error with what the stream was doing, and
// turns a missing table into advice.
func (s *Stream) dbError(doing string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000") {
		return fmt.Errorf("pgstream: %s in queue %q: Peonify's tables are missing in schema %q: run pgstream.MigrateSchema(ctx, pool, %q) first: %w",
			doing, s.cfg.Queue, s.cfg.Schema, s.cfg.Schema, err)
	}
	s.suspect(err)
	return fmt.Errorf("pgstream: %s in queue %q: %w", doing, s.cfg.Queue, err)
}

// suspect looks at the error of a call to the database. A call that timed
// out may have met a connection that died without a reset (a half-open
// link: a middlebox or a peer that dropped its state). pgx closes the
// connection whose call was cut short, and the pool drops the idle ones
// that died with it as it hands them out (it pings a connection idle for
// over a second, within the caller's context, and one whose ping ran out
// of time is closed). But the listener's connection is idle by design:
// the listener would notice only after the rest of its HealthCheck
// period, and a ping as long (10s each by default), and until it has
// listened again, no notification wakes the processor out of its error
// backoff. So suspect asks the listener to check its connection now (see
// Listener.check). It never blocks.
func (s *Stream) suspect(err error) {
	if !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) {
		return
	}
	if l := s.checks.Load(); l != nil {
		l.check()
	}
}

// appendDeliveries returns a batch query's reader of claimed rows of
// taskColumns, which appends their deliveries to *ds.
func appendDeliveries(ds *[]peonify.Delivery) func(pgx.Rows) error {
	return func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			info, token, err := scanTask(rows)
			if err != nil {
				return err
			}
			*ds = append(*ds, peonify.Delivery{Task: &info.Task, Token: token, Deadline: info.LeaseUntil})
		}
		return rows.Err()
	}
}

// scanTask reads one row of taskColumns.
func scanTask(rows pgx.Rows) (peonify.TaskInfo, uint64, error) {
	var (
		info      peonify.TaskInfo
		t         = &info.Task
		headers   []byte
		state     string
		uniqueKey pgtype.Text
		lease     pgtype.Timestamptz
		token     int64
		lastError pgtype.Text
		workflow  pgtype.Text
		fraction  pgtype.Float8
		message   pgtype.Text
		progAt    pgtype.Timestamptz
	)
	err := rows.Scan(&t.ID, &t.Type, &t.Payload, &headers, &state, &t.Priority, &info.Attempts, &t.MaxAttempts,
		&uniqueKey, &t.RunAt, &t.EnqueuedAt, &info.UpdatedAt, &lease, &token, &lastError, &t.Key,
		&workflow, &t.Parents, &t.AllowFailedParents, &info.Result, &fraction, &message, &progAt)
	if err != nil {
		return info, 0, err
	}
	t.Workflow = workflow.String
	if progAt.Valid {
		info.Progress = peonify.Progress{Fraction: fraction.Float64, Message: message.String, UpdatedAt: progAt.Time}
	}
	t.Headers = streamkit.DecodeHeaders(headers)
	t.UniqueKey = uniqueKey.String
	t.LastError = lastError.String
	t.Attempt = info.Attempts
	info.State = peonify.State(state)
	if state == "pending" && t.RunAt.After(time.Now()) {
		info.State = peonify.StateScheduled
	}
	info.LastError = lastError.String
	if lease.Valid {
		info.LeaseUntil = lease.Time
	}
	return info, uint64(token), nil
}

// storableText makes s storable as Postgres text: valid UTF-8, no NUL.
func storableText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}
