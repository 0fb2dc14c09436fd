package redisstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/listing"
	"github.com/redis/go-redis/v9"
)

// inspectPage is how many entries the Inspector reads or changes per round
// trip or script run.
const inspectPage = 500

// retryScript makes dead tasks pending again with a fresh attempt count.
// ARGV[6] is 'all' (retry the first ARGV[7] dead tasks) or 'ids' (retry the
// tasks whose IDs follow). It returns how many it retried.
var retryScript = redis.NewScript(luaPrelude + `
local function revive(did, fields, id)
  local out, uniq = {}, nil
  for i = 1, #fields, 2 do
    local f, v = fields[i], fields[i + 1]
    if f ~= 'attempts' and f ~= 'dead_at' and f ~= 'ord' then
      out[#out + 1] = f
      out[#out + 1] = v
    end
    if f == 'unique_key' then uniq = v end
  end
  redis.call('HSET', tasks, id, redis.call('XADD', stream, '*', unpackAll(out)))
  if uniq and uniq ~= '' then redis.call('SET', uniquePrefix .. uniq, id, 'NX') end
  redis.call('XDEL', dead, did)
end
local n = 0
if ARGV[6] == 'all' then
  for _, e in ipairs(redis.call('XRANGE', dead, '-', '+', 'COUNT', tonumber(ARGV[7]))) do
    revive(e[1], e[2], field(e[2], 'id') or e[1])
    n = n + 1
  end
  return n
end
for i = 7, #ARGV do
  local id = ARGV[i]
  local loc = redis.call('HGET', tasks, id)
  if loc and string.sub(loc, 1, 1) == 'd' then
    local did = string.sub(loc, 2)
    local e = redis.call('XRANGE', dead, did, did)
    if #e > 0 then
      revive(did, e[1][2], id)
      n = n + 1
    end
  end
end
return n
`)

// deleteScript removes the tasks whose IDs are ARGV[6..] unless they are
// running, cancels their waiting dependents in a workflow (see WF.failed),
// and returns how many it removed.
var deleteScript = redis.NewScript(luaPrelude + `
local n = 0
for i = 6, #ARGV do
  local id = ARGV[i]
  local loc = redis.call('HGET', tasks, id)
  if not loc and string.match(id, '^%d+%-%d+$') then loc = id end
  if loc == 's' then
    local h = schedPrefix .. id
    local r = redis.call('HMGET', h, 'unique_key', 'workflow')
    if redis.call('DEL', h) + redis.call('ZREM', schedule, id) > 0 then
      n = n + 1
      release(r[1], id)
    end
    forget(id, loc)
    WF.removed(id, r[2])
  elseif loc == 'w' or loc == 'c' or loc == 'k' then
    n = n + WF.drop(id, loc)
  elseif loc and string.sub(loc, 1, 1) == 'd' then
    local did = string.sub(loc, 2)
    local e = redis.call('XRANGE', dead, did, did)
    n = n + redis.call('XDEL', dead, did)
    forget(id, loc)
    if #e > 0 then WF.removed(id, field(e[1][2], 'workflow')) end
  elseif loc and claimOf(loc) == nil then
    local e = redis.call('XRANGE', stream, loc, loc)
    if #e > 0 and (field(e[1][2], 'id') or loc) == id then
      redis.call('XDEL', stream, loc)
      release(field(e[1][2], 'unique_key'), id)
      n = n + 1
      WF.removed(id, field(e[1][2], 'workflow'))
    end
    forget(id, loc)
  end
end
if n > 0 then limitsChanged() end
WF.announce()
return n
`)

// purgeScript removes up to ARGV[8] tasks in state ARGV[6] ('pending',
// 'scheduled', 'dead', 'waiting', 'cancelled' or 'done'), starting after
// entry ID ARGV[7] for pending, and cancels their waiting dependents in a
// workflow. It returns {removed, entries looked at, last entry ID looked
// at}.
var purgeScript = redis.NewScript(luaPrelude + `
local state, after, count = ARGV[6], ARGV[7], tonumber(ARGV[8])
local n, seen, last = 0, 0, after
if state == 'pending' then
  for _, e in ipairs(redis.call('XRANGE', stream, '(' .. after, '+', 'COUNT', count)) do
    seen, last = seen + 1, e[1]
    if claimOf(e[1]) == nil then
      local id = field(e[2], 'id') or e[1]
      redis.call('XDEL', stream, e[1])
      forget(id, e[1])
      release(field(e[2], 'unique_key'), id)
      WF.removed(id, field(e[2], 'workflow'))
      n = n + 1
    end
  end
elseif state == 'scheduled' then
  for _, id in ipairs(redis.call('ZRANGE', schedule, 0, count - 1)) do
    seen = seen + 1
    local h = schedPrefix .. id
    local r = redis.call('HMGET', h, 'unique_key', 'workflow')
    release(r[1], id)
    redis.call('DEL', h)
    redis.call('ZREM', schedule, id)
    forget(id, 's')
    WF.removed(id, r[2])
    n = n + 1
  end
elseif state == 'dead' then
  for _, e in ipairs(redis.call('XRANGE', dead, '-', '+', 'COUNT', count)) do
    seen, last = seen + 1, e[1]
    redis.call('XDEL', dead, e[1])
    local id = field(e[2], 'id') or e[1]
    forget(id, 'd' .. e[1])
    WF.removed(id, field(e[2], 'workflow'))
    n = n + 1
  end
else
  local key, loc = WF.waiting, 'w'
  if state == 'cancelled' then key, loc = WF.cancelled, 'c' elseif state == 'done' then key, loc = WF.done, 'k' end
  for _, id in ipairs(redis.call('ZRANGE', key, 0, count - 1)) do
    seen = seen + 1
    WF.drop(id, loc)
    redis.call('ZREM', key, id)
    n = n + 1
  end
end
if n > 0 then limitsChanged() end
WF.announce()
return {n, seen, last}
`)

// entryIDRE matches a stream entry ID, which is the task ID of an entry
// added without an id field.
var entryIDRE = regexp.MustCompile(`^[0-9]+-[0-9]+$`)

// Counts returns the number of tasks in each state: pending is the
// stream's length less the entries the group has delivered and not acked
// (running); scheduled counts the schedule (due tasks not yet moved into
// the stream included); dead the dead stream; waiting, cancelled and done
// their sorted sets (done: those kept for Config.ResultRetention; other
// done tasks are not kept).
func (s *Stream) Counts(ctx context.Context) (map[peonify.State]int, error) {
	if s.closed.Load() {
		return nil, peonify.ErrClosed
	}
	pipe := s.client.Pipeline()
	length := pipe.XLen(ctx, s.keys.Stream)
	groups := pipe.XInfoGroups(ctx, s.keys.Stream)
	scheduled := pipe.ZCard(ctx, s.keys.Schedule)
	dead := pipe.XLen(ctx, s.keys.Dead)
	waiting := pipe.ZCard(ctx, s.keys.Waiting)
	cancelled := pipe.ZCard(ctx, s.keys.Cancelled)
	done := pipe.ZCount(ctx, s.keys.Done, strconv.FormatInt(time.Now().Add(-s.cfg.ResultRetention).UnixMilli(), 10), "+inf")
	_, _ = pipe.Exec(ctx)
	for _, c := range []redis.Cmder{length, scheduled, dead, waiting, cancelled, done} {
		if err := c.Err(); err != nil {
			return nil, s.redisError("counting tasks", err)
		}
	}
	running := int64(0)
	gs, err := groups.Result()
	if err != nil && !isNoGroup(err) {
		return nil, s.redisError("counting running tasks", err)
	}
	for _, g := range gs {
		if g.Name == Group {
			running = g.Pending
		}
	}
	return map[peonify.State]int{
		peonify.StatePending:   int(max(length.Val()-running, 0)),
		peonify.StateRunning:   int(running),
		peonify.StateScheduled: int(scheduled.Val()),
		peonify.StateDead:      int(dead.Val()),
		peonify.StateWaiting:   int(waiting.Val()),
		peonify.StateCancelled: int(cancelled.Val()),
		peonify.StateDone:      int(done.Val()),
	}, nil
}

// Get returns one task, or an error wrapping peonify.ErrNotFound: in any
// state, with the result of a done task kept for Config.ResultRetention
// and the last progress it reported.
func (s *Stream) Get(ctx context.Context, id string) (peonify.TaskInfo, error) {
	if s.closed.Load() {
		return peonify.TaskInfo{}, peonify.ErrClosed
	}
	infos, err := s.infos(ctx, []string{id})
	if err != nil {
		return peonify.TaskInfo{}, err
	}
	if len(infos) == 0 {
		return peonify.TaskInfo{}, fmt.Errorf("redisstream: task %q in queue %q: %w", id, s.cfg.Queue, peonify.ErrNotFound)
	}
	return infos[0], nil
}

// infos reads tasks by ID, ordered by ID. Unknown IDs, and done tasks
// whose retention ended, are left out. A task that moved between the two
// round trips of a read (claimed, acked, promoted) is read again, five
// times at most: a task moves when it is claimed, handed back or acked,
// so it is read unless it moves six times within as many reads.
func (s *Stream) infos(ctx context.Context, ids []string) ([]peonify.TaskInfo, error) {
	out, moved, err := s.readInfos(ctx, ids)
	for try := 0; err == nil && len(moved) > 0 && try < 5; try++ {
		var more []peonify.TaskInfo
		more, moved, err = s.readInfos(ctx, moved)
		out = append(out, more...)
	}
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b peonify.TaskInfo) int { return strings.Compare(a.Task.ID, b.Task.ID) })
	return out, nil
}

// readInfos reads tasks by ID, in two round trips: their locations, then
// them and their progress. It returns the tasks it read, and the IDs of
// those that were located but gone from there by the second round trip.
func (s *Stream) readInfos(ctx context.Context, ids []string) (infos []peonify.TaskInfo, moved []string, err error) {
	if len(ids) == 0 {
		return nil, nil, nil
	}
	locs, err := s.client.HMGet(ctx, s.keys.Tasks, ids...).Result()
	if err != nil {
		return nil, nil, s.redisError("looking up tasks", err)
	}
	type read struct {
		id, loc string
		hash    *redis.MapStringStringCmd
		score   *redis.FloatCmd
		rng     *redis.XMessageSliceCmd
		pend    *redis.XPendingExtCmd
	}
	reads := make([]read, 0, len(ids))
	pipe := s.client.Pipeline()
	for i, id := range ids {
		loc, _ := locs[i].(string)
		if loc == "" {
			if !entryIDRE.MatchString(id) {
				continue
			}
			loc = id // a task added without an id field
		}
		r := read{id: id, loc: loc}
		switch {
		case loc == "s":
			r.hash = pipe.HGetAll(ctx, s.keys.Scheduled+id)
			r.score = pipe.ZScore(ctx, s.keys.Schedule, id)
		case loc == "w" || loc == "c" || loc == "k":
			r.hash = pipe.HGetAll(ctx, s.keys.Task+id)
		case loc[0] == 'd':
			r.rng = pipe.XRange(ctx, s.keys.Dead, loc[1:], loc[1:])
		default:
			r.rng = pipe.XRange(ctx, s.keys.Stream, loc, loc)
			r.pend = pipe.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: s.keys.Stream, Group: Group, Start: loc, End: loc, Count: 1})
		}
		reads = append(reads, r)
	}
	if len(reads) == 0 {
		return nil, nil, nil
	}
	progIDs := make([]string, len(reads))
	for i, r := range reads {
		progIDs[i] = r.id
	}
	prog := pipe.HMGet(ctx, s.keys.Progress, progIDs...)
	_, _ = pipe.Exec(ctx)
	if err := prog.Err(); err != nil {
		return nil, nil, s.redisError("reading the progress of tasks", err)
	}
	now := time.Now()
	infos = make([]peonify.TaskInfo, 0, len(reads))
	for i, r := range reads {
		var info peonify.TaskInfo
		ok := false
		switch {
		case r.loc == "s":
			h, err := r.hash.Result()
			if err != nil {
				return nil, nil, s.redisError("reading scheduled task "+r.id, err)
			}
			score, err := r.score.Result()
			if len(h) == 0 || errors.Is(err, redis.Nil) {
				moved = append(moved, r.id) // promoted or deleted meanwhile
				continue
			}
			if err != nil {
				return nil, nil, s.redisError("reading the schedule of task "+r.id, err)
			}
			info, ok = scheduledInfo(r.id, h, score), true
		case r.hash != nil:
			h, err := r.hash.Result()
			if err != nil {
				return nil, nil, s.redisError("reading task "+r.id, err)
			}
			info, ok = s.heldInfo(r.id, r.loc, h, now)
		case r.pend == nil:
			msgs, err := r.rng.Result()
			if err != nil {
				return nil, nil, s.redisError("reading dead task entry "+r.loc[1:], err)
			}
			if len(msgs) == 1 {
				info, ok = deadInfo(r.loc[1:], entryFromMap(msgs[0].Values)), true
			}
		default:
			msgs, err := r.rng.Result()
			if err != nil {
				return nil, nil, s.redisError("reading task entry "+r.loc, err)
			}
			ps, err := r.pend.Result()
			if err != nil && !isNoGroup(err) {
				return nil, nil, s.redisError("reading the claim of task entry "+r.loc, err)
			}
			if len(msgs) == 1 {
				var p *redis.XPendingExt
				if len(ps) == 1 {
					p = &ps[0]
				}
				info, ok = s.info(r.loc, entryFromMap(msgs[0].Values), p, now), true
			}
		}
		if !ok || info.Task.ID != r.id {
			if r.loc != r.id { // located by its ID, and gone from there
				moved = append(moved, r.id)
			}
			continue
		}
		if v, _ := prog.Val()[i].(string); v != "" {
			info.Progress = parseProgress(v)
		}
		infos = append(infos, info)
	}
	return infos, moved, nil
}

// heldInfo describes a task held in its task hash h: waiting ('w'),
// cancelled ('c') or done and kept ('k'). It reports false for a done
// task whose retention ended, or a hash that is gone.
func (s *Stream) heldInfo(id, loc string, h map[string]string, now time.Time) (peonify.TaskInfo, bool) {
	if len(h) == 0 {
		return peonify.TaskInfo{}, false
	}
	var e entry
	for k, v := range h {
		e.set(k, v)
	}
	t := e.task(id)
	info := peonify.TaskInfo{Attempts: e.counted(), LastError: e.lastError}
	switch loc {
	case "w":
		info.State = peonify.StateWaiting
		info.UpdatedAt = t.EnqueuedAt
	case "c":
		info.State = peonify.StateCancelled
		info.UpdatedAt, _ = parseMs(h["cancelled_at"])
	default:
		info.State = peonify.StateDone
		info.UpdatedAt, _ = parseMs(h["done_at"])
		if info.UpdatedAt.Add(s.cfg.ResultRetention).Before(now) {
			return peonify.TaskInfo{}, false // expired, not trimmed yet
		}
		if r, ok := h["result"]; ok {
			info.Result = []byte(r)
		}
	}
	t.Attempt = info.Attempts
	info.Task = *t
	return info, true
}

// parseProgress reads the progress of a task as the progress hash holds
// it: "fraction updated-ms message".
func parseProgress(v string) peonify.Progress {
	var p peonify.Progress
	f, rest, _ := strings.Cut(v, " ")
	ms, msg, _ := strings.Cut(rest, " ")
	p.Fraction, _ = strconv.ParseFloat(f, 64)
	p.UpdatedAt, _ = parseMs(ms)
	p.Message = msg
	return p
}

// formatProgress is the inverse of parseProgress.
func formatProgress(p peonify.Progress) string {
	return strconv.FormatFloat(p.Fraction, 'g', -1, 64) + " " + strconv.FormatInt(p.UpdatedAt.UnixMilli(), 10) + " " + p.Message
}

// info describes a stream entry; p is its claim if it is running.
func (s *Stream) info(eid string, e entry, p *redis.XPendingExt, now time.Time) peonify.TaskInfo {
	t := e.task(eid)
	info := peonify.TaskInfo{State: peonify.StatePending, Attempts: e.counted(), LastError: e.lastError}
	if ms, _, ok := parseEntryID(eid); ok {
		info.UpdatedAt = time.UnixMilli(int64(ms))
	}
	if p != nil {
		info.State = peonify.StateRunning
		info.Attempts += int(p.RetryCount)
		info.UpdatedAt = now.Add(-p.Idle)
		info.LeaseUntil = info.UpdatedAt.Add(s.cfg.Lease)
		t.Attempt = info.Attempts
	}
	info.Task = *t
	return info
}

// deadInfo describes entry did of the dead stream.
func deadInfo(did string, e entry) peonify.TaskInfo {
	t := e.task(did)
	info := peonify.TaskInfo{State: peonify.StateDead, Attempts: e.counted(), LastError: e.lastError}
	if at, ok := parseMs(e.deadAt); ok {
		info.UpdatedAt = at
	}
	t.Attempt = info.Attempts
	info.Task = *t
	return info
}

// scheduledInfos reads scheduled tasks by ID, skipping those gone or not of
// type typ (when set).
func (s *Stream) scheduledInfos(ctx context.Context, ids []string, typ string) ([]peonify.TaskInfo, error) {
	pipe := s.client.Pipeline()
	hashes := make([]*redis.MapStringStringCmd, len(ids))
	scores := make([]*redis.FloatCmd, len(ids))
	for i, id := range ids {
		hashes[i] = pipe.HGetAll(ctx, s.keys.Scheduled+id)
		scores[i] = pipe.ZScore(ctx, s.keys.Schedule, id)
	}
	_, _ = pipe.Exec(ctx)
	infos := make([]peonify.TaskInfo, 0, len(ids))
	for i, id := range ids {
		h, err := hashes[i].Result()
		if err != nil {
			return nil, s.redisError("reading scheduled task "+id, err)
		}
		score, err := scores[i].Result()
		if len(h) == 0 || errors.Is(err, redis.Nil) {
			continue // promoted or deleted meanwhile
		}
		if err != nil {
			return nil, s.redisError("reading the schedule of task "+id, err)
		}
		if typ != "" && h[fieldType] != typ {
			continue
		}
		infos = append(infos, scheduledInfo(id, h, score))
	}
	return infos, nil
}

// scheduledInfo describes scheduled task id, of fields h, due at score.
func scheduledInfo(id string, h map[string]string, score float64) peonify.TaskInfo {
	var e entry
	for k, v := range h {
		e.set(k, v)
	}
	t := e.task(id)
	t.RunAt = time.UnixMilli(int64(score))
	return peonify.TaskInfo{Task: *t, State: peonify.StateScheduled, Attempts: e.counted(),
		LastError: e.lastError, UpdatedAt: t.EnqueuedAt}
}

// List returns tasks in opts.State ordered by ID. Redis keeps no index by
// task ID, so listing pending or dead tasks reads the whole stream, and
// listing scheduled, waiting, cancelled or done tasks the IDs of the whole
// sorted set: fine for an operator, not for a hot path.
func (s *Stream) List(ctx context.Context, opts peonify.ListOptions) ([]peonify.TaskInfo, error) {
	if s.closed.Load() {
		return nil, peonify.ErrClosed
	}
	opts, err := opts.Normalize()
	if err != nil {
		return nil, fmt.Errorf("redisstream: %w", err)
	}
	page := listing.Infos(opts)
	keep := page.Add
	if opts.Key != "" {
		keep = func(info peonify.TaskInfo) {
			if info.Task.Key == opts.Key {
				page.Add(info)
			}
		}
	}
	switch opts.State {
	case peonify.StatePending, peonify.StateRunning:
		claims, err := s.claims(ctx)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		if opts.State == peonify.StateRunning {
			if err := s.listRunning(ctx, claims, now, keep); err != nil {
				return nil, err
			}
			break
		}
		err = s.scan(ctx, s.keys.Stream, func(eid string, e entry) {
			if _, running := claims[eid]; !running {
				keep(s.info(eid, e, nil, now))
			}
		})
		if err != nil {
			return nil, err
		}
	case peonify.StateScheduled:
		ids, err := s.client.ZRange(ctx, s.keys.Schedule, 0, -1).Result()
		if err != nil {
			return nil, s.redisError("listing scheduled tasks", err)
		}
		ids = slices.DeleteFunc(ids, func(id string) bool { return id <= opts.After })
		slices.Sort(ids)
		for chunk := range slices.Chunk(ids, inspectPage) {
			infos, err := s.scheduledInfos(ctx, chunk, opts.Type)
			if err != nil {
				return nil, err
			}
			for _, info := range infos {
				keep(info)
			}
			if page.Full() {
				break
			}
		}
	case peonify.StateDead:
		err := s.scan(ctx, s.keys.Dead, func(did string, e entry) { keep(deadInfo(did, e)) })
		if err != nil {
			return nil, err
		}
	case peonify.StateDone, peonify.StateWaiting, peonify.StateCancelled:
		key := map[peonify.State]string{peonify.StateDone: s.keys.Done, peonify.StateWaiting: s.keys.Waiting, peonify.StateCancelled: s.keys.Cancelled}[opts.State]
		ids, err := s.client.ZRange(ctx, key, 0, -1).Result()
		if err != nil {
			return nil, s.redisError("listing "+string(opts.State)+" tasks", err)
		}
		ids = slices.DeleteFunc(ids, func(id string) bool { return id <= opts.After })
		slices.Sort(ids)
		for chunk := range slices.Chunk(ids, inspectPage) {
			infos, err := s.infos(ctx, chunk)
			if err != nil {
				return nil, err
			}
			for _, info := range infos {
				if info.State == opts.State {
					keep(info)
				}
			}
			if page.Full() {
				break
			}
		}
	default:
		return nil, fmt.Errorf("redisstream: List of unknown state %q: use one of %v", opts.State, peonify.States)
	}
	return page.Items(), nil
}

// claims returns the group's pending entries: the running tasks.
func (s *Stream) claims(ctx context.Context) (map[string]redis.XPendingExt, error) {
	claims := make(map[string]redis.XPendingExt)
	start := "-"
	for {
		ps, err := s.client.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: s.keys.Stream, Group: Group, Start: start, End: "+", Count: inspectPage}).Result()
		if isNoGroup(err) {
			return claims, nil
		}
		if err != nil {
			return nil, s.redisError("listing running tasks", err)
		}
		for _, p := range ps {
			claims[p.ID] = p
		}
		if len(ps) < inspectPage {
			return claims, nil
		}
		start = "(" + ps[len(ps)-1].ID
	}
}

// listRunning reads the entries of claims.
func (s *Stream) listRunning(ctx context.Context, claims map[string]redis.XPendingExt, now time.Time, keep func(peonify.TaskInfo)) error {
	eids := slices.SortedFunc(maps.Keys(claims), func(a, b string) int {
		if entryLess(a, b) {
			return -1
		}
		return 1
	})
	for chunk := range slices.Chunk(eids, inspectPage) {
		pipe := s.client.Pipeline()
		cmds := make([]*redis.XMessageSliceCmd, len(chunk))
		for i, eid := range chunk {
			cmds[i] = pipe.XRange(ctx, s.keys.Stream, eid, eid)
		}
		_, _ = pipe.Exec(ctx)
		for i, cmd := range cmds {
			msgs, err := cmd.Result()
			if err != nil {
				return s.redisError("reading running tasks", err)
			}
			if len(msgs) == 1 {
				p := claims[chunk[i]]
				keep(s.info(chunk[i], entryFromMap(msgs[0].Values), &p, now))
			}
		}
	}
	return nil
}

// scan calls fn for every entry of a stream key, a page at a time.
func (s *Stream) scan(ctx context.Context, key string, fn func(eid string, e entry)) error {
	start := "-"
	for {
		msgs, err := s.client.XRangeN(ctx, key, start, "+", inspectPage).Result()
		if err != nil {
			return s.redisError("reading "+key, err)
		}
		for _, m := range msgs {
			fn(m.ID, entryFromMap(m.Values))
		}
		if len(msgs) < inspectPage {
			return nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// Retry makes dead tasks pending again, at the end of the stream, with a
// fresh attempt count; with no ids it retries every dead task. It returns
// how many it retried.
func (s *Stream) Retry(ctx context.Context, ids ...string) (int, error) {
	if s.closed.Load() {
		return 0, peonify.ErrClosed
	}
	total := 0
	defer func() {
		if total > 0 {
			s.signal()
		}
	}()
	if len(ids) == 0 {
		for {
			n, err := s.run(ctx, retryScript, "all", inspectPage).Int()
			if err != nil {
				return total, s.redisError("retrying dead tasks", err)
			}
			total += n
			if n < inspectPage {
				return total, nil
			}
		}
	}
	for chunk := range slices.Chunk(ids, inspectPage) {
		n, err := s.run(ctx, retryScript, append([]any{"ids"}, strs(chunk)...)...).Int()
		if err != nil {
			return total, s.redisError("retrying dead tasks", err)
		}
		total += n
	}
	return total, nil
}

// Delete removes tasks that are not running: pending, scheduled, dead,
// waiting, cancelled or done (kept). The waiting dependents of a deleted
// task in a workflow are cancelled, as if it had been (unless they allow
// failed parents). It returns how many it removed.
func (s *Stream) Delete(ctx context.Context, ids ...string) (int, error) {
	if s.closed.Load() {
		return 0, peonify.ErrClosed
	}
	total := 0
	defer func() {
		if total > 0 {
			s.signal() // dependents that allow failed parents may be ready
		}
	}()
	for chunk := range slices.Chunk(ids, inspectPage) {
		n, err := s.run(ctx, deleteScript, strs(chunk)...).Int()
		if err != nil {
			return total, s.redisError("deleting tasks", err)
		}
		total += n
	}
	return total, nil
}

// Purge removes every task in state: StatePending (the tasks waiting in
// the stream, not the running ones), StateScheduled, StateDead,
// StateWaiting, StateCancelled or StateDone (the done tasks kept). The
// waiting dependents of a purged task in a workflow are cancelled. It
// returns how many it removed.
func (s *Stream) Purge(ctx context.Context, state peonify.State) (int, error) {
	if s.closed.Load() {
		return 0, peonify.ErrClosed
	}
	switch state {
	case peonify.StatePending, peonify.StateScheduled, peonify.StateDead,
		peonify.StateDone, peonify.StateWaiting, peonify.StateCancelled:
	case peonify.StateRunning:
		return 0, errors.New("redisstream: Purge of running tasks: processors hold their leases; purge pending, scheduled or dead tasks, or let the running ones finish")
	default:
		return 0, fmt.Errorf("redisstream: Purge of unknown state %q: use pending, scheduled, dead, waiting, cancelled or done", state)
	}
	total, after := 0, "0-0"
	defer func() {
		if total > 0 {
			s.signal() // dependents that allow failed parents may be ready
		}
	}()
	for {
		res, err := s.run(ctx, purgeScript, string(state), after, inspectPage).Slice()
		if err != nil || len(res) != 3 {
			return total, s.redisError("purging "+string(state)+" tasks", cmp.Or(err, errors.New("unexpected reply")))
		}
		n, _ := res[0].(int64)
		seen, _ := res[1].(int64)
		after, _ = res[2].(string)
		total += int(n)
		if seen < inspectPage {
			return total, nil
		}
	}
}

// strs turns strings into script arguments.
func strs(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
