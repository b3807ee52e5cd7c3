-- Shared by every script: it is prepended to each one, so these locals and
-- functions are in scope there. ARGV[1] is always the key prefix `P`.
-- FIELD_NAMES is replaced at import by the quoted names of the fields a
-- task hash holds (scripts.STORE_FIELDS), in the order `record` returns them;
-- FAIR_QUEUES by lua/fair.lua: the queues of due tasks, the limits of task
-- types and their counts.

local P = ARGV[1]
local DELAYED, RUNNING, FINISHED = P .. ':delayed', P .. ':running', P .. ':finished'
local IDEMPOTENCY, TENANT_DEPTH = P .. ':idempotency', P .. ':tenant_depth'
local FIELDS = {FIELD_NAMES}
local F = {}
for i, name in ipairs(FIELDS) do F[name] = i end
-- The changes of the call, "id:version" each, and per change the reply_to
-- of its task as "=" .. reply_to ("=" alone for none), for the feed entry.
local events, event_replies = {}, {}
local function event(id, version, reply_to)
  events[#events + 1] = id .. ':' .. version
  event_replies[#event_replies + 1] = '=' .. (reply_to or '')
end
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
-- The attempts of a task with log lines (a set); each one's lines are the
-- list under it, `:<attempt>`.
local function logs_key(id) return P .. ':logs:' .. id end

-- A tenant's list indexes: zsets of its task ids scored by seq (creation
-- order, the order ListTasks pages in): every task (P:tasks:<tenant>), and
-- one per task type, label (key=value) and state, which list.lua scans
-- instead of every task when its filter names one. The tenant and label
-- key are spelled with their length first, so no two names meet.
local INDEX_VERSION = P .. ':list_index'
local function all_index(tenant) return P .. ':tasks:' .. tenant end
local function index_of(tenant) return P .. ':list:' .. #tenant .. ':' .. tenant .. ':' end
local function type_index(tenant, task_type) return index_of(tenant) .. 'type:' .. task_type end
local function label_index(tenant, name, value)
  return index_of(tenant) .. 'label:' .. #name .. ':' .. name .. '=' .. value
end
local function state_index(tenant, state) return index_of(tenant) .. 'state:' .. state end
-- Every index a task is in, but its state's; `labels` is the stored JSON.
local function index_keys(tenant, task_type, labels)
  local keys = {all_index(tenant), type_index(tenant, task_type)}
  if labels then
    for name, value in pairs(cjson.decode(labels)) do
      keys[#keys + 1] = label_index(tenant, name, value)
    end
  end
  return keys
end
-- New index entries, added in a few ZADDs per key at the end of a call
-- rather than one per task.
local index_adds = {}
local function index_later(key, seq, id)
  local entries = index_adds[key]
  if not entries then
    entries = {}
    index_adds[key] = entries
  end
  entries[#entries + 1] = seq
  entries[#entries + 1] = id
end
local function index_task(tenant, task_type, labels, state, seq, id)
  for _, key in ipairs(index_keys(tenant, task_type, labels)) do index_later(key, seq, id) end
  index_later(state_index(tenant, state), seq, id)
end
-- The tasks whose state this call changed: id -> {tenant, seq, state
-- before the call, state now}. Written at the end, moved out of the index
-- of the first and into that of the last, in one ZREM and one ZADD per
-- index, however many times a task moved (a retry claimed at once).
local state_moves = {}
local function write_index()
  local removes = {}
  for id, move in pairs(state_moves) do
    if move[3] ~= move[4] then
      if move[3] then
        local key = state_index(move[1], move[3])
        local ids = removes[key]
        if not ids then
          ids = {}
          removes[key] = ids
        end
        ids[#ids + 1] = id
      end
      index_later(state_index(move[1], move[4]), move[2], id)
    end
  end
  state_moves = {}
  for key, ids in pairs(removes) do
    for first = 1, #ids, 4000 do
      redis.call('ZREM', key, unpack(ids, first, math.min(first + 3999, #ids)))
    end
  end
  for key, entries in pairs(index_adds) do
    -- unpack() takes a few thousand values at most.
    for first = 1, #entries, 2000 do
      redis.call('ZADD', key, unpack(entries, first, math.min(first + 1999, #entries)))
    end
  end
  index_adds = {}
end

-- A call that must not act twice passes KEYS[1], a key of its own: the
-- client sends a script again on a fresh connection when the first one
-- dropped before the reply came, though the script may have run. The first
-- run keeps its answer there for CALL_MEMORY_MS (scripts.CALL_MEMORY_SECONDS);
-- a run that finds it gives that answer again and changes nothing. A script
-- starts with `local replayed = replay() if replayed then return replayed end`
-- and returns `answer(reply)`.
local CALL = KEYS[1]
local function replay()
  local earlier = CALL and redis.call('GET', CALL)
  if earlier then return cmsgpack.unpack(earlier) end
  return nil
end
local function answer(reply)
  if CALL then redis.call('SET', CALL, cmsgpack.pack(reply), 'PX', CALL_MEMORY_MS) end
  return reply
end

-- A task's fencing token is its claim number, which only grows. A hash
-- without one was never claimed since claims were numbered (a new task, or
-- one stored by an older version, fenced on its attempt then): its attempt
-- stands for it, and every later claim exceeds it. A script that changes
-- the attempt of such a hash writes the claim number down first.
local function claim_of(claim, attempt) return claim or attempt end

local function record(key)
  local r = redis.call('HMGET', key, unpack(FIELDS))
  r[F.claim] = claim_of(r[F.claim], r[F.attempt])
  -- Hashes stored before dependencies existed wait for none.
  if r[F.id] then
    r[F.waiting] = r[F.waiting] or '0'
    r[F.run_on_dependency_failure] = r[F.run_on_dependency_failure] or '0'
  end
  return r
end

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
FAIR_QUEUES

-- A new state; the task moves between the tenant's state indexes at the
-- end of the call (write_index), and between the counts of its type.
local function set_state(e, state)
  if e.r[F.state] ~= state then count_move(e, e.r[F.state], state) end
  local seq = e.r[F.seq]
  if seq then
    local move = state_moves[e.id]
    if move then
      move[4] = state
    else
      state_moves[e.id] = {e.r[F.tenant] or '', seq, e.r[F.state], state}
    end
  end
  put(e, 'state', state)
end
-- Every change: a new version, an update time, an event.
local function bump(e, now_s)
  local version = tonumber(e.r[F.version]) + 1
  put(e, 'version', tostring(version))
  put(e, 'update_time', now_s)
  event(e.id, version, e.r[F.reply_to])
end

local function ready_member(number, id) return string.format('%016x', number) .. id end
local function make_ready(e)
  local member = ready_member(ticket(), e.id)
  queue_ready(e.r[F.type], e.r[F.priority], e.r[F.tenant], e.r[F.concurrency_key], member)
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
    local r = e.r
    if not unqueue_ready(r[F.type], r[F.priority], r[F.tenant], r[F.concurrency_key], member) then
      redis.call('ZREM', DELAYED, member)
    end
    remove(e, 'queued')
  end
end

-- Back to the queue, due at `scheduled`: a retry after backoff, a hand-back,
-- a lapsed lease, a RetryTask.
local function make_pending(e, scheduled, now_s)
  set_state(e, '1')
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

-- Dependencies: a task created with unfinished dependencies waits, PENDING
-- (counted as such) but in no queue, with `waiting` = how many are
-- unfinished; each unfinished dependency lists it among its dependents.
local function dependents_key(id) return P .. ':dependents:' .. id end
local ENDED_AS = {['3'] = 'SUCCEEDED', ['4'] = 'FAILED', ['5'] = 'CANCELLED'}
-- Whether a dependency that ended in `state` lets a task waiting for it
-- run: success does, and failure when the task runs on failure anyway.
local function lets_run(state, run_on_failure)
  return state == '3' or run_on_failure == '1'
end
local function dependency_failed(dependency, state)
  return 'task ' .. dependency .. ' it depends on ended ' .. ENDED_AS[state]
end
-- Queue a task that no longer waits: due at its scheduled time, or now.
local function queue_released(e, now_s)
  local scheduled = e.r[F.scheduled_time]
  if tonumber(scheduled) > tonumber(now_s) then
    make_delayed(e, scheduled)
  else
    make_ready(e)
  end
end
-- One dependency fewer to wait for.
local function count_down(e, now_s)
  local waiting = tonumber(e.r[F.waiting]) - 1
  put(e, 'waiting', tostring(waiting))
  if waiting == 0 then queue_released(e, now_s) end
  bump(e, now_s)
end

local release_dependents -- below: it ends tasks by `finish`, which calls it
local function finish(e, state, now_s)
  count_tenant(e.r[F.tenant], -1)
  set_state(e, state)
  put(e, 'end_time', now_s)
  remove(e, 'owner')
  redis.call('ZREM', RUNNING, e.id)
  unqueue(e)
  redis.call('ZADD', FINISHED, ticket(), e.id)
  bump(e, now_s)
  release_dependents(e.id, state, now_s)
end

-- The tasks that ended in this call whose dependents are still to be told,
-- {id, state} each: a worklist rather than recursion, since a dependent
-- cancelled here ends in turn and tells its own.
local ended_tasks, releasing = {}, false
release_dependents = function(id, state, now_s)
  ended_tasks[#ended_tasks + 1] = {id, state}
  if releasing then return end
  releasing = true
  local i = 1
  while i <= #ended_tasks do
    local dependency, ended_as = ended_tasks[i][1], ended_tasks[i][2]
    local key = dependents_key(dependency)
    local dependents = redis.call('SMEMBERS', key)
    if #dependents > 0 then redis.call('DEL', key) end
    for _, dependent in ipairs(dependents) do
      local d = open(dependent)
      -- A dependent cancelled or retried since waits no more.
      if d.r[F.state] == '1' and d.r[F.waiting] ~= '0' then
        if lets_run(ended_as, d.r[F.run_on_dependency_failure]) then
          count_down(d, now_s)
        else
          put(d, 'error_code', 'DEPENDENCY_FAILED')
          put(d, 'error_message', dependency_failed(dependency, ended_as))
          put(d, 'error_type', '')
          finish(d, '5', now_s)
        end
        save(d)
      end
    end
    i = i + 1
  end
  ended_tasks, releasing = {}, false
end

local function drop(id, unlisted)
  local key = task_key(id)
  local fields = redis.call('HMGET', key, 'tenant', 'idempotency_key', 'type', 'labels', 'state')
  local tenant = fields[1] or ''
  if fields[2] then
    local slot = tenant .. '\0' .. fields[2]
    if redis.call('HGET', IDEMPOTENCY, slot) == id then
      redis.call('HDEL', IDEMPOTENCY, slot)
    end
  end
  for _, index in ipairs(index_keys(tenant, fields[3] or '', fields[4])) do
    redis.call('ZREM', index, id)
  end
  -- A move this call made waits to be written: the task left the index of
  -- its state before the call, and enters no other.
  local move = state_moves[id]
  state_moves[id] = nil
  local state = move and move[3] or fields[5]
  if state then redis.call('ZREM', state_index(tenant, state), id) end
  if not unlisted then redis.call('ZREM', FINISHED, id) end
  redis.call('DEL', key)
  local logs = logs_key(id)
  for _, attempt in ipairs(redis.call('SMEMBERS', logs)) do
    redis.call('DEL', logs .. ':' .. attempt)
  end
  redis.call('DEL', logs)
end

local function keep_retention(limit)
  local excess = redis.call('ZCARD', FINISHED) - limit
  if excess > 0 then
    local oldest = redis.call('ZPOPMIN', FINISHED, math.min(excess, 1000))
    for i = 1, #oldest, 2 do drop(oldest[i], true) end
  end
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
  write_index()
  write_tallies()
  for tenant, delta in pairs(tenant_delta) do
    if delta ~= 0 and redis.call('HINCRBY', TENANT_DEPTH, tenant, delta) <= 0 then
      redis.call('HDEL', TENANT_DEPTH, tenant)
    end
  end
  -- The change feed: one entry per call, its changes in order, and their
  -- tasks' reply_to (a follower reads the records of the changes its
  -- readers want, and needs no read to tell). Trimmed loosely (cheap) to
  -- about FEED_LENGTH entries; a reader resuming from a trimmed entry is
  -- told to re-list.
  if #events > 0 then
    redis.call('XADD', P .. ':feed', 'MAXLEN', '~', FEED_LENGTH, '*',
      'c', table.concat(events, ' '), 'r', table.concat(event_replies, ' '))
  end
  if work then redis.call('PUBLISH', P .. ':work', source or '') end
end

upgrade_layout()
