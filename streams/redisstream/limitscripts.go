package redisstream

import "github.com/redis/go-redis/v9"

// The scripts of flow control (see "Flow control" in the package
// documentation). A stream with limits claims through them: each claim
// first takes tasks from the ready queues (one sorted set per task type
// and key) round-robin, claiming them with XCLAIM FORCE once every limit
// that applies admits them, then reads new entries with XREADGROUP: an
// entry whose key has nothing ready ahead of it and that every limit
// admits (none ordered or with a rate) is claimed as read; the others are
// acked out of the group's pending list and put in their ready queues.
// The keys, all under KEYS[5]:
//
//	mode        set once a claim with limits has indexed entries
//	version     a hash of the limits the running tasks were counted for
//	layout      a hash of what the ready queues were indexed for
//	ord         counter: the place of each task in its key's order
//	q:<q>       sorted set: ready entries of queue q, scored by place
//	queues      set: the queues with ready entries
//	active      sorted set: the queues that may have a task to claim,
//	            scored by turn (round-robin: a queue that gave a task goes
//	            to the back)
//	turn        counter of active
//	timed       sorted set: queues held by a rate limit, scored by when
//	            their next token is due (ms)
//	park:<s>    set: queues held by scope s until one of its permits frees
//	lease       sorted set: every entry claimed with limits and not
//	            finished, scored by lease end (ms); a claim hands those
//	            whose lease ended back to their queues and frees their
//	            permits, so the permits of a processor that died return
//	            when its leases end
//	n:<name>    hash: the running tasks each scope of limit name counts
//	            (field: the key for PerKey, the consumer for Local, else
//	            empty), the entries of lease that the limit applies to
//	live:<s>    sorted set: the live tasks (ready, running, waiting for a
//	            retry) of an ordered scope, task ID scored by place
//	bucket:<s>  hash: the token bucket of a rate scope (t tokens at ts ms)
//	wake        stream: an entry when a permit frees, for the watchers of
//	            other processes
//	dirty       set by Inspector Delete and Purge: look at held queues
//
// A queue q is #type ':' type key, with the task's key only if a PerKey
// limit applies to the task, so that every task of a queue is under the
// same limits: a blocked head blocks the whole queue, and no claim looks
// past it. A scope s is #name ':' name field, field as in n:<name>.

// limitsLib is the Lua shared by the scripts of flow control. The script
// sets LIMJSON (the limits, see limitsJSON) before it.
const limitsLib = `
local LIM = cjson.decode(LIMJSON)
local activeKey, timedKey, leaseKey = lim .. 'active', lim .. 'timed', lim .. 'lease'
local queuesKey = lim .. 'queues'
-- SENT is a member of lease (scored +inf) and a field of each n:<name>
-- that is no task: longer than Redis keeps in a listpack, it makes them a
-- skip list and a hash table, which take a batch of updates in O(1) each
-- rather than a scan of the whole listpack each; it also keeps them from
-- being deleted, and created as listpacks again, when they empty.
local SENT = string.rep('~', 72)
local function scopeOf(name, f) return #name .. ':' .. name .. f end
local function qidOf(typ, key) return #typ .. ':' .. typ .. key end
-- about reads the fields of an entry that flow control uses: type, key
-- (the key field, else the peonify-key header), ord and id.
local function about(fs)
  local typ, key, ord, id, headers = '', '', nil, nil, nil
  for i = 1, #fs, 2 do
    local f = fs[i]
    if f == 'type' then typ = fs[i + 1]
    elseif f == 'key' then key = fs[i + 1]
    elseif f == 'ord' then ord = tonumber(fs[i + 1])
    elseif f == 'id' then id = fs[i + 1]
    elseif f == 'headers' then headers = fs[i + 1]
    end
  end
  if key == '' and headers and string.find(headers, 'peonify-key', 1, true) then
    local ok, m = pcall(cjson.decode, headers)
    if ok and type(m) == 'table' and type(m['peonify-key']) == 'string' then key = m['peonify-key'] end
  end
  return typ, key, ord, id
end
local function taskKey(fs)
  local _, key = about(fs)
  return key
end
-- holds reports whether limit l counts running tasks.
local function holds(l) return l.c > 0 or l.kc ~= nil end
-- applying returns what the limits that apply to a task of type typ with
-- key key need: ls the limits, nk for each its n:<name>, pfx the start
-- of its scopes, and ordered whether one is ordered. It depends only on
-- the type and whether there is a key: fld and skey add the key.
local appCache = {[true] = {}, [false] = {}}
local function applying(typ, key)
  local byType = appCache[key ~= '']
  local a = byType[typ]
  if a then return a end
  a = {ls = {}, nk = {}, pfx = {}, ordered = false}
  for _, l in ipairs(LIM) do
    if (l.t == '' or l.t == typ) and (not l.k or key ~= '') then
      local i = #a.ls + 1
      a.ls[i], a.nk[i], a.pfx[i] = l, lim .. 'n:' .. l.n, #l.n .. ':' .. l.n
      a.ordered = a.ordered or l.o
    end
  end
  byType[typ] = a
  return a
end
-- fld returns the field in n:<name> of the i-th limit of a for a task
-- with key key held by holder (default: this consumer).
local function fld(a, i, key, holder)
  local l = a.ls[i]
  if l.l then return holder or me elseif l.k then return key end
  return ''
end
-- skey returns the key of kind ('park:', 'live:' or 'bucket:') of the
-- scope of the i-th limit of a for key and holder.
local function skey(kind, a, i, key, holder)
  return lim .. kind .. a.pfx[i] .. fld(a, i, key, holder)
end
-- placeOf returns the place of a task in its key's order that is not
-- in a ready queue (running, or being retried): its ord field, else its
-- place in the order of an ordered limit (task ID id), else nil. A task
-- only under unordered limits keeps no place once claimed.
local function placeOf(ord, typ, key, id)
  if ord then return ord end
  local a = applying(typ, key)
  for i, l in ipairs(a.ls) do
    if l.o then
      local sc = redis.call('ZSCORE', skey('live:', a, i, key), id)
      if sc then return tonumber(sc) end
    end
  end
  return nil
end
-- concFor returns the concurrency of limit l for key, or nil for none.
local function concFor(l, key)
  if l.k and l.kc then
    local n = l.kc[key]
    if n ~= nil then return n end
  end
  if l.c > 0 then return l.c end
  return nil
end
-- keyed[typ] (or keyed[''] for every type) is true when a PerKey limit
-- applies to the tasks of type typ that have a key; anyOrdered whether a
-- limit is ordered; typeless whether no limit has a type, and then
-- queues are per key only. A PerKey limit is direct (l.d) when each of
-- its scopes holds one queue only (it has a type, or no limit has): a
-- queue it holds is not parked in a set, and a permit it frees makes the
-- queue of its task active again.
local keyed, anyOrdered, typeless = {}, false, true
for _, l in ipairs(LIM) do
  if l.k then keyed[l.t] = true end
  anyOrdered = anyOrdered or l.o
  typeless = typeless and l.t == ''
end
for _, l in ipairs(LIM) do l.d = l.k and (l.t ~= '' or typeless) end
-- qidFor returns the queue of a task.
local function qidFor(typ, key)
  local t = typ
  if typeless then t = '' end
  if key ~= '' and (keyed[''] or keyed[typ]) then return qidOf(t, key) end
  return qidOf(t, '')
end
-- splitQid returns the type and key of queue q.
local function splitQid(q)
  local n, rest = string.match(q, '^(%d+):(.*)$')
  n = tonumber(n)
  return string.sub(rest, 1, n), string.sub(rest, n + 1)
end

-- The counts of n:<name>, read once per script and written back by
-- flushCounts.
local cnt, cntDirty = {}, {}
local function prefetch(nk, fields)
  local t = cnt[nk]
  if not t then
    t = {}
    cnt[nk] = t
  end
  local want = {}
  for _, f in ipairs(fields) do
    if t[f] == nil then want[#want + 1] = f end
  end
  for i = 1, #want, 1000 do
    local chunk = {unpack(want, i, math.min(i + 999, #want))}
    local vs = redis.call('HMGET', nk, unpackAll(chunk))
    for j, f in ipairs(chunk) do t[f] = tonumber(vs[j]) or 0 end
  end
end
local function getCount(nk, f)
  local t = cnt[nk]
  if not t or t[f] == nil then
    prefetch(nk, {f})
    t = cnt[nk]
  end
  return t[f]
end
local function addCount(nk, f, d)
  local v = math.max(getCount(nk, f) + d, 0)
  cnt[nk][f] = v
  local dt = cntDirty[nk]
  if not dt then
    dt = {}
    cntDirty[nk] = dt
  end
  dt[f] = true
end
local function flushCounts()
  for nk, fs in pairs(cntDirty) do
    local set, del = {SENT, 0}, {}
    for f in pairs(fs) do
      local v = cnt[nk][f]
      if v > 0 then
        set[#set + 1] = f
        set[#set + 1] = v
      else
        del[#del + 1] = f
      end
    end
    for i = 1, #set, 1000 do redis.call('HSET', nk, unpack(set, i, math.min(i + 999, #set))) end
    for i = 1, #del, 1000 do redis.call('HDEL', nk, unpack(del, i, math.min(i + 999, #del))) end
  end
  cntDirty = {}
end

local turn = nil
local function curTurn()
  if not turn then turn = tonumber(redis.call('GET', lim .. 'turn') or '0') end
  return turn
end
-- activate puts queues at the back of active, unless they are in it.
local function activate(qs)
  for i = 1, #qs, 500 do
    local args = {}
    for j = i, math.min(i + 499, #qs) do
      args[#args + 1] = curTurn()
      args[#args + 1] = qs[j]
    end
    redis.call('ZADD', activeKey, 'NX', unpackAll(args))
  end
end
local woke = false
local freed = {}
-- reactivate collects the queues held by a park key, for flushFreed.
local function reactivate(pk)
  while true do
    local qs = redis.call('SPOP', pk, 1000)
    for _, q in ipairs(qs) do freed[#freed + 1] = q end
    if #qs < 1000 then return end
  end
end
-- flushFreed makes the queues that reactivate and freePermits collected
-- active again, those that have ready entries: a queue without any need
-- not take a turn (its key's next task, when one is read, is claimed
-- straight from the stream or makes its queue active).
local function flushFreed()
  if #freed > 0 then
    local ready = {}
    for i = 1, #freed, 1000 do
      local j = math.min(i + 999, #freed)
      local has = redis.call('SMISMEMBER', queuesKey, unpack(freed, i, j))
      for x = i, j do
        if has[x - i + 1] == 1 then ready[#ready + 1] = freed[x] end
      end
    end
    activate(ready)
    freed = {}
    -- Only a queue with ready tasks has someone waiting for it.
    if #ready > 0 then woke = true end
  end
end
-- hold counts the running entry eid of a task against its limits until
-- ends (once: a renewal moves the end).
local function hold(eid, typ, key, ends)
  if redis.call('ZADD', leaseKey, ends, eid) == 1 then
    local a = applying(typ, key)
    for i, l in ipairs(a.ls) do
      if holds(l) then addCount(a.nk[i], fld(a, i, key), 1) end
    end
  end
end
-- freePermits gives back the permits of an entry that the caller took out of
-- lease, held by holder (default: this consumer).
local function freePermits(typ, key, holder)
  local a = applying(typ, key)
  for i, l in ipairs(a.ls) do
    if holds(l) then
      addCount(a.nk[i], fld(a, i, key, holder), -1)
      if l.t == '' and not l.k and not l.l then woke = true end
      if l.d then
        freed[#freed + 1] = qidFor(typ, key)
      elseif not l.l then
        reactivate(skey('park:', a, i, key))
      end
    end
  end
end
-- leaveOrder takes a finished task out of its key's order, which frees
-- the key for the next.
local function leaveOrder(id, typ, key)
  local a = applying(typ, key)
  for i, l in ipairs(a.ls) do
    if l.o then
      redis.call('ZREM', skey('live:', a, i, key), id)
      if l.d then freed[#freed + 1] = qidFor(typ, key) else reactivate(skey('park:', a, i, key)) end
    end
  end
end
-- finish writes back the counts and wakes the watchers of other
-- processes if held queues are active again.
local function finish()
  flushCounts()
  flushFreed()
  if woke then redis.call('XADD', lim .. 'wake', 'MAXLEN', '~', 16, '*', 'w', '1') end
end
-- index puts new entries in their ready queues: list holds {entry ID,
-- type, key, place or nil, task ID or nil}, in stream order. The caller
-- moves the group's last delivered ID past them.
local function index(list)
  redis.call('SET', lim .. 'mode', '1')
  local need = 0
  for _, x in ipairs(list) do
    if not x[4] then need = need + 1 end
  end
  local base = 0
  if need > 0 then base = redis.call('INCRBY', lim .. 'ord', need) - need end
  local byQueue, qs = {}, {}
  for _, x in ipairs(list) do
    if not x[4] then
      base = base + 1
      x[4] = base
    end
    local eid, typ, key, ord, id = x[1], x[2], x[3], x[4], x[5]
    local q = qidFor(typ, key)
    local adds = byQueue[q]
    if not adds then
      adds = {}
      byQueue[q] = adds
      qs[#qs + 1] = q
    end
    adds[#adds + 1] = ord
    adds[#adds + 1] = eid
    if anyOrdered then
      local a = applying(typ, key)
      for j, l in ipairs(a.ls) do
        if l.o then redis.call('ZADD', skey('live:', a, j, key), ord, id or eid) end
      end
    end
  end
  for q, adds in pairs(byQueue) do
    for i = 1, #adds, 1000 do
      redis.call('ZADD', lim .. 'q:' .. q, unpack(adds, i, math.min(i + 999, #adds)))
    end
  end
  for i = 1, #qs, 1000 do
    redis.call('SADD', queuesKey, unpack(qs, i, math.min(i + 999, #qs)))
  end
  activate(qs)
end
-- recount counts the entries of lease again into n:<name>, from scratch.
local function recount()
  local hasLocal = false
  for _, l in ipairs(LIM) do
    if holds(l) then
      redis.call('DEL', lim .. 'n:' .. l.n)
      cnt[lim .. 'n:' .. l.n] = {}
    end
    hasLocal = hasLocal or l.l
  end
  cntDirty = {}
  for _, eid in ipairs(redis.call('ZRANGEBYSCORE', leaseKey, '-inf', '(+inf')) do
    local e = redis.call('XRANGE', stream, eid, eid)
    if #e > 0 then
      local typ, key = about(e[1][2])
      local holder = nil
      if hasLocal then holder = claimOf(eid) end
      local a = applying(typ, key)
      for i, l in ipairs(a.ls) do
        if holds(l) then addCount(a.nk[i], fld(a, i, key, holder), 1) end
      end
    end
  end
end
`

// claimLimitedScript claims up to ARGV[8] tasks under the limits ARGV[6],
// with leases of ARGV[7] ms. ARGV[9] is '1' to also look for entries whose
// lease ended without being indexed, count the running tasks again and
// look at every held queue; ARGV[10] '1' to first take back this
// consumer's own entries, except those listed from ARGV[13] on. ARGV[11]
// is the version of the limits: when it changes, the running tasks are
// counted again; ARGV[12] that of what the index depends on: when it
// changes, the ready queues are indexed again. It returns {{entry ID, fields, delivery count}..., how
// many of them were this consumer's own, ms until a held queue may be
// free (a rate token or a lease end; -1: none)}.
//
// A ready queue holds entry IDs, or 'r' and the entry ID for an entry
// handed back after its lease ended, which its holder may still extend.
var claimLimitedScript = redis.NewScript(luaPrelude + `
local LIMJSON, LEASE = ARGV[6], tonumber(ARGV[7])
local want, rescue, own, version, layout = tonumber(ARGV[8]), ARGV[9] == '1', ARGV[10] == '1', ARGV[11], ARGV[12]
` + limitsLib + `
local now = nowMs()
local out = {}
local sweep, again = rescue, rescue
-- Take back this consumer's own entries.
if own then
  local skip = {}
  for i = 13, #ARGV do skip[ARGV[i]] = true end
  local from = '-'
  while #out < want do
    local page = redis.pcall('XPENDING', stream, group, from, '+', 1000, me)
    if type(page) ~= 'table' or page.err then break end
    for _, p in ipairs(page) do
      local eid, count = p[1], tonumber(p[4])
      if #out < want and not skip[eid] then
        local c = redis.call('XCLAIM', stream, group, me, 0, eid, 'RETRYCOUNT', count + 1)
        if #c > 0 and c[1] and c[1][2] then
          out[#out + 1] = {eid, c[1][2], count + 1}
          local typ, key = about(c[1][2])
          hold(eid, typ, key, now + LEASE)
        else
          redis.call('XACK', stream, group, eid)
        end
      end
    end
    if #page < 1000 then break end
    from = '(' .. page[#page][1]
  end
end
local ownN = #out

-- requeue puts an entry whose lease ended in its queue, marked 'r', in
-- its place; without one (only unordered limits apply), first: it was
-- claimed before the tasks that wait in the queue.
local function requeue(eid, fs)
  local typ, key, ord, id = about(fs)
  local q = qidFor(typ, key)
  ord = placeOf(ord, typ, key, id or eid)
  if not ord then
    local h = redis.call('ZRANGE', lim .. 'q:' .. q, 0, 0, 'WITHSCORES')
    if #h > 0 then ord = tonumber(h[2]) - 1 else ord = redis.call('INCR', lim .. 'ord') end
  end
  redis.call('ZADD', lim .. 'q:' .. q, ord, 'r' .. eid)
  redis.call('SADD', queuesKey, q)
  activate({q})
end

-- Hand entries whose lease ended back to their queues, and free their
-- permits.
for _, eid in ipairs(redis.call('ZRANGEBYSCORE', leaseKey, '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', leaseKey, eid)
  local e = redis.call('XRANGE', stream, eid, eid)
  local holder = claimOf(eid)
  if #e == 0 then
    if holder then redis.call('XACK', stream, group, eid) end
    again, sweep = true, true
  else
    requeue(eid, e[1][2])
    local typ, key = about(e[1][2])
    freePermits(typ, key, holder)
  end
end
if rescue then
  -- Entries whose lease ended that no claim with limits made (claimed
  -- before the queue had limits).
  local from, seen = '-', 0
  while seen < 1000 do
    local page = redis.pcall('XPENDING', stream, group, 'IDLE', LEASE, from, '+', 100)
    if type(page) ~= 'table' or page.err then break end
    for _, p in ipairs(page) do
      if not redis.call('ZSCORE', leaseKey, p[1]) then
        local e = redis.call('XRANGE', stream, p[1], p[1])
        if #e == 0 then
          redis.call('XACK', stream, group, p[1])
        else
          local typ, key = about(e[1][2])
          if not redis.call('ZSCORE', lim .. 'q:' .. qidFor(typ, key), 'r' .. p[1]) then requeue(p[1], e[1][2]) end
        end
      end
    end
    seen = seen + #page
    if #page < 100 then break end
    from = '(' .. page[#page][1]
  end
end
if redis.call('GET', lim .. 'dirty') then
  redis.call('DEL', lim .. 'dirty')
  sweep = true
end
if redis.call('GET', lim .. 'version') ~= version then
  -- The limits changed: count the running tasks again.
  redis.call('SET', lim .. 'version', version)
  again, sweep = true, true
end
if redis.call('GET', lim .. 'layout') ~= layout then
  -- What the index depends on changed: index the ready entries again,
  -- since which queue a task belongs to, and which keys are ordered,
  -- depend on it.
  for _, q in ipairs(redis.call('SMEMBERS', queuesKey)) do
    local qk = lim .. 'q:' .. q
    local members = redis.call('ZRANGE', qk, 0, -1, 'WITHSCORES')
    for i = 1, #members, 2 do
      local m, ord = members[i], members[i + 1]
      local eid = m
      if string.sub(m, 1, 1) == 'r' then eid = string.sub(m, 2) end
      local e = redis.call('XRANGE', stream, eid, eid)
      redis.call('ZREM', qk, m)
      if #e > 0 then
        local typ, key, _, id = about(e[1][2])
        local nq = qidFor(typ, key)
        redis.call('ZADD', lim .. 'q:' .. nq, ord, m)
        redis.call('SADD', queuesKey, nq)
        local a = applying(typ, key)
        for j, l in ipairs(a.ls) do
          if l.o then redis.call('ZADD', skey('live:', a, j, key), 'NX', ord, id or eid) end
        end
      end
    end
  end
  redis.call('SET', lim .. 'layout', layout)
  sweep = true
end
if again then recount() end
if sweep then
  -- Look again at every queue, in case what held it went away unseen.
  activate(redis.call('SMEMBERS', queuesKey))
end
local due = redis.call('ZRANGEBYSCORE', timedKey, '-inf', now)
if #due > 0 then
  activate(due)
  redis.call('ZREMRANGEBYSCORE', timedKey, '-inf', now)
end
flushFreed()

-- Index the entries added since the last claim.
local gs = redis.pcall('XINFO', 'GROUPS', stream)
local last = nil
if type(gs) == 'table' and not gs.err then
  for _, g in ipairs(gs) do
    if field(g, 'name') == group then last = field(g, 'last-delivered-id') end
  end
end
if not last then return redis.error_reply('NOGROUP the consumer group of the stream is missing') end

-- isLive reports whether task id is pending, scheduled or running.
local function isLive(id)
  local loc = redis.call('HGET', tasks, id)
  if loc then return loc ~= 'w' and not ended(loc) and live(loc, id) end
  return string.match(id, '^%d+%-%d+$') ~= nil and #redis.call('XRANGE', stream, id, id) > 0
end
-- liveHead returns the place of the first live task of an ordered scope,
-- or nil.
local function liveHead(k)
  while true do
    local h = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
    if #h == 0 then return nil end
    if isLive(h[1]) then return tonumber(h[2]) end
    redis.call('ZREM', k, h[1])
  end
end

-- pick claims the first task of queue q if every limit admits it. It
-- returns 'took', 'gone' (q leaves active: it is empty or held; the
-- caller takes it out), 'skip' (q is held by a Local limit, for this
-- claim only) or 'stop' (a limit of every task is exhausted: nothing can
-- be claimed; stopAt is when its next rate token is due, if that is what
-- held it). Queues are not parked on a limit of every task: the claim
-- stops instead, so a freed permit of such a limit need not make every
-- queue active again. Every task of q has q's type and, if a PerKey limit
-- applies to it, q's key: the limits are those of q, so a blocked head
-- blocks the whole queue. New entries are claimed together at the end
-- (fresh); what they took is given back if one was deleted meanwhile.
local fresh, goneSet, leases = {}, {}, {}
local stopAt = nil
local qinfo = {}
local function queueInfo(q)
  local i = qinfo[q]
  if not i then
    local typ, key = splitQid(q)
    i = {typ, key, applying(typ, key), lim .. 'q:' .. q}
    qinfo[q] = i
  end
  return i[1], i[2], i[3], i[4]
end
local function pick(q)
  local typ, key, a, qk = queueInfo(q)
  local ls = a.ls
  while true do
    local counts, buckets = {}, {}
    for i, l in ipairs(ls) do
      local c = concFor(l, key)
      if c then
        counts[i] = getCount(a.nk[i], fld(a, i, key))
        if counts[i] >= c then
          if l.t == '' and not l.k then return 'stop' end
          if l.l then return 'skip' end
          if not l.d then redis.call('SADD', skey('park:', a, i, key), q) end
          return 'gone'
        end
      end
      if l.r > 0 then
        local bk = skey('bucket:', a, i, key)
        local b = redis.call('HMGET', bk, 't', 'ts')
        local t = l.b
        if b[1] then t = math.min(l.b, tonumber(b[1]) + (now - tonumber(b[2])) * l.r / l.p) end
        if t < 1 then
          local at = now + math.ceil((1 - t) * l.p / l.r)
          if l.t == '' and not l.k then
            stopAt = at
            return 'stop'
          end
          redis.call('ZADD', timedKey, at, q)
          return 'gone'
        end
        buckets[#buckets + 1] = {i, t, bk}
      end
    end
    local m, ord
    if a.ordered then
      local h = redis.call('ZRANGE', qk, 0, 0, 'WITHSCORES')
      if #h == 0 then
        redis.call('SREM', queuesKey, q)
        return 'gone'
      end
      m, ord = h[1], tonumber(h[2])
      for i, l in ipairs(ls) do
        if l.o then
          local head = liveHead(skey('live:', a, i, key))
          if head and head < ord then
            if not l.d then redis.call('SADD', skey('park:', a, i, key), q) end
            return 'gone'
          end
        end
      end
      redis.call('ZREM', qk, m)
    else
      local h = redis.call('ZPOPMIN', qk)
      if #h == 0 then
        redis.call('SREM', queuesKey, q)
        return 'gone'
      end
      m, ord = h[1], tonumber(h[2])
    end
    local eid, ok = m, true
    if string.sub(m, 1, 1) == 'r' then
      -- Handed back after its lease ended: still in the group's pending
      -- list, and running again if its holder extended the lease since.
      eid = string.sub(m, 2)
      local count = 0
      local p = redis.call('XPENDING', stream, group, eid, eid, 1)
      if #p > 0 then count = tonumber(p[1][4]) end
      if #p > 0 and tonumber(p[1][3]) < LEASE then
        local e = redis.call('XRANGE', stream, eid, eid)
        if #e > 0 then
          local t, k = about(e[1][2])
          hold(eid, t, k, now + LEASE - tonumber(p[1][3]))
        end
        ok = false
      else
        local c = redis.call('XCLAIM', stream, group, me, 0, eid, 'RETRYCOUNT', count + 1, 'FORCE')
        if #c > 0 and c[1] and c[1][2] then
          out[#out + 1] = {eid, c[1][2], count + 1}
        else
          ok = false
        end
      end
    else
      out[#out + 1] = false
      fresh[#fresh + 1] = {eid, #out, q}
    end
    if ok then
      -- Every limit admitted it: take its permits and tokens.
      leases[#leases + 1] = now + LEASE
      leases[#leases + 1] = eid
      for i, l in ipairs(ls) do
        if holds(l) then addCount(a.nk[i], fld(a, i, key), 1) end
      end
      for _, b in ipairs(buckets) do
        local l = ls[b[1]]
        redis.call('HSET', b[3], 't', tostring(b[2] - 1), 'ts', now)
        redis.call('PEXPIRE', b[3], math.ceil(l.b * l.p / l.r) + 1000)
      end
      for i, l in ipairs(ls) do
        if counts[i] and not l.l and counts[i] + 1 >= concFor(l, key) then
          if not l.d then redis.call('SADD', skey('park:', a, i, key), q) end
          return 'gone'
        end
      end
      turn = curTurn() + 1
      redis.call('ZADD', activeKey, turn, q)
      return 'took'
    end
  end
end

-- takeTurns takes queues in turn, those scored up to maxScore (nil: all).
-- Queues that leave active stay in it, in front with the skipped ones,
-- until the end of the claim. The counts of each batch's scopes are read
-- at once.
local skipped, stopped = 0, false
local function takeTurns(maxScore)
  while #out < want and not stopped do
    local n = want - #out
    local batch
    if maxScore then
      batch = redis.call('ZRANGE', activeKey, '-inf', maxScore, 'BYSCORE', 'LIMIT', skipped, n)
    else
      batch = redis.call('ZRANGE', activeKey, skipped, skipped + n - 1)
    end
    if #batch == 0 then return end
    local fields = {}
    for _, q in ipairs(batch) do
      local _, key, a = queueInfo(q)
      for i, l in ipairs(a.ls) do
        if holds(l) then
          local fs = fields[a.nk[i]]
          if not fs then
            fs = {}
            fields[a.nk[i]] = fs
          end
          fs[#fs + 1] = fld(a, i, key)
        end
      end
    end
    for nk, fs in pairs(fields) do prefetch(nk, fs) end
    for _, q in ipairs(batch) do
      if #out >= want then break end
      local r = pick(q)
      if r == 'stop' then
        stopped = true
        break
      end
      if r ~= 'took' then skipped = skipped + 1 end
      if r == 'gone' then goneSet[q] = true end
    end
  end
end

-- fast reports whether a task under the limits of a may be claimed
-- straight from the stream: no limit of it is ordered or has a rate.
local function fast(a)
  if a.fast == nil then
    a.fast = not a.ordered
    for _, l in ipairs(a.ls) do
      if l.r > 0 then a.fast = false end
    end
  end
  return a.fast
end
-- queued[q] is true when queue q has ready entries, or gave a task in
-- this claim: a new entry of q goes behind them.
local queued = {}
-- readNew reads up to n entries added since the last claim with
-- XREADGROUP, which moves the group past them. An entry whose queue has
-- nothing ready ahead of it and that every limit admits (and none is
-- ordered or has a rate) is claimed at once: the rank-1 task of its key.
-- The others are acked out of the group's pending list and put in their
-- ready queues. It returns how many entries it read.
local function readNew(n)
  local r = redis.pcall('XREADGROUP', 'GROUP', group, me, 'COUNT', n, 'STREAMS', stream, '>')
  if type(r) ~= 'table' or r.err or #r == 0 or #r[1][2] == 0 then return 0 end
  local es = r[1][2]
  redis.call('SET', lim .. 'mode', '1')
  local list, ask, fields = {}, {}, {}
  for i, e in ipairs(es) do
    local typ, key, ord, id = about(e[2])
    local q = qidFor(typ, key)
    list[i] = {e[1], typ, key, ord, id, q}
    if queued[q] == nil then
      queued[q] = false
      ask[#ask + 1] = q
    end
    local a = applying(typ, key)
    for j, l in ipairs(a.ls) do
      if holds(l) then
        fields[a.nk[j]] = fields[a.nk[j]] or {}
        table.insert(fields[a.nk[j]], fld(a, j, key))
      end
    end
  end
  for i = 1, #ask, 1000 do
    local j = math.min(i + 999, #ask)
    local has = redis.call('SMISMEMBER', queuesKey, unpack(ask, i, j))
    for x = i, j do queued[ask[x]] = has[x - i + 1] == 1 end
  end
  for nk, fs in pairs(fields) do prefetch(nk, fs) end
  local need = 0
  for _, x in ipairs(list) do
    if not x[4] then need = need + 1 end
  end
  if need > 0 then
    local base = redis.call('INCRBY', lim .. 'ord', need) - need
    for _, x in ipairs(list) do
      if not x[4] then
        base = base + 1
        x[4] = base
      end
    end
  end
  local file, acks = {}, {}
  for i, x in ipairs(list) do
    local eid, typ, key, ord, q = x[1], x[2], x[3], x[4], x[6]
    local a = applying(typ, key)
    local ok = not stopped and #out < want and not queued[q] and fast(a)
    if ok then
      for j, l in ipairs(a.ls) do
        local c = concFor(l, key)
        if c and getCount(a.nk[j], fld(a, j, key)) >= c then
          ok = false
          break
        end
      end
    end
    if ok then
      out[#out + 1] = {eid, es[i][2], 1}
      leases[#leases + 1] = now + LEASE
      leases[#leases + 1] = eid
      for j, l in ipairs(a.ls) do
        if holds(l) then addCount(a.nk[j], fld(a, j, key), 1) end
      end
      -- The key's next task is its second in this claim: it waits for
      -- the other keys' first. A queue of no key has no turns to keep.
      if key ~= '' and (keyed[''] or keyed[typ]) then queued[q] = true end
    else
      file[#file + 1] = x
      acks[#acks + 1] = eid
      queued[q] = true
    end
  end
  if #file > 0 then
    for i = 1, #acks, 1000 do
      redis.call('XACK', stream, group, unpack(acks, i, math.min(i + 999, #acks)))
    end
    -- Behind the queues that took their turn in this claim.
    turn = curTurn() + 1
    index(file)
    for _, x in ipairs(file) do
      local q = x[6]
      if goneSet[q] then
        -- It left active in this claim (held or empty): look at it again.
        goneSet[q] = nil
        skipped = skipped - 1
        redis.call('ZADD', activeKey, turn, q)
      end
    end
  end
  return #es
end

-- First each active queue once (the first ready task of each key that
-- has some), then new entries, then the queues in turn again. New entries
-- are read for the claim, and at least as many as it wants (a key
-- enqueued behind held ones is seen as fast as the claims go), up to ten
-- times as many when they are held.
takeTurns(curTurn())
local cap, got = math.max(2000, 10 * want), 0
while got < cap and (got < want or (#out < want and not stopped)) do
  local n = math.min(cap - got, math.max(want - #out, want - got))
  local r = readNew(n)
  got = got + r
  if r < n then break end
end
takeTurns(nil)
local gone = {}
for q in pairs(goneSet) do gone[#gone + 1] = q end
for i = 1, #gone, 1000 do
  redis.call('ZREM', activeKey, unpack(gone, i, math.min(i + 999, #gone)))
end
if #fresh > 0 then
  local got = {}
  for i = 1, #fresh, 1000 do
    local args = {stream, group, me, 0}
    for j = i, math.min(i + 999, #fresh) do args[#args + 1] = fresh[j][1] end
    args[#args + 1] = 'RETRYCOUNT'
    args[#args + 1] = 1
    args[#args + 1] = 'FORCE'
    for _, c in ipairs(redis.call('XCLAIM', unpackAll(args))) do
      if c and c[2] then got[c[1]] = c[2] end
    end
  end
  local compact, ls2 = {}, {}
  for _, f in ipairs(fresh) do
    local fs = got[f[1]]
    if fs then
      out[f[2]] = {f[1], fs, 1}
    else
      -- Deleted since it was indexed: give back what it took.
      local typ, key = splitQid(f[3])
      local a = applying(typ, key)
      for i, l in ipairs(a.ls) do
        if l.r > 0 then redis.call('HINCRBYFLOAT', skey('bucket:', a, i, key), 't', 1) end
      end
      freePermits(typ, key)
      redis.call('ZADD', activeKey, 'NX', curTurn(), f[3])
      got[f[1]] = false
    end
  end
  for i = 1, #leases, 2 do
    if got[leases[i + 1]] ~= false then
      ls2[#ls2 + 1] = leases[i]
      ls2[#ls2 + 1] = leases[i + 1]
    end
  end
  leases = ls2
  for _, o in ipairs(out) do
    if o then compact[#compact + 1] = o end
  end
  out = compact
end
if #leases > 0 then
  leases[#leases + 1] = '+inf'
  leases[#leases + 1] = SENT
end
for i = 1, #leases, 1000 do
  redis.call('ZADD', leaseKey, unpack(leases, i, math.min(i + 999, #leases)))
end
if turn then redis.call('SET', lim .. 'turn', turn) end
finish()
local wait = -1
if stopAt then wait = math.max(stopAt - now, 0) end
if #out < want then
  for _, k in ipairs({timedKey, leaseKey}) do
    local first = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
    if #first > 0 and first[1] ~= SENT then
      local w = math.max(tonumber(first[2]) - now, 0)
      if wait < 0 or w < wait then wait = w end
    end
  end
end
return {out, ownN, wait}
`)

// ackLimitedScript completes deliveries claimed with limits: the arguments
// of ackChecks (with the kept section and m), then the deliveries' n task
// types and n keys, then the limits. It deletes the acked entries one by one (the stream holds ready
// entries below the group's last delivered ID), frees their permits and
// takes them out of their keys' order. It keeps and releases as ackScript
// does, and returns how many tasks it added to the stream.
var ackLimitedScript = redis.NewScript(luaPrelude + `
local LIMJSON = ARGV[#ARGV]
local typBase = #ARGV - 1 - 2 * tonumber(ARGV[8])
local m = tonumber(ARGV[typBase])
local keepFrom = typBase - 3 * m
local ackEnd = keepFrom - 1
` + limitsLib + ackChecks + ackKeep + `
if k == 0 then return 0 end
local fields = {}
for x = 1, k do
  local key = ARGV[typBase + n + at[x]]
  local a = applying(ARGV[typBase + at[x]], key)
  for i, l in ipairs(a.ls) do
    if holds(l) then
      fields[a.nk[i]] = fields[a.nk[i]] or {}
      table.insert(fields[a.nk[i]], fld(a, i, key))
    end
  end
end
for nk, fs in pairs(fields) do prefetch(nk, fs) end
for i = 1, k, 1000 do
  local j = math.min(i + 999, k)
  local held = redis.call('ZMSCORE', leaseKey, unpack(eids, i, j))
  for x = i, j do
    local typ, key = ARGV[typBase + at[x]], ARGV[typBase + n + at[x]]
    if held[x - i + 1] then freePermits(typ, key) end
    if anyOrdered then leaveOrder(ids[x], typ, key) end
  end
  redis.call('ZREM', leaseKey, unpack(eids, i, j))
  redis.call('XACK', stream, group, unpack(eids, i, j))
  redis.call('HDEL', tasks, unpack(ids, i, j))
  redis.call('XDEL', stream, unpack(eids, i, j))
end
` + ackAfter + `
finish()
return WF.released
`)

// nackLimitedScript is nackScript for a delivery claimed with limits:
// ARGV[13] and ARGV[14] are the task's type and key, ARGV[15] the limits.
// The task added again keeps its place in its key's order (its ord field);
// a dead one leaves it.
var nackLimitedScript = redis.NewScript(nackLimitedSrc())

func nackLimitedSrc() string {
	return luaPrelude + `
local LIMJSON, typ, key = ARGV[15], ARGV[13], ARGV[14]
` + limitsLib + `
local function unhold(eid)
  if redis.call('ZREM', leaseKey, eid) == 1 then freePermits(typ, key) end
end
` + nackBody(map[string]string{
		"gone": "unhold(eid)\n  leaveOrder(id, typ, key)\n  finish()",
		"fields": `if not field(fields, 'ord') then
  local ord = placeOf(nil, typ, key, id)
  if ord then
    fields[#fields + 1] = 'ord'
    fields[#fields + 1] = ord
  end
end`,
		"done": "unhold(eid)\nif outcome == 'dead' then leaveOrder(id, typ, key) end\nfinish()",
	})
}

// extendLimitedScript is extendScript for a delivery claimed with limits:
// ARGV[9] and ARGV[10] are the task's type and key, ARGV[11] the limits,
// ARGV[12] Config.Lease in ms and ARGV[13] the task ID. Its permits are held to the new lease
// end.
var extendLimitedScript = redis.NewScript(luaPrelude + `
local LIMJSON, LEASE = ARGV[11], tonumber(ARGV[12])
` + limitsLib + `
local eid = ARGV[6]
local owner, count = claimOf(eid)
if owner ~= me or count ~= tonumber(ARGV[7]) then
  if WF.cancelledClaim(ARGV[13], eid) then return 2 end
  return 0
end
redis.call('XCLAIM', stream, group, me, 0, eid, 'IDLE', tonumber(ARGV[8]), 'JUSTID')
hold(eid, ARGV[9], ARGV[10], nowMs() + LEASE - tonumber(ARGV[8]))
finish()
return 1
`)

// limitStatsScript reports what the limits ARGV[6] hold: {{queue, ready
// entries}..., {{type, key}...} of the running entries claimed with
// limits, {limit name, running}... of the Local limits of this consumer}.
// Of the entries not indexed yet it counts the first 10,000.
var limitStatsScript = redis.NewScript(luaPrelude + `
local LIMJSON = ARGV[6]
` + limitsLib + `
local now = nowMs()
local counts, qs = {}, {}
for _, q in ipairs(redis.call('SMEMBERS', queuesKey)) do
  counts[q] = redis.call('ZCARD', lim .. 'q:' .. q)
end
-- Entries no claim has indexed yet are ready too.
local gs = redis.pcall('XINFO', 'GROUPS', stream)
local last = '0-0' -- no group yet: every entry is ready
if type(gs) == 'table' and not gs.err then
  for _, g in ipairs(gs) do
    if field(g, 'name') == group then last = field(g, 'last-delivered-id') end
  end
end
for _, e in ipairs(redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 10000)) do
  local typ, key = about(e[2])
  local q = qidFor(typ, key)
  counts[q] = (counts[q] or 0) + 1
end
for q, n in pairs(counts) do qs[#qs + 1] = {q, n} end
local running = {}
for _, eid in ipairs(redis.call('ZRANGEBYSCORE', leaseKey, '(' .. now, '(+inf')) do
  local e = redis.call('XRANGE', stream, eid, eid)
  if #e > 0 then
    local typ, key = about(e[1][2])
    running[#running + 1] = {typ, key}
  end
end
local locals = {}
for _, l in ipairs(LIM) do
  if l.l then locals[#locals + 1] = {l.n, tonumber(redis.call('HGET', lim .. 'n:' .. l.n, me) or '0')} end
end
return {qs, running, locals}
`)

// unlimitScript undoes the index of a queue that was claimed with limits
// and is now claimed without (the limits were removed): it adds the ready
// entries of up to ARGV[6] queues again at the end of the stream, past the
// group's last delivered ID, where XREADGROUP reads them, and deletes the
// index once it is empty. Entries handed back after their lease ended stay
// in the group's pending list, where the look for expired leases finds
// them. It returns how many queues remain, 0 when there is nothing (left)
// to undo.
var unlimitScript = redis.NewScript(luaPrelude + `
if redis.call('EXISTS', lim .. 'mode') == 0 then return 0 end
local queues = redis.call('SRANDMEMBER', lim .. 'queues', tonumber(ARGV[6]))
for _, q in ipairs(queues) do
  local qk = lim .. 'q:' .. q
  for _, m in ipairs(redis.call('ZRANGE', qk, 0, -1)) do
    if string.sub(m, 1, 1) ~= 'r' then
      local e = redis.call('XRANGE', stream, m, m)
      if #e > 0 then
        local fs = e[1][2]
        local id = field(fs, 'id')
        if not id then
          id = m
          fs[#fs + 1] = 'id'
          fs[#fs + 1] = m
        end
        local loc = redis.call('XADD', stream, '*', unpackAll(fs))
        redis.call('XDEL', stream, m)
        local cur = redis.call('HGET', tasks, id)
        if not cur or cur == m then redis.call('HSET', tasks, id, loc) end
      end
    end
  end
  redis.call('DEL', qk)
  redis.call('SREM', lim .. 'queues', q)
end
local left = redis.call('SCARD', lim .. 'queues')
if left == 0 then
  for _, k in ipairs({'mode', 'queues', 'active', 'timed', 'lease', 'meta', 'turn', 'version', 'layout', 'dirty'}) do
    redis.call('DEL', lim .. k)
  end
end
return left
`)
