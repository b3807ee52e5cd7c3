"""The Redis layout of `RedisStore`: its keys, its Lua scripts, and how a
task hash becomes a TaskRecord.

Every state change is one script, so it is atomic without locks or retries,
and a batch costs one round trip. Keys, under the prefix `P`:

    P:task:<id>        hash: one task, a field per TaskRecord attribute set,
                       plus its queue member (queued) and runner (owner)
    P:seq              counter: creation order, the list cursor
    P:ticket           counter: queue order and finishing order
    P:ready            zset: due tasks; score -priority, member <ticket hex><id>
                       (equal scores sort by member, so by queue order)
    P:delayed          zset: waiting tasks; score due time, member <seq hex><id>
    P:running          zset: running tasks by lease expiry
    P:finished         zset: finished tasks by ticket (finishing order)
    P:tasks:<tenant>   zset: a tenant's tasks by seq, for listing
    P:idempotency      hash: "<tenant>\\0<key>" -> task id
    P:tenant_depth     hash: tenant -> its unfinished tasks, for quotas
    P:signing_key      string: the secret that signs list page tokens

Channels: `P:events` (one message per script call: "id:version ..." of
every task it changed), `P:cancel` (a task id whose running attempt was
asked to stop) and `P:work` (due work appeared in an empty queue; the
message names the process that made it, whose runner knows already).

Every script takes the prefix as ARGV[1]. Batches travel as two arguments,
comma-separated lengths and the values end to end: a few large arguments
cost the client far less to send than thousands of small ones. Optional
values are "" for None and "=" + value otherwise, so an empty value stays
distinct from a missing one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from conveyor_server.stores._records import Progress, State, TaskFailure, TaskRecord

# Tasks a list script examines per call: bounds how long one call holds Redis.
LIST_SCAN = 500
# Finished tasks a purge script looks at per call, for the same reason.
PURGE_CHUNK = 500

# The fields of a task hash, in the order scripts return them (HMGET).
FIELDS = (
    "id",
    "type",
    "state",
    "payload",
    "result",
    "error_code",
    "error_message",
    "error_type",
    "progress_percent",
    "progress_message",
    "progress_current",
    "progress_total",
    "attempt",
    "max_attempts",
    "priority",
    "labels",
    "create_time",
    "start_time",
    "end_time",
    "update_time",
    "scheduled_time",
    "timeout",
    "idempotency_key",
    "fingerprint",
    "cancel_requested",
    "version",
    "seq",
    "tenant",
)

# The fields scripts read and write besides those: the member a pending
# task has in its queue, and the process that runs it.
STORE_FIELDS = (*FIELDS, "queued", "owner")

COMMON = r"""
local P = ARGV[1]
local READY, DELAYED, RUNNING, FINISHED = P .. ':ready', P .. ':delayed', P .. ':running', P .. ':finished'
local IDEMPOTENCY, TENANT_DEPTH = P .. ':idempotency', P .. ':tenant_depth'
local FIELDS = {FIELD_NAMES}
local F = {}
for i, name in ipairs(FIELDS) do F[name] = i end
local events = {}
local work = false
-- Changes of each tenant's unfinished count, written once at the end.
local tenant_delta = {}
local function count_tenant(tenant, delta)
  tenant_delta[tenant] = (tenant_delta[tenant] or 0) + delta
end
local function tenant_depth(tenant)
  return tonumber(redis.call('HGET', TENANT_DEPTH, tenant) or 0) + (tenant_delta[tenant] or 0)
end

local function task_key(id) return P .. ':task:' .. id end

local function record(key) return redis.call('HMGET', key, unpack(FIELDS)) end

local function opt(value)
  if value == '' then return nil end
  return string.sub(value, 2)
end

local function unpack_values(lengths, body)
  local values, at = {}, 1
  for length in string.gmatch(lengths, '%d+') do
    local stop = at + tonumber(length)
    values[#values + 1] = string.sub(body, at, stop - 1)
    at = stop
  end
  return values
end

-- Queue and finishing order. A batch reserves its numbers in one call.
local next_ticket, last_ticket = 1, 0
local function reserve_tickets(count)
  if count > 0 then
    last_ticket = redis.call('INCRBY', P .. ':ticket', count)
    next_ticket = last_ticket - count + 1
  end
end
local function ticket()
  if next_ticket <= last_ticket then
    next_ticket = next_ticket + 1
    return next_ticket - 1
  end
  return redis.call('INCR', P .. ':ticket')
end

-- An edit of one task: read it whole once, collect the changes, write them
-- in one HSET and one HDEL; the copy read, kept current, is the reply.
local function open(id)
  local key = task_key(id)
  return {id = id, key = key, r = record(key), sets = {}, dels = {}}
end
local function put(e, name, value)
  e.sets[#e.sets + 1] = name
  e.sets[#e.sets + 1] = value
  e.r[F[name]] = value
end
local function remove(e, name)
  e.dels[#e.dels + 1] = name
  e.r[F[name]] = false
end
local function save(e)
  if #e.sets > 0 then redis.call('HSET', e.key, unpack(e.sets)) end
  if #e.dels > 0 then redis.call('HDEL', e.key, unpack(e.dels)) end
  e.sets, e.dels = {}, {}
  return e.r
end
-- Every change: a new version, an update time, an event.
local function bump(e, now_s)
  local version = tonumber(e.r[F.version]) + 1
  put(e, 'version', tostring(version))
  put(e, 'update_time', now_s)
  events[#events + 1] = e.id .. ':' .. version
end

local function note_ready()
  if not work and redis.call('ZCARD', READY) == 0 then
    -- The queue was empty: idle workers wait for a word. A queue that was
    -- not empty has no idle worker, or one that was told already.
    work = true
  end
end
local function ready_member(number, id) return string.format('%016x', number) .. id end
local function make_ready(e)
  note_ready()
  local member = ready_member(ticket(), e.id)
  redis.call('ZADD', READY, 0 - tonumber(e.r[F.priority]), member)
  put(e, 'queued', member)
end
local function make_delayed(e, due)
  local member = ready_member(tonumber(e.r[F.seq]), e.id)
  redis.call('ZADD', DELAYED, due, member)
  put(e, 'queued', member)
end
local function unqueue(e)
  local member = e.r[F.queued]
  if member then
    redis.call('ZREM', READY, member)
    redis.call('ZREM', DELAYED, member)
    remove(e, 'queued')
  end
end

-- Back to the queue, due at `scheduled`: a retry after backoff, a hand-back,
-- a lapsed lease, a RetryTask.
local function make_pending(e, scheduled, now_s)
  put(e, 'state', '1')
  put(e, 'scheduled_time', scheduled)
  remove(e, 'owner')
  redis.call('ZREM', RUNNING, e.id)
  if tonumber(scheduled) > tonumber(now_s) then
    make_delayed(e, scheduled)
  else
    make_ready(e)
  end
  bump(e, now_s)
end

local function finish(e, state, now_s)
  count_tenant(e.r[F.tenant], -1)
  put(e, 'state', state)
  put(e, 'end_time', now_s)
  remove(e, 'owner')
  redis.call('ZREM', RUNNING, e.id)
  unqueue(e)
  redis.call('ZADD', FINISHED, ticket(), e.id)
  bump(e, now_s)
end

local function drop(id, unlisted)
  local key = task_key(id)
  local fields = redis.call('HMGET', key, 'tenant', 'idempotency_key')
  local tenant = fields[1] or ''
  if fields[2] then
    local slot = tenant .. '\0' .. fields[2]
    if redis.call('HGET', IDEMPOTENCY, slot) == id then
      redis.call('HDEL', IDEMPOTENCY, slot)
    end
  end
  redis.call('ZREM', P .. ':tasks:' .. tenant, id)
  if not unlisted then redis.call('ZREM', FINISHED, id) end
  redis.call('DEL', key)
end

local function keep_retention(limit)
  local excess = redis.call('ZCARD', FINISHED) - limit
  if excess > 0 then
    local oldest = redis.call('ZPOPMIN', FINISHED, math.min(excess, 1000))
    for i = 1, #oldest, 2 do drop(oldest[i], true) end
  end
end

local function depth()
  return redis.call('ZCARD', READY) + redis.call('ZCARD', DELAYED) + redis.call('ZCARD', RUNNING)
end
-- The first tenant that `wanted` (tenant -> new tasks) would take past
-- `quota`, and its depth; nil when all fit.
local function over_quota(wanted, order, quota)
  for _, tenant in ipairs(order) do
    local current = tenant_depth(tenant)
    if current + wanted[tenant] > quota then return tenant, current end
  end
  return nil
end

local function notify(source)
  for tenant, delta in pairs(tenant_delta) do
    if delta ~= 0 and redis.call('HINCRBY', TENANT_DEPTH, tenant, delta) <= 0 then
      redis.call('HDEL', TENANT_DEPTH, tenant)
    end
  end
  if #events > 0 then
    redis.call('PUBLISH', P .. ':events', table.concat(events, ' '))
  end
  if work then redis.call('PUBLISH', P .. ':work', source or '') end
end
""".replace("FIELD_NAMES", ", ".join(f"'{name}'" for name in STORE_FIELDS))

# ARGV: prefix, max_queue, quota per tenant (0: none), owner, then per
# batch: now, lengths, values: 12
# per task: id, type, payload, labels?, max_attempts, priority, timeout?,
# key?, fingerprint?, scheduled_time, tenant, delayed ("1"/"0"). Batches are
# independent, each accepted whole or not at all, in order.
# Returns per batch {"ok", per task: seq (new), -index (repeat of an earlier
# request of the batch, 1-based) or the stored record}, {"conflict", key,
# id or ""}, {"full", depth} or {"quota", tenant, its depth}.
CREATE = r"""
local max_queue, quota, owner = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]

local function create(now_s, v)
  local count = #v / 12
  local plan, in_batch, fresh = {}, {}, 0
  for i = 1, count do
    local base = 1 + (i - 1) * 12
    local key = opt(v[base + 7])
    if not key then
      plan[i] = false
      fresh = fresh + 1
    else
      local slot = v[base + 10] .. '\0' .. key
      local earlier = redis.call('HGET', IDEMPOTENCY, slot)
      local stored = earlier and redis.call('HMGET', task_key(earlier), 'state', 'fingerprint')
      if stored and stored[1] then
        if stored[2] ~= (opt(v[base + 8]) or false) then
          return {'conflict', key, earlier}
        end
        plan[i] = earlier
      elseif in_batch[slot] then
        local first = in_batch[slot]
        if v[1 + (first - 1) * 12 + 8] ~= v[base + 8] then
          return {'conflict', key, ''}
        end
        plan[i] = first
      else
        in_batch[slot] = i
        plan[i] = false
        fresh = fresh + 1
      end
    end
  end
  if fresh > 0 then
    local unfinished = depth()
    if unfinished + fresh > max_queue then return {'full', unfinished} end
    if quota > 0 then
      local wanted, order = {}, {}
      for i = 1, count do
        if plan[i] == false then
          local tenant = v[1 + (i - 1) * 12 + 10]
          if not wanted[tenant] then order[#order + 1] = tenant end
          wanted[tenant] = (wanted[tenant] or 0) + 1
        end
      end
      local tenant, current = over_quota(wanted, order, quota)
      if tenant then return {'quota', tenant, current} end
    end
  end
  local seq = fresh > 0 and redis.call('INCRBY', P .. ':seq', fresh) - fresh or 0
  reserve_tickets(fresh)
  local out = {}
  for i = 1, count do
    local base = 1 + (i - 1) * 12
    local p = plan[i]
    if p == false then
      seq = seq + 1
      local id, tenant = v[base], v[base + 10]
      local fields = {'id', id, 'type', v[base + 1], 'state', 1, 'payload', v[base + 2],
        'max_attempts', v[base + 4], 'priority', v[base + 5], 'create_time', now_s,
        'scheduled_time', v[base + 9], 'update_time', now_s, 'attempt', 0, 'version', 1,
        'seq', seq, 'tenant', tenant, 'cancel_requested', 0}
      local labels, timeout = opt(v[base + 3]), opt(v[base + 6])
      local idempotency_key, fingerprint = opt(v[base + 7]), opt(v[base + 8])
      if labels then fields[#fields + 1] = 'labels'; fields[#fields + 1] = labels end
      if timeout then fields[#fields + 1] = 'timeout'; fields[#fields + 1] = timeout end
      if fingerprint then fields[#fields + 1] = 'fingerprint'; fields[#fields + 1] = fingerprint end
      if idempotency_key then
        fields[#fields + 1] = 'idempotency_key'
        fields[#fields + 1] = idempotency_key
        redis.call('HSET', IDEMPOTENCY, tenant .. '\0' .. idempotency_key, id)
      end
      local member
      if v[base + 11] == '1' then
        member = ready_member(seq, id)
        redis.call('ZADD', DELAYED, v[base + 9], member)
      else
        note_ready()
        member = ready_member(ticket(), id)
        redis.call('ZADD', READY, 0 - tonumber(v[base + 5]), member)
      end
      fields[#fields + 1] = 'queued'
      fields[#fields + 1] = member
      redis.call('HSET', task_key(id), unpack(fields))
      redis.call('ZADD', P .. ':tasks:' .. tenant, seq, id)
      count_tenant(tenant, 1)
      out[i] = seq
    elseif type(p) == 'number' then
      out[i] = -p
    else
      out[i] = record(task_key(p))
    end
  end
  return {'ok', out}
end

local replies = {}
for i = 5, #ARGV, 3 do
  replies[#replies + 1] = create(ARGV[i], unpack_values(ARGV[i + 1], ARGV[i + 2]))
end
notify(owner)
return replies
"""

# ARGV: prefix, now, limit, lease_seconds, owner. Returns {the claimed
# records, the due time of the earliest delayed task or nil}.
CLAIM = r"""
local now_s, limit, lease, owner = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now_s, 'LIMIT', 0, 1000)
if #due > 0 then redis.call('ZREM', DELAYED, unpack(due)) end
for _, member in ipairs(due) do
  local id = string.sub(member, 17)
  local key = task_key(id)
  local fields = redis.call('HMGET', key, 'state', 'priority')
  if fields[1] == '1' then
    note_ready()
    local ready = ready_member(ticket(), id)
    redis.call('ZADD', READY, 0 - tonumber(fields[2]), ready)
    redis.call('HSET', key, 'queued', ready)
  end
end
local claimed = {}
if limit > 0 then
  local expiry = tonumber(now_s) + lease
  local popped = redis.call('ZPOPMIN', READY, limit)
  for i = 1, #popped, 2 do
    local e = open(string.sub(popped[i], 17))
    if e.r[F.state] == '1' then
      put(e, 'state', '2')
      put(e, 'attempt', tostring(tonumber(e.r[F.attempt]) + 1))
      put(e, 'start_time', now_s)
      put(e, 'owner', owner)
      for _, name in ipairs({'queued', 'progress_percent', 'progress_message',
          'progress_current', 'progress_total'}) do
        remove(e, name)
      end
      bump(e, now_s)
      redis.call('ZADD', RUNNING, expiry, e.id)
      claimed[#claimed + 1] = save(e)
    end
  end
end
notify(owner)
local earliest = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
return {claimed, earliest[2] or false}
"""

# ARGV: prefix, now, lengths, values: 6 per update: id, attempt, percent,
# message, current, total.
SET_PROGRESS = r"""
local now_s = ARGV[2]
local v = unpack_values(ARGV[3], ARGV[4])
for i = 1, #v, 6 do
  local id = v[i]
  local key = task_key(id)
  local current = redis.call('HMGET', key, 'state', 'attempt')
  if current[1] == '2' and current[2] == v[i + 1] then
    redis.call('HSET', key, 'progress_percent', v[i + 2], 'progress_message', v[i + 3],
      'progress_current', v[i + 4], 'progress_total', v[i + 5], 'update_time', now_s)
    events[#events + 1] = id .. ':' .. redis.call('HINCRBY', key, 'version', 1)
  end
end
notify()
"""

# ARGV: prefix, now, retention_count, owner, lengths, values: 12 per
# outcome: id, attempt, cancelled ("1"/"0"), result?, error code?, error
# message, error type, retry_at ("" for none), progress percent ("" for
# none), progress message, current, total. Returns the changed records.
COMPLETE = r"""
local now_s, retention, owner = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local v = unpack_values(ARGV[5], ARGV[6])
reserve_tickets(#v / 12)
local out = {}
for i = 1, #v, 12 do
  local e = open(v[i])
  local r = e.r
  if r[F.state] == '2' and r[F.attempt] == v[i + 1] then
    if v[i + 8] ~= '' then
      put(e, 'progress_percent', v[i + 8])
      put(e, 'progress_message', v[i + 9])
      put(e, 'progress_current', v[i + 10])
      put(e, 'progress_total', v[i + 11])
    end
    local code = opt(v[i + 4])
    if v[i + 2] == '1' or r[F.cancel_requested] == '1' then
      finish(e, '5', now_s)
    elseif not code then
      local result = opt(v[i + 3])
      if result then put(e, 'result', result) else remove(e, 'result') end
      remove(e, 'error_code')
      remove(e, 'error_message')
      remove(e, 'error_type')
      local percent = r[F.progress_percent]
      if not percent then
        put(e, 'progress_percent', '100.0')
        put(e, 'progress_message', '')
        put(e, 'progress_current', '0')
        put(e, 'progress_total', '0')
      elseif tonumber(percent) ~= 100 then
        put(e, 'progress_percent', '100.0')
      end
      finish(e, '3', now_s)
    else
      put(e, 'error_code', code)
      put(e, 'error_message', v[i + 5])
      put(e, 'error_type', v[i + 6])
      if v[i + 7] ~= '' then
        make_pending(e, v[i + 7], now_s)
      else
        finish(e, '4', now_s)
      end
    end
    out[#out + 1] = save(e)
  end
end
keep_retention(retention)
notify(owner)
return out
"""

# ARGV: prefix, now, id, attempt. Returns the record, or nil when fenced.
REQUEUE = r"""
local now_s = ARGV[2]
local e = open(ARGV[3])
if e.r[F.state] ~= '2' or e.r[F.attempt] ~= ARGV[4] then return false end
put(e, 'attempt', tostring(tonumber(e.r[F.attempt]) - 1))
for _, name in ipairs({'start_time', 'progress_percent', 'progress_message',
    'progress_current', 'progress_total'}) do
  remove(e, name)
end
make_pending(e, now_s, now_s)
notify()
return save(e)
"""

# ARGV: prefix, now, id, tenant, retention_count.
# Returns {"none"}, {"ok", record[, "cancelled" when a pending task was
# cancelled now, "requested" when a running one was flagged now]} or
# {"invalid", record}.
CANCEL = r"""
local now_s, tenant = ARGV[2], ARGV[4]
local e = open(ARGV[3])
local state = e.r[F.state]
if not state or e.r[F.tenant] ~= tenant then return {'none'} end
if state == '1' then
  finish(e, '5', now_s)
  local cancelled = save(e)
  keep_retention(tonumber(ARGV[5]))
  notify()
  return {'ok', cancelled, 'cancelled'}
elseif state == '2' then
  if e.r[F.cancel_requested] ~= '1' then
    put(e, 'cancel_requested', '1')
    bump(e, now_s)
    save(e)
    notify()
    redis.call('PUBLISH', P .. ':cancel', e.id)
    return {'ok', e.r, 'requested'}
  end
  return {'ok', e.r}
elseif state == '5' then
  return {'ok', e.r}
end
return {'invalid', e.r}
"""

# ARGV: prefix, now, id, tenant, max_queue, quota per tenant (0: none).
# Returns {"none"}, {"ok", record}, {"invalid", record}, {"full", depth} or
# {"quota", tenant, its depth}.
RETRY = r"""
local now_s, tenant = ARGV[2], ARGV[4]
local e = open(ARGV[3])
local state = e.r[F.state]
if not state or e.r[F.tenant] ~= tenant then return {'none'} end
if state ~= '4' and state ~= '5' then return {'invalid', e.r} end
local unfinished = depth()
if unfinished + 1 > tonumber(ARGV[5]) then return {'full', unfinished} end
local quota = tonumber(ARGV[6])
if quota > 0 and tenant_depth(tenant) + 1 > quota then
  return {'quota', tenant, tenant_depth(tenant)}
end
count_tenant(tenant, 1)
redis.call('ZREM', FINISHED, e.id)
put(e, 'attempt', '0')
put(e, 'cancel_requested', '0')
for _, name in ipairs({'result', 'error_code', 'error_message', 'error_type',
    'progress_percent', 'progress_message', 'progress_current', 'progress_total',
    'start_time', 'end_time'}) do
  remove(e, name)
end
make_pending(e, now_s, now_s)
notify()
return {'ok', save(e)}
"""

# ARGV: prefix, now, lease_seconds, then id, attempt pairs.
# Returns {lost ids, ids with a cancel request}.
RENEW = r"""
local expiry = tonumber(ARGV[2]) + tonumber(ARGV[3])
local lost, cancel = {}, {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local current = redis.call('HMGET', task_key(id), 'state', 'attempt', 'cancel_requested')
  if current[1] == '2' and current[2] == ARGV[i + 1] then
    redis.call('ZADD', RUNNING, 'XX', expiry, id)
    if current[3] == '1' then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
return {lost, cancel}
"""

# ARGV: prefix, now, lease_margin, retention_count, owner. Returns how many
# lapsed attempts it handled.
REAP = r"""
local now_s = ARGV[2]
local cutoff = tonumber(now_s) - tonumber(ARGV[3])
local lapsed = redis.call('ZRANGEBYSCORE', RUNNING, '-inf', '(' .. string.format('%.17g', cutoff),
  'LIMIT', 0, 1000)
local handled = 0
for _, id in ipairs(lapsed) do
  local e = open(id)
  local r = e.r
  if r[F.state] ~= '2' then
    redis.call('ZREM', RUNNING, id)
  else
    handled = handled + 1
    if r[F.cancel_requested] == '1' then
      -- Asked to stop: its worker is gone, so it has stopped.
      finish(e, '5', now_s)
    else
      put(e, 'error_code', 'INTERRUPTED')
      put(e, 'error_message',
        'attempt ' .. r[F.attempt] .. ' was interrupted: its worker stopped renewing its lease')
      put(e, 'error_type', '')
      if tonumber(r[F.attempt]) < tonumber(r[F.max_attempts]) then
        make_pending(e, now_s, now_s)
      else
        finish(e, '4', now_s)
      end
    end
    save(e)
  end
end
keep_retention(tonumber(ARGV[4]))
notify(ARGV[5])
return handled
"""

# ARGV: prefix, finished_before. Returns {purged, 1 when done}.
PURGE = r"""
local before = tonumber(ARGV[2])
local oldest = redis.call('ZRANGE', FINISHED, 0, PURGE_CHUNK - 1)
local purged, done = 0, #oldest < PURGE_CHUNK
for _, id in ipairs(oldest) do
  local end_time = redis.call('HGET', task_key(id), 'end_time')
  if not end_time then
    redis.call('ZREM', FINISHED, id)
  elseif tonumber(end_time) >= before then
    done = true
    break
  else
    drop(id, false)
    purged = purged + 1
  end
end
return {purged, done and 1 or 0}
""".replace("PURGE_CHUNK", str(PURGE_CHUNK))

DEPTH = "return depth()"

# ARGV: prefix, a fresh secret. Returns the secret, the first one ever set.
SIGNING_KEY = r"""
redis.call('SET', P .. ':signing_key', ARGV[2], 'NX')
return redis.call('GET', P .. ':signing_key')
"""

# ARGV: prefix, tenant, before ("+inf" or "(<seq>"), want, states (digits,
# "" for any), type ("" for any), labels (JSON [[k, v], ...], "" for none).
# Returns {matching records (at most `want`), seq to continue before, or
# nil when the tenant's tasks are exhausted}.
LIST = r"""
local want, states, task_type = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local wanted = ARGV[7] ~= '' and cjson.decode(ARGV[7]) or nil
local scanned = redis.call('ZREVRANGEBYSCORE', P .. ':tasks:' .. ARGV[2], ARGV[3], '-inf',
  'WITHSCORES', 'LIMIT', 0, LIST_SCAN)
local found = {}
for i = 1, #scanned, 2 do
  local key = task_key(scanned[i])
  local fields = redis.call('HMGET', key, 'state', 'type', 'labels')
  local match = fields[1] and (states == '' or string.find(states, fields[1], 1, true) ~= nil)
    and (task_type == '' or fields[2] == task_type)
  if match and wanted then
    local labels = fields[3] and cjson.decode(fields[3]) or {}
    for _, pair in ipairs(wanted) do
      if labels[pair[1]] ~= pair[2] then
        match = false
        break
      end
    end
  end
  if match then
    found[#found + 1] = record(key)
    if #found == want then return {found, scanned[i + 1]} end
  end
end
if #scanned < 2 * LIST_SCAN then return {found, false} end
return {found, scanned[#scanned]}
""".replace("LIST_SCAN", str(LIST_SCAN))

# ARGV: prefix, ids. Returns each record (all nil when gone).
FETCH = r"""
local out = {}
for i = 2, #ARGV do out[#out + 1] = record(task_key(ARGV[i])) end
return out
"""


# -- values in and out ---------------------------------------------------------


def pack(values: Sequence[bytes]) -> tuple[bytes, bytes]:
    """The two arguments that carry a batch: lengths, and values end to end."""
    return ",".join([str(len(v)) for v in values]).encode(), b"".join(values)


def opt(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return b"=" + (value.encode() if isinstance(value, str) else value)


def number(value: float) -> bytes:
    """A number as Python reads it back exactly."""
    return repr(value).encode()


def progress_values(progress: Progress | None) -> tuple[bytes, bytes, bytes, bytes]:
    if progress is None:
        return b"", b"", b"0", b"0"
    return (
        repr(float(progress.percent)).encode(),
        progress.message.encode(),
        str(progress.current).encode(),
        str(progress.total).encode(),
    )


_STATES = {str(int(s)).encode(): s for s in State}


def record_from(values: Sequence[Any]) -> TaskRecord | None:
    """A TaskRecord from the FIELDS of a task hash; None for a task that
    is gone."""
    (
        task_id,
        task_type,
        state,
        payload,
        result,
        error_code,
        error_message,
        error_type,
        percent,
        progress_message,
        progress_current,
        progress_total,
        attempt,
        max_attempts,
        priority,
        labels,
        create_time,
        start_time,
        end_time,
        update_time,
        scheduled_time,
        timeout,
        idempotency_key,
        fingerprint,
        cancel_requested,
        version,
        seq,
        tenant,
        *_,  # the fields only scripts use
    ) = values
    if task_id is None:
        return None
    record = TaskRecord.__new__(TaskRecord)
    record.id = task_id.decode()
    record.type = task_type.decode()
    record.state = _STATES[state]
    record.payload = payload
    record.result = result
    record.error = (
        None
        if error_code is None
        else TaskFailure(error_code.decode(), error_message.decode(), error_type.decode())
    )
    record.progress = (
        None
        if percent is None
        else Progress(
            float(percent), progress_message.decode(), int(progress_current), int(progress_total)
        )
    )
    record.attempt = int(attempt)
    record.max_attempts = int(max_attempts)
    record.priority = int(priority)
    record.labels = None if labels is None else json.loads(labels)
    record.create_time = float(create_time)
    record.start_time = None if start_time is None else float(start_time)
    record.end_time = None if end_time is None else float(end_time)
    record.update_time = float(update_time)
    record.scheduled_time = float(scheduled_time)
    record.timeout = None if timeout is None else float(timeout)
    record.idempotency_key = None if idempotency_key is None else idempotency_key.decode()
    record.fingerprint = fingerprint
    record.cancel_requested = cancel_requested == b"1"
    record.version = int(version)
    record.seq = int(seq)
    record.tenant = tenant.decode()
    return record


def existing_record(values: Sequence[Any]) -> TaskRecord:
    """A TaskRecord from a script that read it in the same call."""
    record = record_from(values)
    assert record is not None
    return record
