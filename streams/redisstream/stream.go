package redisstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamkit"
	"github.com/redis/go-redis/v9"
)

// maxBatch caps one claim, whatever the processor asks for.
const maxBatch = 10000

// MaxPoll returns the most tasks one Poll returns, so that the processor
// asks for no more (peonify.PollLimiter): 10,000, or 1,000 with limits,
// whose claims do more work per task.
func (s *Stream) MaxPoll() int {
	if s.lim.Load() != nil {
		return maxLimitedBatch
	}
	return maxBatch
}

// promoteEvery is how often Poll at most moves due scheduled tasks into
// the stream, and promoteLimit how many it moves at once.
const (
	promoteEvery = 5 * time.Millisecond
	promoteLimit = 1000
)

// forgetIdle is how long a consumer that holds no entries must have been
// idle before a starting stream deletes it from the group.
const forgetIdle = time.Hour

// Stream is a Peonify stream on a Redis stream: one named queue, shared
// by any number of processors through a consumer group. It implements
// peonify.Stream, Extender, Waker, Starter, Enqueuer, Inspector,
// PollLimiter, Limiter (see "Flow control" in the package
// documentation), Tracker and WorkflowStore (see "Results and
// workflows").
//
// A Stream used only to enqueue or polled without Start starts nothing in
// the background. Start starts, until Close, a goroutine that waits for new
// entries with a blocking read, which holds one of the client's pooled
// connections.
//
// All methods are safe for concurrent use.
type Stream struct {
	client redis.UniversalClient
	cfg    Config
	keys   Keys
	skeys  []string // the keys every script gets
	head   []any    // the leading arguments every script gets
	read   []string // XREADGROUP's STREAMS arguments

	wake  chan struct{} // Wake's channel
	armed chan struct{} // a Poll came back short: the watcher should look for work

	lim         atomic.Pointer[limitSet] // nil: no limits
	closed      atomic.Bool
	readOwn     atomic.Bool  // take back this consumer's own pending entries first
	started     atomic.Bool  // the first Poll ran its start-up work
	lastRescue  atomic.Int64 // Unix nanoseconds of the last look for expired leases
	lastPromote atomic.Int64 // Unix nanoseconds of the last move of due tasks

	pollMu sync.RWMutex // held for writing while taking back own entries, for reading by other polls

	mu       sync.Mutex
	inflight map[string]uint64 // entry ID -> token of the latest delivery this stream made and has not seen acked or nacked
	stop     func()            // stops the watcher; nil if it never started
	dueAt    time.Time         // when dueTimer fires; zero if it is not set
	dueTimer *time.Timer       // fires Wake when a task this stream scheduled is due
	wakeID   string            // the last entry of the limits' wake stream the watcher saw; only the watcher uses it
	bg       streamkit.Group   // the watcher

	waiters waiters         // Wait's subscription and waiters
	waitBg  streamkit.Group // the dispatcher of Wait's subscription
	closing chan struct{}   // closed by Close
}

var (
	_ peonify.Stream      = (*Stream)(nil)
	_ peonify.Extender    = (*Stream)(nil)
	_ peonify.Waker       = (*Stream)(nil)
	_ peonify.Starter     = (*Stream)(nil)
	_ peonify.Enqueuer    = (*Stream)(nil)
	_ peonify.Inspector   = (*Stream)(nil)
	_ peonify.PollLimiter = (*Stream)(nil)
)

// New returns a stream on cfg.Queue in the database behind client. It does
// no I/O: the consumer group is created, from the start of the stream, the
// first time it is needed.
//
// The caller owns client and closes it after Close has returned; Close
// does not close it. The stream needs Redis 6.2 or later.
func New(client redis.UniversalClient, cfg Config) (*Stream, error) {
	if client == nil {
		return nil, errors.New("redisstream: New needs a redis.UniversalClient, got nil")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.WaitReplicas > 0 {
		if err := checkWaitClient(client); err != nil {
			return nil, err
		}
	}
	keys := newKeys(cfg.Prefix, cfg.Queue)
	s := &Stream{
		client:   client,
		cfg:      cfg,
		keys:     keys,
		skeys:    []string{keys.Stream, keys.Schedule, keys.Dead, keys.Tasks, keys.Limits},
		head:     []any{keys.Seen, keys.Unique, keys.Scheduled, Group, cfg.Consumer},
		read:     []string{keys.Stream, ">"},
		wake:     make(chan struct{}, 1),
		armed:    make(chan struct{}, 1),
		inflight: make(map[string]uint64),
		closing:  make(chan struct{}),
	}
	s.readOwn.Store(true)
	s.armed <- struct{}{}
	return s, nil
}

// Name returns "redis:" and the queue name, such as "redis:emails"; the
// processor uses it in logs and stats unless AddStream is given another.
func (s *Stream) Name() string { return "redis:" + s.cfg.Queue }

// Queue returns the name of the stream's queue.
func (s *Stream) Queue() string { return s.cfg.Queue }

// Consumer returns the stream's name in the consumer group.
func (s *Stream) Consumer() string { return s.cfg.Consumer }

// Keys returns the names of the queue's Redis keys.
func (s *Stream) Keys() Keys { return s.keys }

// Poll claims up to limit tasks: first entries this consumer holds but this
// stream does not (after a start or a failed read, and once per
// Config.RescueInterval), then, once per RescueInterval, entries whose
// lease ended, then new entries: all in one round trip, with the move of
// due scheduled tasks into the stream. New entries come in
// stream order (FIFO); Task.Priority is not used for ordering. Poll does
// not block: it returns what is there.
func (s *Stream) Poll(ctx context.Context, limit int) ([]peonify.Delivery, error) {
	if done, err := streamkit.CheckPoll(ctx, s.closed.Load(), limit); done {
		return nil, err
	}
	limit = min(limit, maxBatch)
	start := time.Now()
	if !s.started.Swap(true) {
		// Tidy the group of consumers that died long ago holding nothing.
		_ = s.run(ctx, forgetScript, forgetIdle.Milliseconds()).Err()
	}
	var ds []peonify.Delivery
	var err error
	if ls := s.lim.Load(); ls != nil {
		ds, err = s.pollLimited(ctx, ls, limit, start)
	} else {
		ds, err = s.poll(ctx, limit, start)
	}
	if err != nil {
		// A failed read may have claimed entries whose reply was lost: take
		// them back first next time.
		s.readOwn.Store(true)
		if len(ds) == 0 {
			return nil, err
		}
	}
	if len(ds) < limit {
		s.arm()
	}
	return ds, nil
}

// poll claims up to limit tasks and tracks them: this consumer's own
// entries that this stream does not hold (after a start or a failed read,
// and once per RescueInterval), then entries whose lease ended (once per
// RescueInterval), then new entries. Each poll is one round trip: the
// claims that look at pending entries and the read of new ones run in one
// script (see claim).
//
// The periodic look at its own entries catches reads whose reply was lost
// although no error reached the stream: go-redis retries a command once
// its connection breaks, and the entries the first try claimed would
// otherwise wait for their lease to end. Taking back own entries excludes
// the other polls of this stream, so that it never takes an entry that
// another poll has just read but not tracked yet.
func (s *Stream) poll(ctx context.Context, limit int, start time.Time) ([]peonify.Delivery, error) {
	rescue := false
	if last := s.lastRescue.Load(); start.UnixNano()-last >= int64(s.cfg.RescueInterval) {
		rescue = s.lastRescue.CompareAndSwap(last, start.UnixNano())
	}
	if !rescue && !s.readOwn.Load() {
		s.pollMu.RLock()
		defer s.pollMu.RUnlock()
		ds, err := s.readNew(ctx, nil, limit, start, true)
		s.track(ds)
		return ds, err
	}
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	ds, own, err := s.claim(ctx, rescue, limit, start, true)
	if err == nil || len(ds) > 0 {
		s.readOwn.Store(own == limit) // there may be more
	}
	s.track(ds)
	return ds, err
}

// readNew claims new entries, and first moves due scheduled tasks into the
// stream, in one round trip.
func (s *Stream) readNew(ctx context.Context, ds []peonify.Delivery, limit int, start time.Time, retry bool) ([]peonify.Delivery, error) {
	args := &redis.XReadGroupArgs{
		Group:    Group,
		Consumer: s.cfg.Consumer,
		Streams:  s.read,
		Count:    int64(limit - len(ds)),
		Block:    -1,
	}
	var read *redis.XStreamSliceCmd
	pipe := s.client.Pipeline()
	promote := s.promote(ctx, pipe, start)
	if promote != nil {
		read = pipe.XReadGroup(ctx, args)
		_, _ = pipe.Exec(ctx)
	} else {
		read = s.client.XReadGroup(ctx, args)
	}

	promoteErr := s.promoted(ctx, promote)
	streams, err := read.Result()
	switch {
	case errors.Is(err, redis.Nil):
		return ds, promoteErr
	case err != nil && retry && isNoGroup(err):
		if err := s.ensureGroup(ctx); err != nil {
			return ds, err
		}
		return s.readNew(ctx, ds, limit, start, false)
	case err != nil:
		return ds, s.redisError("reading new tasks", err)
	}
	deadline := s.deadline(start)
	for _, st := range streams {
		for _, m := range st.Messages {
			if len(ds) == limit {
				break // never more than asked, whatever the server sent
			}
			e := entryFromMap(m.Values)
			t := e.task(m.ID)
			t.Attempt = e.counted() + 1
			ds = append(ds, peonify.Delivery{Task: t, Token: 1, Deadline: deadline, Ref: m.ID})
		}
	}
	return ds, nil
}

// promoteArgs returns the arguments of promoteScript: it also trims
// expired done and cancelled tasks.
func (s *Stream) promoteArgs() []any {
	return append(s.head[:len(s.head):len(s.head)], promoteLimit,
		s.cfg.ResultRetention.Milliseconds(), max(s.cfg.KeepDead.Milliseconds(), 0))
}

// promote queues, in pipe, the move of due scheduled tasks into the
// stream, if it is time for one (at most every promoteEvery); it returns
// nil otherwise. See promoted for its result.
func (s *Stream) promote(ctx context.Context, pipe redis.Pipeliner, start time.Time) *redis.Cmd {
	if last := s.lastPromote.Load(); start.UnixNano()-last >= int64(promoteEvery) && s.lastPromote.CompareAndSwap(last, start.UnixNano()) {
		return promoteScript.EvalSha(ctx, pipe, s.skeys, s.promoteArgs()...)
	}
	return nil
}

// promoted returns the error of a move of due tasks that promote queued,
// if any, and has the next poll try again after a failure.
func (s *Stream) promoted(ctx context.Context, promote *redis.Cmd) error {
	if promote == nil {
		return nil
	}
	if err := promote.Err(); isNoScript(err) {
		// The server lost its script cache (a restart): load it for
		// the next poll.
		s.lastPromote.Store(0)
		_ = promoteScript.Load(ctx, s.client).Err()
	} else if err != nil {
		s.lastPromote.Store(0)
		return s.redisError("moving due tasks into the stream", err)
	}
	return nil
}

// claim runs pollScript: it takes back this consumer's own entries that
// this stream does not hold, then, with rescue, entries whose lease ended
// (after the undoing of a queue's limit index, see unlimitBatch), then reads
// new entries, up to limit in all, in one round trip with the move of due
// scheduled tasks into the stream. It returns the deliveries and how many
// of them were this consumer's own.
func (s *Stream) claim(ctx context.Context, rescue bool, limit int, start time.Time, retry bool) ([]peonify.Delivery, int, error) {
	minIdle := int64(-1)
	if rescue {
		minIdle = s.cfg.Lease.Milliseconds()
	}
	args := []any{"1", minIdle, limit, "1"}
	s.mu.Lock()
	for id := range s.inflight {
		args = append(args, id)
	}
	s.mu.Unlock()
	args = append(s.head[:len(s.head):len(s.head)], args...)

	pipe := s.client.Pipeline()
	var unlimit *redis.Cmd
	if rescue {
		unlimit = unlimitScript.EvalSha(ctx, pipe, s.skeys, append(s.head[:len(s.head):len(s.head)], unlimitBatch)...)
	}
	promote := s.promote(ctx, pipe, start)
	claim := pollScript.EvalSha(ctx, pipe, s.skeys, args...)
	_, _ = pipe.Exec(ctx)

	if unlimit != nil {
		if err := unlimit.Err(); isNoScript(err) {
			_ = unlimitScript.Load(ctx, s.client).Err() // for the next rescue
		} else {
			s.unlimited(unlimit)
		}
	}
	promoteErr := s.promoted(ctx, promote)
	res, err := claim.Slice()
	if isNoScript(err) {
		res, err = pollScript.Run(ctx, s.client, s.skeys, args...).Slice()
	}
	switch {
	case err != nil && retry && isNoGroup(err):
		if err := s.ensureGroup(ctx); err != nil {
			return nil, 0, err
		}
		return s.claim(ctx, rescue, limit, start, false)
	case err != nil:
		return nil, 0, s.redisError("claiming tasks", err)
	case len(res) == 0:
		return nil, 0, promoteErr
	}
	own, _ := res[0].(int64)
	deadline := s.deadline(start)
	ds := make([]peonify.Delivery, 0, len(res)-1)
	for _, r := range res[1:] {
		triple, _ := r.([]any)
		if len(triple) != 3 {
			continue
		}
		eid, _ := triple[0].(string)
		list, _ := triple[1].([]any)
		count, _ := triple[2].(int64)
		if eid == "" || count <= 0 || len(ds) == limit {
			continue
		}
		e := entryFromList(list)
		t := e.task(eid)
		t.Attempt = e.counted() + int(count)
		ds = append(ds, peonify.Delivery{Task: t, Token: uint64(count), Deadline: deadline, Ref: eid})
	}
	return ds, int(own), promoteErr
}

// deadline is when a claim made at start ends, by this machine's clock: a
// millisecond early, since Redis counts idle time in whole milliseconds.
func (s *Stream) deadline(start time.Time) time.Time {
	return start.Add(s.cfg.Lease - time.Millisecond)
}

// track records deliveries as held by this process, so that taking back
// this consumer's own entries skips them.
func (s *Stream) track(ds []peonify.Delivery) {
	if len(ds) == 0 {
		return
	}
	s.mu.Lock()
	for _, d := range ds {
		s.inflight[d.Ref.(string)] = d.Token
	}
	s.mu.Unlock()
}

// untrack forgets deliveries that were acked or nacked. A delivery of an
// entry that this stream has delivered again since (it rescued its own
// expired lease) is stale: the newer delivery stays tracked.
func (s *Stream) untrack(ds ...peonify.Delivery) {
	s.mu.Lock()
	for _, d := range ds {
		if eid := ref(d); eid != "" && s.inflight[eid] == d.Token {
			delete(s.inflight, eid)
		}
	}
	if len(s.inflight) == 0 && len(ds) > 64 {
		s.inflight = make(map[string]uint64) // give back the memory of a burst
	}
	s.mu.Unlock()
}

// ref returns the entry ID of a delivery from this stream, or "".
func ref(d peonify.Delivery) string {
	if d.Task == nil || d.Token == 0 {
		return ""
	}
	eid, _ := d.Ref.(string)
	if _, _, ok := parseEntryID(eid); !ok {
		return ""
	}
	return eid
}

// Ack completes deliveries in one script run: their entries are acked and
// removed from the stream, those older than every running and undelivered
// entry by XTRIM MINID (whole nodes at once), the others by XDEL. The
// stream is never trimmed by length, which would drop entries that are
// still running or not yet delivered. A delivery whose lease was lost (its entry is no longer this
// consumer's with the same delivery count), or that was already acked, is
// silently ignored.
//
// A delivery with a Result, or of a task in a workflow, is kept as done
// (see Config.ResultRetention) by the same script, which also releases
// the task's dependents whose parents have all finished: they are added
// to the stream, and Wake fires. A stale ack keeps and releases nothing.
//
// With limits (see SetLimits) the entries are deleted one by one, since
// ready entries sit below the group's last delivered ID, and the permits
// the tasks held are freed in the same script: Wake fires, here and, through
// their watchers, in the other processes.
func (s *Stream) Ack(ctx context.Context, ds ...peonify.Delivery) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	if ls := s.lim.Load(); ls != nil {
		return s.ackLimited(ctx, ls, ds)
	}
	eids := make([]string, 0, len(ds))
	var uniques []any
	lo, hi := "", ""
	for _, d := range ds {
		eid := ref(d)
		if eid == "" {
			continue // not a delivery of this stream: there is nothing to ack
		}
		if lo == "" || entryLess(eid, lo) {
			lo = eid
		}
		if hi == "" || entryLess(hi, eid) {
			hi = eid
		}
		eids = append(eids, eid)
		if d.Task.UniqueKey != "" {
			uniques = append(uniques, eid, d.Task.UniqueKey)
		}
	}
	n := len(eids)
	if n == 0 {
		return nil
	}
	args := make([]any, 3+3*n, 3+3*n+len(uniques))
	args[0], args[1], args[2] = lo, hi, n
	i := 0
	var kept []any
	for _, d := range ds {
		if eid := ref(d); eid != "" {
			args[3+i], args[3+n+i], args[3+2*n+i] = eid, d.Token, d.Task.ID
			i++
			kept = keep(kept, i, d)
		}
	}
	args = append(args, uniques...)
	args = append(append(args, kept...), len(kept)/3)
	released, err := s.runDurable(ctx, ackScript, args...).Int()
	// Forgotten only now, so that taking back own entries meanwhile skips
	// them; if the ack failed, that is what brings them back soon.
	s.untrack(ds...)
	if err != nil {
		return s.redisError("acking tasks", err)
	}
	if released > 0 {
		s.signal() // dependents in a workflow are ready
	}
	return nil
}

// keep adds to kept the triple of the ack scripts' kept section (see
// ackKeep) for d, the i-th delivery of the batch, if the store keeps it
// once done: it has a result or belongs to a workflow.
func keep(kept []any, i int, d peonify.Delivery) []any {
	switch {
	case d.Result != nil:
		return append(kept, i, "1", d.Result)
	case d.Task.Workflow != "":
		return append(kept, i, "0", "")
	}
	return kept
}

// Nack hands a delivery back: OutcomeFailed and OutcomeReleased add the
// task again, at the end of the stream or, after opts.Delay, through the
// schedule (Released does not count the attempt); OutcomeDead moves it to
// the dead stream with opts.Reason as its last error, and cancels its
// waiting dependents in a workflow (see Cancel). A nack of a lost lease,
// or of a cancelled task, changes nothing and returns an error wrapping
// peonify.ErrLeaseLost.
// With limits, the task's permits are freed, and a failed or released task
// keeps its place in its key's order, while a dead one releases the key.
func (s *Stream) Nack(ctx context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	if err := streamkit.CheckDelivery(s.closed.Load(), d, "redisstream", "Nack"); err != nil {
		return err
	}
	opts, err := opts.Normalize()
	if err != nil {
		return fmt.Errorf("redisstream: Nack of task %s: %w", d.Task.ID, err)
	}
	outcome := opts.Outcome.String() // failed, released or dead, as the script names them
	eid := ref(d)
	if eid == "" {
		return fmt.Errorf("redisstream: Nack of task %s, which is not a delivery from Poll: %w", d.Task.ID, peonify.ErrLeaseLost)
	}
	defer s.untrack(d)
	delay := int64(0)
	if opts.Delay > 0 {
		delay = max((opts.Delay + time.Millisecond - 1).Milliseconds(), 1)
	}
	keepDead := max(s.cfg.KeepDead.Milliseconds(), 0)
	var cmd *redis.Cmd
	ls := s.lim.Load()
	if ls != nil {
		cmd = s.runDurable(ctx, nackLimitedScript, eid, d.Token, d.Task.ID, outcome, delay,
			opts.Reason, keepDead, d.Task.Type, d.Task.Key, ls.json)
	} else {
		cmd = s.runDurable(ctx, nackScript, eid, d.Token, d.Task.ID, outcome, delay,
			opts.Reason, keepDead)
	}
	n, err := cmd.Int()
	if err != nil {
		return s.redisError("nacking task "+d.Task.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("redisstream: nack of task %s ignored: %w", d.Task.ID, peonify.ErrLeaseLost)
	}
	if ls != nil && ls.holdsPermits(d.Task) {
		s.signal() // a permit is free: a held task may start
	}
	switch {
	case opts.Outcome == peonify.OutcomeDead:
		if d.Task.Workflow != "" {
			s.signal() // dependents that allow failed parents may be ready
		}
	case delay == 0:
		s.signal()
	default:
		s.noteDue(time.Now().Add(time.Duration(delay) * time.Millisecond))
	}
	return nil
}

// Extend renews the lease of d so that it ends lease from now: the entry's
// idle time is reset. A lease longer than Config.Lease is cut to it, since
// Redis keeps one lease per queue. It returns an error wrapping
// peonify.ErrLeaseLost if the task was acked, nacked or claimed again
// since, or one wrapping peonify.ErrCancelled if the task was cancelled
// while this claim ran (see Cancel). With limits, the task's permits are
// held to the new lease end.
func (s *Stream) Extend(ctx context.Context, d peonify.Delivery, lease time.Duration) (peonify.Delivery, error) {
	if err := streamkit.CheckDelivery(s.closed.Load(), d, "redisstream", "Extend"); err != nil {
		return d, err
	}
	eid := ref(d)
	if eid == "" {
		return d, fmt.Errorf("redisstream: Extend of task %s, which is not a delivery from Poll: %w", d.Task.ID, peonify.ErrLeaseLost)
	}
	if lease <= 0 || lease > s.cfg.Lease {
		lease = s.cfg.Lease
	}
	start := time.Now()
	var cmd *redis.Cmd
	if ls := s.lim.Load(); ls != nil {
		cmd = s.run(ctx, extendLimitedScript, eid, d.Token, (s.cfg.Lease - lease).Milliseconds(),
			d.Task.Type, d.Task.Key, ls.json, s.cfg.Lease.Milliseconds(), d.Task.ID)
	} else {
		cmd = s.run(ctx, extendScript, eid, d.Token, (s.cfg.Lease - lease).Milliseconds(), d.Task.ID)
	}
	n, err := cmd.Int()
	if err != nil {
		return d, s.redisError("extending the lease of task "+d.Task.ID, err)
	}
	switch n {
	case 0:
		return d, fmt.Errorf("redisstream: cannot extend task %s: %w", d.Task.ID, peonify.ErrLeaseLost)
	case 2:
		s.untrack(d) // neither acked nor nacked: its entry is gone
		return d, fmt.Errorf("redisstream: cannot extend task %s: %w", d.Task.ID, peonify.ErrCancelled)
	}
	d.Deadline = start.Add(lease - time.Millisecond)
	return d, nil
}

// Close stops the wake-up reader and removes this consumer from the group
// if it holds no entries. It does not close the client. Close is
// idempotent; after it, the stream's methods return peonify.ErrClosed.
func (s *Stream) Close(ctx context.Context) error {
	if s.closed.Swap(true) {
		return nil
	}
	err := s.stopWatching(ctx)
	if werr := s.stopWaiters(ctx); err == nil {
		err = werr
	}
	if s.started.Load() {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		if ferr := s.run(ctx, forgetScript, forgetIdle.Milliseconds()).Err(); ferr != nil {
			s.cfg.Logger.Debug("redisstream: could not remove this consumer from the group", "queue", s.cfg.Queue, "consumer", s.cfg.Consumer, "err", ferr)
		}
		cancel()
	}
	return err
}

// run runs a script with the keys and leading arguments that every
// script gets.
func (s *Stream) run(ctx context.Context, sc *redis.Script, args ...any) *redis.Cmd {
	return sc.Run(ctx, s.client, s.skeys, append(s.head[:len(s.head):len(s.head)], args...)...)
}

// ensureGroup creates the consumer group, and the stream if need be. A new
// group starts at the beginning of the stream, so that tasks added before
// any processor started are delivered.
func (s *Stream) ensureGroup(ctx context.Context) error {
	err := s.client.XGroupCreateMkStream(ctx, s.keys.Stream, Group, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return s.redisError("creating the consumer group", err)
	}
	return nil
}

// signal wakes an idle processor without blocking.
func (s *Stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// arm tells the watcher that the processor may be idle.
func (s *Stream) arm() {
	select {
	case s.armed <- struct{}{}:
	default:
	}
}

// redisError wraps a Redis error with what the stream was doing.
func (s *Stream) redisError(doing string, err error) error {
	return fmt.Errorf("redisstream: %s in queue %q: %w", doing, s.cfg.Queue, err)
}

// isNoGroup reports whether err says the stream or the group is missing.
func isNoGroup(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "NOGROUP") || strings.Contains(err.Error(), "no such key"))
}

// isNoScript reports whether err says the server does not know a script.
func isNoScript(err error) bool {
	return err != nil && strings.Contains(err.Error(), "NOSCRIPT")
}
