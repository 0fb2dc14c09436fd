package redisstream

import "github.com/redis/go-redis/v9"

// The scripts of results, progress, cancellation and workflows. A task
// that is neither in the stream, nor scheduled, nor dead keeps its entry
// fields in a hash of its own (Keys.Task + ID), where the tasks hash
// says:
//
//	w  waiting for its parents: the hash has waiting_on, the number of
//	   its parents that have not finished, and due, when it may run (ms,
//	   0: at once); Keys.Waiting has it
//	c  cancelled: last_error is the reason, cancelled_at when, ceid the
//	   entry ID of the claim that was running, if one was; Keys.Cancelled
//	   has it
//	k  done and kept for Config.ResultRetention: result (if the handler
//	   set one), done_at, attempts; Keys.Done has it
//
// Keys.Dependents + ID is the set of the waiting tasks that wait for a
// task; a task's finish empties it: done, it decrements their waiting_on
// and moves those at 0 into the stream (or the schedule); dead, cancelled
// or deleted, it cancels them (and theirs, iteratively), or counts as
// finished for those that allow failed parents.

// workflowLib is the Lua of the scripts that finish, cancel or remove
// tasks, appended to luaPrelude. Its functions are in the table WF (see
// luaPrelude). WF.MAXREASON is peonify.MaxReasonLen (TestMaxReasonLen).
const workflowLib = `
WF.MAXREASON = 8192
-- META are the fields of a task hash that are not entry fields.
WF.META = {waiting_on = true, due = true, result = true, done_at = true, cancelled_at = true, ceid = true}
-- finished collects the IDs of tasks that finished, for announce;
-- released counts the tasks added to the stream, for the caller's Wake.
WF.finished, WF.released = {}, 0
function WF.now()
  if not WF.t then WF.t = nowMs() end
  return WF.t
end
-- announce publishes the IDs of the tasks that finished, one per line,
-- for Wait.
function WF.announce()
  if #WF.finished > 0 then
    redis.call('PUBLISH', WF.chan, table.concat(WF.finished, '\n'))
    WF.finished = {}
  end
end
-- cut cuts a reason to MAXREASON bytes, not inside a UTF-8 character.
function WF.cut(s)
  if #s <= WF.MAXREASON then return s end
  local i = WF.MAXREASON + 1
  while i > 1 do
    local b = string.byte(s, i)
    if b < 128 or b >= 192 then break end
    i = i - 1
  end
  return string.sub(s, 1, i - 1)
end
-- place adds task id, given by its entry fields, to the stream, or to
-- the schedule if due (ms) is later than now, and returns its location.
function WF.place(id, fields, due)
  local loc
  if due and due > WF.now() then
    local h = schedPrefix .. id
    redis.call('DEL', h)
    redis.call('HSET', h, unpackAll(fields))
    redis.call('ZADD', schedule, due, id)
    loc = 's'
  else
    loc = redis.call('XADD', stream, '*', unpackAll(fields))
    WF.released = WF.released + 1
  end
  redis.call('HSET', tasks, id, loc)
  return loc
end
-- entryOf splits the fields of a task hash into its entry fields and its
-- due time.
function WF.entryOf(all)
  local fields, due = {}, 0
  for i = 1, #all, 2 do
    local f = all[i]
    if f == 'due' then
      due = tonumber(all[i + 1]) or 0
    elseif not WF.META[f] then
      fields[#fields + 1] = f
      fields[#fields + 1] = all[i + 1]
    end
  end
  return fields, due
end
-- release makes waiting task id pending (or scheduled).
function WF.release(id)
  local h = WF.info .. id
  local fields, due = WF.entryOf(redis.call('HGETALL', h))
  redis.call('DEL', h)
  redis.call('ZREM', WF.waiting, id)
  if #fields > 0 then WF.place(id, fields, due) else redis.call('HDEL', tasks, id) end
end
-- parentDone counts a finished parent of waiting task id, and releases
-- it when none is left.
function WF.parentDone(id)
  if redis.call('HINCRBY', WF.info .. id, 'waiting_on', -1) <= 0 then WF.release(id) end
end
-- succeeded releases the dependents of task id, which is done.
function WF.succeeded(id)
  local dk = WF.deps .. id
  local ds = redis.call('SMEMBERS', dk)
  if #ds == 0 then return end
  redis.call('DEL', dk)
  for _, d in ipairs(ds) do
    if redis.call('HGET', tasks, d) == 'w' then WF.parentDone(d) end
  end
end
-- cancelWaiting cancels waiting task id with reason.
function WF.cancelWaiting(id, reason)
  local h = WF.info .. id
  redis.call('HDEL', h, 'waiting_on', 'due')
  redis.call('HSET', h, 'last_error', reason, 'cancelled_at', WF.now())
  redis.call('ZREM', WF.waiting, id)
  redis.call('ZADD', WF.cancelled, WF.now(), id)
  redis.call('HSET', tasks, id, 'c')
  release(redis.call('HGET', h, 'unique_key'), id)
  WF.finished[#WF.finished + 1] = id
end
-- failed cancels the waiting dependents of task id, which went dead, was
-- cancelled or was deleted (how) for reason why, and theirs in turn;
-- a dependent that allows failed parents counts it as finished instead.
-- Each task is visited once: only a waiting task is cancelled, and then
-- it waits no more.
function WF.failed(id, how, why)
  local todo, i = {{id, how, why}}, 1
  while i <= #todo do
    local p, phow, pwhy = todo[i][1], todo[i][2], todo[i][3]
    i = i + 1
    local dk = WF.deps .. p
    local ds = redis.call('SMEMBERS', dk)
    redis.call('DEL', dk)
    for _, d in ipairs(ds) do
      if redis.call('HGET', tasks, d) == 'w' then
        if redis.call('HGET', WF.info .. d, 'allow_failed_parents') == '1' then
          WF.parentDone(d)
        else
          local reason = WF.cut('parent ' .. p .. ' ' .. phow .. ': ' .. (pwhy or ''))
          WF.cancelWaiting(d, reason)
          todo[#todo + 1] = {d, 'cancelled', reason}
        end
      end
    end
  end
end
-- toCancelled stores task id, given by its entry fields, as cancelled
-- with reason; ceid is the entry ID of the claim that was running, if
-- one was.
function WF.toCancelled(id, fields, reason, ceid)
  local h = WF.info .. id
  redis.call('DEL', h)
  if not field(fields, 'id') then
    fields[#fields + 1] = 'id'
    fields[#fields + 1] = id
  end
  redis.call('HSET', h, unpackAll(fields))
  redis.call('HSET', h, 'last_error', reason, 'cancelled_at', WF.now())
  if ceid then redis.call('HSET', h, 'ceid', ceid) end
  redis.call('ZADD', WF.cancelled, WF.now(), id)
  redis.call('HSET', tasks, id, 'c')
  release(field(fields, 'unique_key'), id)
  WF.finished[#WF.finished + 1] = id
end
-- cancel cancels task id, if it has not finished, with reason, and its
-- dependents; it reports whether it did. A running task's claim is taken
-- from it at once: its Ack and Nack are stale, its Extend and
-- SetProgress find it cancelled (see cancelledClaim).
function WF.cancel(id, reason)
  local loc = redis.call('HGET', tasks, id)
  if not loc and string.match(id, '^%d+%-%d+$') then loc = id end
  if not loc or ended(loc) then return false end
  if loc == 'w' then
    if redis.call('EXISTS', WF.info .. id) == 0 then return false end
    WF.cancelWaiting(id, reason)
  elseif loc == 's' then
    local h = schedPrefix .. id
    local fs = redis.call('HGETALL', h)
    redis.call('ZREM', schedule, id)
    if #fs == 0 then return false end
    redis.call('DEL', h)
    WF.toCancelled(id, fs, reason, nil)
  else
    local e = redis.call('XRANGE', stream, loc, loc)
    if #e == 0 or (field(e[1][2], 'id') or loc) ~= id then return false end
    local ceid = nil
    if claimOf(loc) then
      redis.call('XACK', stream, group, loc)
      ceid = loc
      -- Claimed under limits: its permits are free at once (the next
      -- claim counts the running tasks again).
      if redis.call('ZREM', lim .. 'lease', loc) == 1 then redis.call('DEL', lim .. 'version') end
    end
    redis.call('XDEL', stream, loc)
    WF.toCancelled(id, e[1][2], reason, ceid)
    limitsChanged()
  end
  WF.failed(id, 'cancelled', reason)
  return true
end
-- cancelledClaim reports whether the claim of task id by entry eid was
-- cancelled.
function WF.cancelledClaim(id, eid)
  return redis.call('HGET', tasks, id) == 'c' and redis.call('HGET', WF.info .. id, 'ceid') == eid
end
-- removed cleans up after task id of workflow wf (nil: none) was removed:
-- its place in the workflow, its progress, and its dependents, which are
-- cancelled as if it had been.
function WF.removed(id, wf)
  if wf and wf ~= '' then redis.call('ZREM', WF.wf .. wf, id) end
  redis.call('HDEL', WF.progress, id)
  if redis.call('EXISTS', WF.deps .. id) == 1 then WF.failed(id, 'deleted', 'deleted by request') end
end
-- drop removes task id held in a task hash, at location loc ('w', 'c' or
-- 'k'), and returns 1, or 0 if it was not there.
function WF.drop(id, loc)
  local h = WF.info .. id
  local r = redis.call('HMGET', h, 'unique_key', 'workflow')
  local n = redis.call('DEL', h)
  if loc == 'w' then release(r[1], id) end
  local set = WF.done
  if loc == 'w' then set = WF.waiting elseif loc == 'c' then set = WF.cancelled end
  redis.call('ZREM', set, id)
  forget(id, loc)
  WF.removed(id, r[2])
  return n
end
-- trim removes up to 100 done tasks kept longer than retention ms, and up
-- to 100 cancelled tasks kept longer than keepDead ms (0: forever).
function WF.trim(retention, keepDead)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', WF.done, '-inf', '(' .. (WF.now() - retention), 'LIMIT', 0, 100)) do
    WF.drop(id, 'k')
  end
  if keepDead > 0 then
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', WF.cancelled, '-inf', '(' .. (WF.now() - keepDead), 'LIMIT', 0, 100)) do
      WF.drop(id, 'c')
    end
  end
end
-- readTasks reads the tasks of EnqueueWorkflow and Spawn from ARGV[from]
-- on: for each, its ID, unique key, due time (ms, 0: at once), number of
-- parents np, np parent IDs, EnqueuedAt (ms), number of fields nf and nf
-- field-value pairs.
function WF.readTasks(from)
  local list, i = {}, from
  while i <= #ARGV do
    local t = {id = ARGV[i], uniq = ARGV[i + 1], due = tonumber(ARGV[i + 2]), np = tonumber(ARGV[i + 3]), pfrom = i + 4}
    i = i + 4 + t.np
    t.enq = ARGV[i]
    t.nf = tonumber(ARGV[i + 1])
    t.ffrom = i + 2
    i = i + 2 + 2 * t.nf
    list[#list + 1] = t
  end
  return list
end
-- taken reports whether task t of readTasks is stored already: its ID
-- (or, within window ms, its Enqueue), or its unique key held by a live
-- task (or by another task of the batch: uniqs).
function WF.taken(t, window, uniqs)
  local loc = redis.call('HGET', tasks, t.id)
  if loc and live(loc, t.id) then return true end
  if window > 0 and redis.call('EXISTS', seenPrefix .. t.id) == 1 then return true end
  if t.uniq ~= '' then
    if uniqs[t.uniq] then return true end
    uniqs[t.uniq] = true
    local holder = redis.call('GET', uniquePrefix .. t.uniq)
    if holder then
      local hloc = redis.call('HGET', tasks, holder)
      if hloc and not ended(hloc) and live(hloc, holder) then return true end
    end
  end
  return false
end
-- store stores task t of readTasks in workflow wf, waiting for its
-- parents among them that waits counts (all of them when nil), and
-- returns the time it is due if it went to the schedule.
function WF.store(t, wf, window, waits)
  if window > 0 then redis.call('SET', seenPrefix .. t.id, '1', 'PX', window) end
  if t.uniq ~= '' then redis.call('SET', uniquePrefix .. t.uniq, t.id) end
  local fields = {unpack(ARGV, t.ffrom, t.ffrom + 2 * t.nf - 1)}
  local n = 0
  for j = t.pfrom, t.pfrom + t.np - 1 do
    if not waits or waits(ARGV[j]) then
      redis.call('SADD', WF.deps .. ARGV[j], t.id)
      n = n + 1
    end
  end
  redis.call('ZADD', WF.wf .. wf, t.enq, t.id)
  if n > 0 then
    local h = WF.info .. t.id
    redis.call('DEL', h)
    redis.call('HSET', h, unpackAll(fields))
    redis.call('HSET', h, 'waiting_on', n, 'due', t.due)
    redis.call('ZADD', WF.waiting, t.enq, t.id)
    redis.call('HSET', tasks, t.id, 'w')
    return nil
  end
  if WF.place(t.id, fields, t.due) == 's' then return t.due end
  return nil
end
`

// ackKeep is the part of the ack scripts, after ackChecks, that keeps the
// done tasks that have a result or a workflow: the kept section of the
// arguments (from ARGV[keepFrom], m triples of the delivery's position
// among the n, '1' if it has a result, and the result) says which. It
// reads their entries before the scripts delete them and stores them in
// their task hashes; ackAfter, after the tasks hash forgot the acked
// tasks, marks them done ('k'), releases their dependents and announces
// them.
const ackKeep = `
local kept = {}
if m > 0 and k > 0 then
  local pos = {}
  for x = 1, k do pos[at[x]] = x end
  for j = keepFrom, keepFrom + 3 * m - 1, 3 do
    local x = pos[tonumber(ARGV[j])]
    if x then
      local eid, id = eids[x], ids[x]
      local e = redis.call('XRANGE', stream, eid, eid)
      if #e > 0 then
        local fs, out, attempts = e[1][2], {}, 0
        for i = 1, #fs, 2 do
          if fs[i] == 'attempts' then
            attempts = tonumber(fs[i + 1]) or 0
          elseif fs[i] ~= 'ord' then
            out[#out + 1] = fs[i]
            out[#out + 1] = fs[i + 1]
          end
        end
        if not field(fs, 'id') then
          out[#out + 1] = 'id'
          out[#out + 1] = id
        end
        out[#out + 1] = 'attempts'
        out[#out + 1] = attempts + tonumber(ARGV[8 + n + at[x]])
        out[#out + 1] = 'done_at'
        out[#out + 1] = WF.now()
        if ARGV[j + 1] == '1' then
          out[#out + 1] = 'result'
          out[#out + 1] = ARGV[j + 2]
        end
        local h = WF.info .. id
        redis.call('DEL', h)
        redis.call('HSET', h, unpackAll(out))
        redis.call('ZADD', WF.done, WF.now(), id)
        kept[#kept + 1] = id
      end
    end
  end
end
`

// ackAfter: see ackKeep.
const ackAfter = `
local isKept = {}
for _, id in ipairs(kept) do
  isKept[id] = true
  redis.call('HSET', tasks, id, 'k')
  WF.finished[#WF.finished + 1] = id
  WF.succeeded(id)
end
if #kept < k and redis.call('EXISTS', WF.progress) == 1 then
  -- The progress of a task not kept goes with it.
  local gone = {}
  for x = 1, k do
    if not isKept[ids[x]] then gone[#gone + 1] = ids[x] end
  end
  for i = 1, #gone, 1000 do
    redis.call('HDEL', WF.progress, unpack(gone, i, math.min(i + 999, #gone)))
  end
end
WF.announce()
`

// resultsScript returns {ID, result}... of the done tasks among ARGV[7..]
// that have a result and were done less than ARGV[6] ms ago.
var resultsScript = redis.NewScript(luaPrelude + `
local cutoff = WF.now() - tonumber(ARGV[6])
local out = {}
for i = 7, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', tasks, id) == 'k' then
    local r = redis.call('HMGET', WF.info .. id, 'result', 'done_at')
    if r[1] and (tonumber(r[2]) or 0) >= cutoff then
      out[#out + 1] = id
      out[#out + 1] = r[1]
    end
  end
end
return out
`)

// progressScript records the progress ARGV[9] of task ARGV[8] if the
// claim of entry ARGV[6] with delivery count ARGV[7] is current. It
// returns 1, 0 if the claim is not current, or 2 if it was cancelled.
var progressScript = redis.NewScript(luaPrelude + `
local owner, count = claimOf(ARGV[6])
if owner == me and count == tonumber(ARGV[7]) then
  redis.call('HSET', WF.progress, ARGV[8], ARGV[9])
  return 1
end
if WF.cancelledClaim(ARGV[8], ARGV[6]) then return 2 end
return 0
`)

// cancelScript cancels the tasks ARGV[6..] that have not finished, and
// their dependents. It returns {how many of them it cancelled, tasks
// added to the stream}.
var cancelScript = redis.NewScript(luaPrelude + `
local n = 0
for i = 6, #ARGV do
  if WF.cancel(ARGV[i], 'cancelled by request') then n = n + 1 end
end
WF.announce()
return {n, WF.released}
`)

// cancelWorkflowScript cancels the tasks of workflow ARGV[6] that have
// not finished. It returns {how many, tasks added to the stream}, or
// {-1, 0} if the workflow has no tasks.
var cancelWorkflowScript = redis.NewScript(luaPrelude + `
local ids = redis.call('ZRANGE', WF.wf .. ARGV[6], 0, -1)
local open = {}
for _, id in ipairs(ids) do
  local loc = redis.call('HGET', tasks, id)
  if loc and not ended(loc) and live(loc, id) then open[#open + 1] = id end
end
if #ids == 0 then return {-1, 0} end
local reason = WF.cut('cancelled by request: workflow ' .. ARGV[6])
for _, id in ipairs(open) do WF.cancel(id, reason) end
WF.announce()
return {#open, WF.released}
`)

// workflowScript describes the tasks of workflow ARGV[6], done tasks
// older than ARGV[7] ms (expired) left out: {ID, state, updated ms,
// enqueued ms}... in ID order of the sorted set's score, then ID.
var workflowScript = redis.NewScript(luaPrelude + `
local cutoff = WF.now() - tonumber(ARGV[7])
local m = redis.call('ZRANGE', WF.wf .. ARGV[6], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #m, 2 do
  local id, enq = m[i], tonumber(m[i + 1])
  local loc = redis.call('HGET', tasks, id)
  local st, up = nil, enq
  if loc == 'w' then
    st = 'waiting'
  elseif loc == 's' then
    st = 'scheduled'
  elseif loc == 'k' then
    local at = tonumber(redis.call('HGET', WF.info .. id, 'done_at')) or 0
    if at >= cutoff then st, up = 'done', at end
  elseif loc == 'c' then
    st, up = 'cancelled', tonumber(redis.call('ZSCORE', WF.cancelled, id)) or enq
  elseif loc and string.sub(loc, 1, 1) == 'd' then
    st, up = 'dead', tonumber(string.match(loc, '^d(%d+)-'))
  elseif loc then
    local p = redis.pcall('XPENDING', stream, group, loc, loc, 1)
    if type(p) == 'table' and not p.err and #p > 0 then
      st, up = 'running', WF.now() - tonumber(p[1][3])
    elseif #redis.call('XRANGE', stream, loc, loc) > 0 then
      st, up = 'pending', tonumber(string.match(loc, '^(%d+)-'))
    end
  end
  if st then
    out[#out + 1] = id
    out[#out + 1] = st
    out[#out + 1] = up or enq
    out[#out + 1] = enq
  end
end
return out
`)

// enqueueWorkflowScript stores the tasks of workflow ARGV[7], from
// ARGV[8] on (see WF.readTasks), all or none: if the workflow or one of
// its tasks is stored already (see WF.taken; ARGV[6] is the dedup window
// in ms), it stores nothing and returns {0, {the workflow ID if it has
// tasks stored, and the IDs of those tasks}}. Else it returns {1, tasks
// added to the stream, the first due time of those scheduled (0: none)}.
var enqueueWorkflowScript = redis.NewScript(luaPrelude + `
local window, wf = tonumber(ARGV[6]), ARGV[7]
local list = WF.readTasks(8)
local dups, uniqs = {}, {}
if redis.call('EXISTS', WF.wf .. wf) == 1 then dups[1] = wf end
for _, t in ipairs(list) do
  if WF.taken(t, window, uniqs) then dups[#dups + 1] = t.id end
end
if #dups > 0 then return {0, dups} end
local first = 0
for _, t in ipairs(list) do
  local due = WF.store(t, wf, window, nil)
  if due and (first == 0 or due < first) then first = due end
end
return {1, WF.released, first}
`)

// spawnScript adds the tasks from ARGV[11] on (see WF.readTasks) to
// workflow ARGV[10], as children of task ARGV[8], whose claim is entry
// ARGV[6] with delivery count ARGV[7]; ARGV[9] is the dedup window in
// ms. Tasks stored already (see WF.taken) are skipped. A child waits for
// its parents among the children that have not finished, and every
// waiting dependent of task ARGV[8] waits for the new children too (they
// are added to its parents). It returns {1, tasks added to the stream,
// the first due time of those scheduled (0: none)}, or {0} if the claim
// is not current, {2} if it was cancelled.
var spawnScript = redis.NewScript(luaPrelude + `
local eid, parent, window, wf = ARGV[6], ARGV[8], tonumber(ARGV[9]), ARGV[10]
local owner, count = claimOf(eid)
if owner ~= me or count ~= tonumber(ARGV[7]) then
  if WF.cancelledClaim(parent, eid) then return {2} end
  return {0}
end
local list = WF.readTasks(11)
local new, isNew, uniqs = {}, {}, {}
for _, t in ipairs(list) do
  if not WF.taken(t, window, uniqs) then
    new[#new + 1] = t
    isNew[t.id] = true
  end
end
local function waits(p)
  if isNew[p] then return true end
  local loc = redis.call('HGET', tasks, p)
  return loc ~= nil and loc ~= false and not ended(loc) and live(loc, p)
end
local first = 0
for _, t in ipairs(new) do
  local due = WF.store(t, wf, window, waits)
  if due and (first == 0 or due < first) then first = due end
end
if #new > 0 then
  local enc = {}
  for i, t in ipairs(new) do enc[i] = cjson.encode(t.id) end
  local more = table.concat(enc, ',')
  for _, d in ipairs(redis.call('SMEMBERS', WF.deps .. parent)) do
    if redis.call('HGET', tasks, d) == 'w' then
      local h = WF.info .. d
      redis.call('HINCRBY', h, 'waiting_on', #new)
      for _, t in ipairs(new) do redis.call('SADD', WF.deps .. t.id, d) end
      local ps = redis.call('HGET', h, 'parents')
      if not ps or ps == '' or ps == '[]' then
        ps = '[' .. more .. ']'
      else
        ps = string.sub(ps, 1, -2) .. ',' .. more .. ']'
      end
      redis.call('HSET', h, 'parents', ps)
    end
  end
end
return {1, WF.released, first}
`)
