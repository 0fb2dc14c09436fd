package redisstream

import (
	"strings"

	"github.com/redis/go-redis/v9"
)

// The server-side scripts. Every script gets the same keys and leading
// arguments (see Stream.run):
//
//	KEYS[1] stream, KEYS[2] schedule, KEYS[3] dead, KEYS[4] tasks,
//	KEYS[5] the prefix of the flow-control keys (see limitscripts.go)
//	ARGV[1] seen key prefix, ARGV[2] unique key prefix, ARGV[3] scheduled hash prefix,
//	ARGV[4] group, ARGV[5] consumer
//
// and its own arguments from ARGV[6]. Keys other than KEYS are built from
// the prefixes; they share the queue's hash tag, so they live in the same
// Redis Cluster slot. Times are the server's clock, in Unix milliseconds.
const luaPrelude = `
local stream, schedule, dead, tasks, lim = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local seenPrefix, uniquePrefix, schedPrefix = ARGV[1], ARGV[2], ARGV[3]
local group, me = ARGV[4], ARGV[5]
-- The keys of results, progress, cancellation and workflows (see Keys),
-- named after the tasks hash: they share its hash tag.
-- They and the functions of workflowLib are in the table WF, so as not to
-- take more of the 200 locals that a Lua chunk may have.
local WF = {}
do
  local base = string.sub(tasks, 1, -6)
  WF.info, WF.deps, WF.wf = base .. 'task:', base .. 'deps:', base .. 'wf:'
  WF.waiting, WF.cancelled, WF.done = base .. 'waiting', base .. 'cancelled', base .. 'done'
  WF.progress, WF.chan = base .. 'progress', base .. 'finished'
end
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- claimOf returns the consumer and delivery count of a pending entry, or
-- nil if the entry is not pending (acked, or the group is gone).
local function claimOf(eid)
  local p = redis.pcall('XPENDING', stream, group, eid, eid, 1)
  if type(p) ~= 'table' or p.err or #p == 0 then return nil end
  return p[1][2], tonumber(p[1][4])
end
-- field returns the value of field name in a flat field list.
local function field(list, name)
  for i = 1, #list, 2 do
    if list[i] == name then return list[i + 1] end
  end
  return nil
end
-- release frees a unique key if task id holds it.
local function release(uniq, id)
  if uniq and uniq ~= '' then
    local k = uniquePrefix .. uniq
    if redis.call('GET', k) == id then redis.call('DEL', k) end
  end
end
-- live reports whether location loc (an entry ID of the stream, 's' for
-- scheduled, 'd' and an entry ID of the dead stream) still holds task id.
local function live(loc, id)
  if loc == 's' then return redis.call('EXISTS', schedPrefix .. id) == 1 end
  if loc == 'w' or loc == 'c' or loc == 'k' then return redis.call('EXISTS', WF.info .. id) == 1 end
  local key, eid = stream, loc
  if string.sub(loc, 1, 1) == 'd' then key, eid = dead, string.sub(loc, 2) end
  return #redis.call('XRANGE', key, eid, eid) > 0
end
-- forget removes task id from the tasks hash if it is still at loc.
local function forget(id, loc)
  if redis.call('HGET', tasks, id) == loc then redis.call('HDEL', tasks, id) end
end
-- idLess orders two entry IDs.
local function idLess(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  return am < bm or am == bm and tonumber(as) < tonumber(bs)
end
-- limitsChanged tells the processors of a queue claimed with limits that
-- tasks were removed behind their back (Inspector Delete or Purge), which
-- may free keys held by an ordered limit: their next claim looks again at
-- every held key, and the watchers wake them.
local function limitsChanged()
  if redis.call('EXISTS', lim .. 'mode') == 1 then
    redis.call('SET', lim .. 'dirty', '1')
    redis.call('XADD', lim .. 'wake', 'MAXLEN', '~', 16, '*', 'w', '1')
  end
end
-- unpackAll spreads a list into arguments.
local function unpackAll(t) return unpack(t, 1, #t) end
-- ended reports whether location loc is that of a finished task: dead
-- ('d' and an entry ID), cancelled ('c') or done and kept ('k'). A
-- waiting task is 'w'.
local function ended(loc)
  return loc == 'c' or loc == 'k' or string.sub(loc, 1, 1) == 'd'
end
` + workflowLib

// enqueueScript stores tasks. ARGV[6] is the dedup window in ms (0: none);
// then, for each task, its ID, unique key (empty for none), due time (0:
// now), field count n and n field-value pairs. It returns, for each task,
// its location (an entry ID or 's') or 0 when it was a duplicate.
var enqueueScript = redis.NewScript(luaPrelude + `
local window = tonumber(ARGV[6])
local now = nowMs()
local out = {}
local i = 7
while i <= #ARGV do
  local id, uniq, due, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local fields = {unpack(ARGV, i + 4, i + 3 + 2 * n)}
  i = i + 4 + 2 * n
  -- A live or dead task holds its ID, unless something outside Peonify
  -- removed it.
  local loc = redis.call('HGET', tasks, id)
  local dup = loc and live(loc, id)
  local uniqKey = nil
  if not dup and uniq ~= '' then
    uniqKey = uniquePrefix .. uniq
    local holder = redis.call('GET', uniqKey)
    if holder then
      local hloc = redis.call('HGET', tasks, holder)
      dup = hloc and not ended(hloc) and live(hloc, holder)
    end
  end
  if not dup and window > 0 then
    dup = not redis.call('SET', seenPrefix .. id, '1', 'NX', 'PX', window)
  end
  if dup then
    out[#out + 1] = 0
  else
    if uniqKey then redis.call('SET', uniqKey, id) end
    if due > now then
      local h = schedPrefix .. id
      redis.call('DEL', h)
      redis.call('HSET', h, unpackAll(fields))
      redis.call('ZADD', schedule, due, id)
      loc = 's'
    else
      loc = redis.call('XADD', stream, '*', unpackAll(fields))
    end
    redis.call('HSET', tasks, id, loc)
    out[#out + 1] = loc
    -- A task enqueued on its own with a workflow label counts in it.
    local wf = field(fields, 'workflow')
    if wf then redis.call('ZADD', WF.wf .. wf, tonumber(field(fields, 'enqueued_at')) or now, id) end
  end
end
return out
`)

// promoteScript moves up to ARGV[6] due tasks from the schedule to the
// stream and returns how many it moved. With ARGV[7] (ResultRetention in
// ms) and ARGV[8] (KeepDead in ms, 0: forever) it also removes up to 100
// expired done tasks and 100 expired cancelled ones (see WF.trim).
var promoteScript = redis.NewScript(luaPrelude + `
local ids = redis.call('ZRANGEBYSCORE', schedule, '-inf', nowMs(), 'LIMIT', 0, tonumber(ARGV[6]))
for _, id in ipairs(ids) do
  local h = schedPrefix .. id
  local fields = redis.call('HGETALL', h)
  redis.call('ZREM', schedule, id)
  if #fields > 0 then
    redis.call('HSET', tasks, id, redis.call('XADD', stream, '*', unpackAll(fields)))
    redis.call('DEL', h)
  end
end
if ARGV[7] then
  WF.trim(tonumber(ARGV[7]), tonumber(ARGV[8]))
  WF.announce()
end
return #ids
`)

// ackChecks is the start of the ack scripts: ARGV[6] and ARGV[7] are the
// lowest and highest entry ID of the batch and ARGV[8] the number of
// deliveries n; then come their n entry IDs, n delivery counts (the fencing
// tokens), n task IDs, and, for the deliveries whose task has a unique key,
// pairs of entry ID and unique key, then the kept section (see ackKeep)
// and its length m. A delivery counts only if this consumer
// still holds its entry with the same delivery count. It leaves the k
// deliveries that count in eids and ids, their positions among the n in
// at, and their unique keys released. The unique-key pairs end at
// ARGV[ackEnd], which the script sets before, with m and keepFrom.
const ackChecks = `
local n = tonumber(ARGV[8])
local mine = {}
local from = ARGV[6]
while true do
  local page = redis.pcall('XPENDING', stream, group, from, ARGV[7], 1000, me)
  if type(page) ~= 'table' or page.err then return 0 end
  for _, p in ipairs(page) do mine[p[1]] = tonumber(p[4]) end
  if #page < 1000 then break end
  from = '(' .. page[#page][1]
end
local eids, ids, at, done, k = {}, {}, {}, {}, 0
for i = 9, 8 + n do
  local eid = ARGV[i]
  if not done[eid] and mine[eid] == tonumber(ARGV[i + n]) then
    k = k + 1
    eids[k] = eid
    ids[k] = ARGV[i + 2 * n]
    at[k] = i - 8
    done[eid] = ids[k]
  end
end
for i = 9 + 3 * n, ackEnd, 2 do
  if done[ARGV[i]] then release(ARGV[i + 1], done[ARGV[i]]) end
end
`

// ackScript completes deliveries (see ackChecks for its arguments),
// keeps those with a result or a workflow (see ackKeep) and releases
// their dependents. It returns how many tasks it added to the stream.
var ackScript = redis.NewScript(luaPrelude + `
local m = tonumber(ARGV[#ARGV])
local keepFrom = #ARGV - 3 * m
local ackEnd = keepFrom - 1
` + ackChecks + ackKeep + `
for i = 1, k, 1000 do
  local j = math.min(i + 999, k)
  redis.call('XACK', stream, group, unpack(eids, i, j))
  redis.call('HDEL', tasks, unpack(ids, i, j))
end
if k == 0 then return 0 end
` + ackAfter + `
if redis.call('EXISTS', lim .. 'mode') == 1 then
  -- The queue has been claimed with limits: entries below the group's
  -- last delivered ID may be ready, not acked, so nothing is trimmed.
  for i = 1, k, 1000 do
    redis.call('XDEL', stream, unpack(eids, i, math.min(i + 999, k)))
  end
  return WF.released
end
-- Delete the acked entries. Every entry older than both the oldest
-- pending one and the first not yet delivered is acked: trimming them
-- by MINID drops whole nodes of the stream at once, far cheaper than
-- XDEL of each. Entries acked ahead of an older running one are
-- deleted one by one.
local keep = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  if field(g, 'name') == group then
    local ms, seq = string.match(field(g, 'last-delivered-id'), '^(%d+)-(%d+)$')
    keep = ms .. '-' .. (tonumber(seq) + 1)
  end
end
local oldest = redis.call('XPENDING', stream, group)[2]
if oldest and (not keep or idLess(oldest, keep)) then keep = oldest end
if keep then redis.call('XTRIM', stream, 'MINID', keep) end
local rest, r = {}, 0
for i = 1, k do
  if not keep or not idLess(eids[i], keep) then
    r = r + 1
    rest[r] = eids[i]
  end
end
for i = 1, r, 1000 do
  redis.call('XDEL', stream, unpack(rest, i, math.min(i + 999, r)))
end
return WF.released
`)

// nackScript hands a delivery back. ARGV[6..]: entry ID, delivery count,
// task ID, outcome ('failed', 'released' or 'dead'), delay in ms, reason,
// KeepDead in ms (0: forever). It returns 1, or 0 if the claim is no
// longer this consumer's with that delivery count.
var nackScript = redis.NewScript(luaPrelude + nackBody(nil))

// nackBody returns the body of a nack script with the Lua of hooks
// spliced in at --[[name]]: "gone" (the entry was deleted meanwhile),
// "skip" (a condition on field f: more fields to drop from the entry),
// "fields" (the fields of the entry to add again are in fields) and "done"
// (the task has moved).
func nackBody(hooks map[string]string) string {
	body := `
local eid, token, id, outcome = ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9]
local delay, reason, keepDead = tonumber(ARGV[10]), ARGV[11], tonumber(ARGV[12])
local owner, count = claimOf(eid)
if owner ~= me or count ~= token then return 0 end
local e = redis.call('XRANGE', stream, eid, eid)
redis.call('XACK', stream, group, eid)
redis.call('XDEL', stream, eid)
if #e == 0 then
  forget(id, eid)
  --[[gone]]
  return 1
end
local old = e[1][2]
local fields, attempts, lastErr, uniq, hasID = {}, 0, nil, nil, false
for i = 1, #old, 2 do
  local f, v = old[i], old[i + 1]
  if f == 'attempts' then attempts = tonumber(v) or 0
  elseif f == 'last_error' then lastErr = v
  elseif f ~= 'dead_at' --[[skip]] then
    if f == 'id' then hasID = true elseif f == 'unique_key' then uniq = v end
    fields[#fields + 1] = f
    fields[#fields + 1] = v
  end
end
if not hasID then
  fields[#fields + 1] = 'id'
  fields[#fields + 1] = id
end
if outcome == 'released' then
  attempts = attempts + token - 1
else
  attempts = attempts + token
  if reason ~= '' then lastErr = reason end
end
fields[#fields + 1] = 'attempts'
fields[#fields + 1] = tostring(attempts)
if lastErr then
  fields[#fields + 1] = 'last_error'
  fields[#fields + 1] = lastErr
end
--[[fields]]
local now = nowMs()
if outcome == 'dead' then
  if keepDead > 0 then
    -- Drop dead tasks older than KeepDead, a few at a time.
    local cutoff = tostring(now - keepDead)
    for _, old in ipairs(redis.call('XRANGE', dead, '-', '(' .. cutoff, 'COUNT', 100)) do
      local oid = field(old[2], 'id') or old[1]
      forget(oid, 'd' .. old[1])
      redis.call('XDEL', dead, old[1])
      WF.removed(oid, field(old[2], 'workflow'))
    end
  end
  fields[#fields + 1] = 'dead_at'
  fields[#fields + 1] = tostring(now)
  redis.call('HSET', tasks, id, 'd' .. redis.call('XADD', dead, '*', unpackAll(fields)))
  release(uniq, id)
  -- Its dependents in a workflow are cancelled (see WF.failed).
  WF.finished[#WF.finished + 1] = id
  if redis.call('EXISTS', WF.deps .. id) == 1 then WF.failed(id, 'dead', lastErr or '') end
  WF.announce()
elseif delay > 0 then
  local h = schedPrefix .. id
  redis.call('DEL', h)
  redis.call('HSET', h, unpackAll(fields))
  -- A millisecond late rather than early: now is rounded down.
  redis.call('ZADD', schedule, now + delay + 1, id)
  redis.call('HSET', tasks, id, 's')
else
  redis.call('HSET', tasks, id, redis.call('XADD', stream, '*', unpackAll(fields)))
end
--[[done]]
return 1
`
	for _, name := range []string{"gone", "skip", "fields", "done"} {
		body = strings.Replace(body, "--[["+name+"]]", hooks[name], 1)
	}
	return body
}

// extendScript renews a lease: ARGV[6..] entry ID, delivery count, the
// idle time in ms to leave on the entry, and the task ID. It returns 1, or
// 0 if the claim is no longer this consumer's with that delivery count,
// or 2 if it was cancelled.
var extendScript = redis.NewScript(luaPrelude + `
local eid = ARGV[6]
local owner, count = claimOf(eid)
if owner ~= me or count ~= tonumber(ARGV[7]) then
  if WF.cancelledClaim(ARGV[9], eid) then return 2 end
  return 0
end
redis.call('XCLAIM', stream, group, me, 0, eid, 'IDLE', tonumber(ARGV[8]), 'JUSTID')
return 1
`)

// pollScript claims up to ARGV[8] entries for this consumer in one run,
// in this order: with ARGV[6] = '1', this consumer's own pending entries,
// except those listed from ARGV[10] on (the ones this process holds);
// with ARGV[7] not negative, entries of any consumer idle for at least
// ARGV[7] ms (expired leases); with ARGV[9] = '1', new entries, as
// XREADGROUP reads them. It returns how many of its own entries it took
// back, then {entry ID, fields, delivery count} triples. Pending entries
// deleted from the stream are dropped from the group's pending list. A
// failed read of new entries returns its error, unless entries were
// claimed before it (they would be taken back as this consumer's own).
var pollScript = redis.NewScript(luaPrelude + `
local own, minIdle, want, readNew = ARGV[6] == '1', tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9] == '1'
local skip = {}
for i = 10, #ARGV do skip[ARGV[i]] = true end
local out, n = {0}, 0
local function claim(mode, idle)
  local from = '-'
  while n < want do
    local page
    if mode == 'own' then
      page = redis.pcall('XPENDING', stream, group, from, '+', 1000, me)
    else
      page = redis.pcall('XPENDING', stream, group, 'IDLE', idle, from, '+', 1000)
    end
    if type(page) ~= 'table' or page.err then return end
    for _, p in ipairs(page) do
      local eid, count = p[1], tonumber(p[4])
      if n < want and not (mode == 'own' and skip[eid]) then
        local c = redis.call('XCLAIM', stream, group, me, idle, eid, 'RETRYCOUNT', count + 1)
        if #c > 0 and c[1] and c[1][2] then
          n = n + 1
          out[n + 1] = {eid, c[1][2], count + 1}
        else
          redis.call('XACK', stream, group, eid)
        end
      end
    end
    if #page < 1000 then break end
    from = '(' .. page[#page][1]
  end
end
if own then
  claim('own', 0)
  out[1] = n
end
if minIdle >= 0 then claim('idle', minIdle) end
if readNew and n < want then
  local r = redis.pcall('XREADGROUP', 'GROUP', group, me, 'COUNT', want - n, 'STREAMS', stream, '>')
  if type(r) == 'table' and r.err then
    if n == 0 then return r end
  elseif r then
    for _, e in ipairs(r[1][2]) do
      n = n + 1
      out[n + 1] = {e[1], e[2], 1}
    end
  end
end
return out
`)

// forgetScript deletes, from the group, this consumer if it holds no
// entries and other consumers that hold none and were idle for more than
// ARGV[6] ms: processors that stopped or died. It returns how many it
// deleted.
var forgetScript = redis.NewScript(luaPrelude + `
local cs = redis.pcall('XINFO', 'CONSUMERS', stream, group)
if type(cs) ~= 'table' or cs.err then return 0 end
local n = 0
for _, c in ipairs(cs) do
  local name, pending, idle = field(c, 'name'), tonumber(field(c, 'pending')), tonumber(field(c, 'idle'))
  if pending == 0 and (name == me or idle > tonumber(ARGV[6])) then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, name)
    n = n + 1
  end
end
return n
`)
