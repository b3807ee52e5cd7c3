-- The fair queues of due tasks, the limits of task types and the counts
-- they need. Spliced into common.lua at FAIR_QUEUES (before set_state,
-- which keeps the counts), so every script has them.
--
-- Due tasks of a type wait per priority in three levels of zsets: the
-- tenants in rotation, scored by turn (the least recently served first; a
-- tenant that had no due task joins at the back); per tenant, its
-- concurrency keys in rotation, scored by turn (tasks without a key form
-- the key ""); per key group (tenant, key), a FIFO: members
-- <ticket hex><id>, all scored 0, so in the order they became due. A claim
-- takes the head of the FIFO of the first key of the first tenant at the
-- type's highest priority, then sends that key and tenant to the back.
-- Turns are tickets, so each is later than every earlier one. A level
-- holds only entries whose level below is not empty.
--
-- A key group with max_running_per_key tasks running is parked: it leaves
-- its tenant's rotation at each priority a claim meets it at, so that
-- claims do not look at it again until one of its tasks leaves RUNNING.

local LAYOUT = P .. ':layout'
local TYPE_TASKS, TOKEN_DUE, TYPES = P .. ':type_tasks', P .. ':token_due', P .. ':types'
-- A name of any text, spelled with its length first, so that the names of
-- two keys never meet.
local function sized(name) return #name .. ':' .. name end
local function fair_key(task_type) return P .. ':fair:' .. sized(task_type) end
local function tenants_key(task_type, prio) return fair_key(task_type) .. ':' .. prio end
local function keys_key(task_type, prio, tenant)
  return tenants_key(task_type, prio) .. ':' .. sized(tenant)
end
local function fifo_key(task_type, prio, tenant, key)
  return keys_key(task_type, prio, tenant) .. ':' .. key
end
local function group_of(tenant, key) return sized(tenant) .. key end
local function parked_key(task_type) return P .. ':parked:' .. sized(task_type) end
local function parked_prios_key(task_type, group) return parked_key(task_type) .. ':' .. group end
local function key_running_key(task_type) return P .. ':key_running:' .. sized(task_type) end
local function limits_key(task_type) return P .. ':limits:' .. task_type end

-- Changes of counts (hash -> field -> delta), written once at the end of
-- the call (write_tallies, from notify); the counts as stored, read once.
local tallies, stored_counts = {}, {}
local function tally(hash, field, delta)
  local fields = tallies[hash]
  if not fields then
    fields = {}
    tallies[hash] = fields
  end
  fields[field] = (fields[field] or 0) + delta
end
local function tallied(hash, field)
  local slot = hash .. '\0' .. field
  local stored = stored_counts[slot]
  if not stored then
    stored = tonumber(redis.call('HGET', hash, field) or 0)
    stored_counts[slot] = stored
  end
  local fields = tallies[hash]
  return stored + (fields and fields[field] or 0)
end
local function write_tallies()
  for hash, fields in pairs(tallies) do
    for field, delta in pairs(fields) do
      if delta ~= 0 and redis.call('HINCRBY', hash, field, delta) <= 0 then
        redis.call('HDEL', hash, field)
      end
    end
  end
  tallies, stored_counts = {}, {}
end

-- A type's settings hash holds `paused`, `update_time`, the declared
-- defaults `d:<limit>`, the run-time overrides `o:<limit>` and the token
-- bucket (`tokens` as of `tokens_at`).
local LIMIT_FIELDS = {'paused', 'tokens', 'tokens_at'}
for _, name in ipairs({'max_running', 'max_running_per_key', 'max_starts_per_second', 'burst'}) do
  LIMIT_FIELDS[#LIMIT_FIELDS + 1] = 'o:' .. name
  LIMIT_FIELDS[#LIMIT_FIELDS + 1] = 'd:' .. name
end
local known_limits = {}
-- The limits in force of a type (each override, else the default; 0 for
-- none), read once per call.
local function limits_of(task_type)
  local l = known_limits[task_type]
  if l then return l end
  local v = redis.call('HMGET', limits_key(task_type), unpack(LIMIT_FIELDS))
  local function limit(i) return tonumber(v[i] or v[i + 1] or 0) end
  local rate, burst = limit(8), limit(10)
  l = {paused = v[1] == '1', tokens = tonumber(v[2]), tokens_at = tonumber(v[3]),
    max_running = limit(4), per_key = limit(6), rate = rate,
    size = burst > 0 and burst or math.max(1, rate)}
  known_limits[task_type] = l
  return l
end
-- The tokens in a type's bucket at `now`: it starts full, and refills
-- continuously at its rate up to its size.
local function tokens_at(l, now)
  if not l.tokens then return l.size end
  return math.min(l.size, l.tokens + math.max(0, now - l.tokens_at) * l.rate)
end

-- A key group enters the rotations at `prio` at the back, with its tenant
-- unless the tenant is there already. A type that had no task in turn may
-- have idle workers: they hear of it.
local function join(task_type, prio, tenant, key)
  local turn = ticket()
  local fair = fair_key(task_type)
  if not work and redis.call('EXISTS', fair) == 0 then work = true end
  redis.call('ZADD', keys_key(task_type, prio, tenant), turn, key)
  redis.call('ZADD', tenants_key(task_type, prio), 'NX', turn, tenant)
  redis.call('ZADD', fair, 'NX', 0 - tonumber(prio), prio)
end
-- A key group left its tenant's rotation at `prio` (its FIFO emptied, or
-- it was parked): the tenant leaves once it has no key in turn there, the
-- priority once no tenant has.
local function key_left(task_type, prio, tenant, key)
  local keys = keys_key(task_type, prio, tenant)
  redis.call('ZREM', keys, key)
  if redis.call('EXISTS', keys) == 0 then
    local tenants = tenants_key(task_type, prio)
    redis.call('ZREM', tenants, tenant)
    if redis.call('EXISTS', tenants) == 0 then redis.call('ZREM', fair_key(task_type), prio) end
  end
end
-- How many key groups of a type are parked, read once per call: most
-- types have none, and then a task leaving RUNNING unparks nothing.
local parked_counts = {}
local function parked_count(task_type)
  local count = parked_counts[task_type]
  if not count then
    count = redis.call('SCARD', parked_key(task_type))
    parked_counts[task_type] = count
  end
  return count
end
local function park(task_type, prio, tenant, key)
  local group = group_of(tenant, key)
  parked_counts[task_type] = parked_count(task_type)
    + redis.call('SADD', parked_key(task_type), group)
  redis.call('SADD', parked_prios_key(task_type, group), prio)
  key_left(task_type, prio, tenant, key)
end
local function unpark(task_type, group)
  local length, rest = string.match(group, '^(%d+):(.*)$')
  length = tonumber(length)
  local tenant, key = string.sub(rest, 1, length), string.sub(rest, length + 1)
  local prios = parked_prios_key(task_type, group)
  for _, prio in ipairs(redis.call('SMEMBERS', prios)) do
    if redis.call('EXISTS', fifo_key(task_type, prio, tenant, key)) == 1 then
      join(task_type, prio, tenant, key)
    end
  end
  redis.call('DEL', prios)
  parked_counts[task_type] = parked_count(task_type)
    - redis.call('SREM', parked_key(task_type), group)
  work = true
end
-- After a type's settings changed: its limits are read again, its key
-- groups unparked (a claim parks those still at their limit again), and
-- idle workers hear of its due tasks.
local function limits_changed(task_type)
  known_limits[task_type] = nil
  for _, group in ipairs(redis.call('SMEMBERS', parked_key(task_type))) do
    unpark(task_type, group)
  end
  redis.call('ZREM', TOKEN_DUE, task_type)
  if redis.call('EXISTS', fair_key(task_type)) == 1 then work = true end
end

-- The FIFOs this call queued a task in and has not seen empty since: a
-- batch looks at each key group once, not once per task.
local queued_fifos = {}
-- Queue a due task under `member`, at the back of its key group's FIFO
-- (`key` false or nil for none). A group that had no due task joins the
-- rotations, unless it is parked.
local function queue_ready(task_type, priority, tenant, key, member)
  tenant, key = tenant or '', key or ''
  local fifo = fifo_key(task_type, priority, tenant, key)
  if not queued_fifos[fifo] then
    queued_fifos[fifo] = true
    if redis.call('EXISTS', fifo) == 0 then
      local group = group_of(tenant, key)
      if key ~= '' and parked_count(task_type) > 0
          and redis.call('SISMEMBER', parked_key(task_type), group) == 1 then
        redis.call('SADD', parked_prios_key(task_type, group), priority)
      else
        join(task_type, priority, tenant, key)
      end
    end
  end
  redis.call('ZADD', fifo, 0, member)
end
-- After members left a FIFO: the group leaves the rotations once it is empty.
local function ready_left(task_type, priority, tenant, key)
  local fifo = fifo_key(task_type, priority, tenant, key)
  if redis.call('EXISTS', fifo) == 0 then
    queued_fifos[fifo] = nil
    key_left(task_type, priority, tenant, key)
    return true
  end
  return false
end
-- Take `member` out of its FIFO; whether it was there.
local function unqueue_ready(task_type, priority, tenant, key, member)
  tenant, key = tenant or '', key or ''
  if redis.call('ZREM', fifo_key(task_type, priority, tenant, key), member) == 0 then
    return false
  end
  ready_left(task_type, priority, tenant, key)
  return true
end

-- The counts of a task's type (pending, running) and of its key group
-- (running) as it moves from state `before` to `after`.
local function left_running(e, task_type)
  local l = limits_of(task_type)
  local running = 'r:' .. task_type
  -- A type at its max_running holds due tasks back: one leaving frees them.
  if l.max_running > 0 and not work and tallied(TYPE_TASKS, running) >= l.max_running
      and redis.call('EXISTS', fair_key(task_type)) == 1 then
    work = true
  end
  tally(TYPE_TASKS, running, -1)
  local key = e.r[F.concurrency_key]
  if key then
    local hash, group = key_running_key(task_type), group_of(e.r[F.tenant] or '', key)
    tally(hash, group, -1)
    if parked_count(task_type) > 0
        and redis.call('SISMEMBER', parked_key(task_type), group) == 1
        and (l.per_key == 0 or tallied(hash, group) < l.per_key) then
      unpark(task_type, group)
    end
  end
end
local function count_move(e, before, after)
  local task_type = e.r[F.type]
  if before == '1' then
    tally(TYPE_TASKS, 'p:' .. task_type, -1)
  elseif before == '2' then
    left_running(e, task_type)
  end
  if after == '1' then
    tally(TYPE_TASKS, 'p:' .. task_type, 1)
  elseif after == '2' then
    tally(TYPE_TASKS, 'r:' .. task_type, 1)
    local key = e.r[F.concurrency_key]
    if key then tally(key_running_key(task_type), group_of(e.r[F.tenant] or '', key), 1) end
  end
end
-- A task created PENDING.
local function count_created(task_type) tally(TYPE_TASKS, 'p:' .. task_type, 1) end

-- Unfinished tasks: the pending and running counts of every type.
local function depth()
  local count = 0
  for _, n in ipairs(redis.call('HVALS', TYPE_TASKS)) do count = count + tonumber(n) end
  for _, delta in pairs(tallies[TYPE_TASKS] or {}) do count = count + delta end
  return count
end

-- The layout before fair queues (one zset of due tasks per type,
-- `P:ready:<type>`, the types in `P:ready_types`, and no counts) is moved
-- to this one once, by the first script run on it (common.lua ends with
-- the call), and LAYOUT set.
local function upgrade_layout()
  if redis.call('GET', LAYOUT) then return end
  local counts = {}
  local function add(hash, field)
    counts[hash] = counts[hash] or {}
    counts[hash][field] = (counts[hash][field] or 0) + 1
  end
  local old_types = P .. ':ready_types'
  for _, task_type in ipairs(redis.call('SMEMBERS', old_types)) do
    local old = P .. ':ready:' .. task_type
    for _, member in ipairs(redis.call('ZRANGE', old, 0, -1)) do
      local f = redis.call('HMGET', task_key(string.sub(member, 17)), 'state', 'priority', 'tenant')
      if f[1] == '1' then
        queue_ready(task_type, f[2], f[3], nil, member)
        add(TYPE_TASKS, 'p:' .. task_type)
      end
    end
    redis.call('DEL', old)
  end
  redis.call('DEL', old_types)
  for _, member in ipairs(redis.call('ZRANGE', DELAYED, 0, -1)) do
    local f = redis.call('HMGET', task_key(string.sub(member, 17)), 'state', 'type')
    if f[1] == '1' then add(TYPE_TASKS, 'p:' .. f[2]) end
  end
  for _, id in ipairs(redis.call('ZRANGE', RUNNING, 0, -1)) do
    local f = redis.call('HMGET', task_key(id), 'state', 'type', 'tenant', 'concurrency_key')
    if f[1] == '2' then
      add(TYPE_TASKS, 'r:' .. f[2])
      if f[4] then add(key_running_key(f[2]), group_of(f[3] or '', f[4])) end
    end
  end
  for hash, fields in pairs(counts) do
    for field, n in pairs(fields) do redis.call('HSET', hash, field, n) end
  end
  redis.call('SET', LAYOUT, '2')
end
