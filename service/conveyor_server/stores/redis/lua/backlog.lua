-- The backlog gauges per (type, tenant), for autoscalers. Nothing a claim
-- does is changed for them: they are read from what the store keeps anyway.
--   pending, running: the tenant's list index of the state, intersected
--     with its index of the type (ZINTERCARD), for the tenants with
--     unfinished tasks (P:tenant_depth) and the types with any (P:type_tasks);
--   due and the oldest due time: the fair queues (each key group's FIFO
--     length and its head's due time, parked groups included), and the
--     delayed tasks whose time came that no claim has queued yet.
-- Work is bounded: at most MAX_TENANTS tenants, groups per (type, priority,
-- tenant) and late delayed tasks are read.
--
-- ARGV: prefix, now, max tenants.
-- Returns type, tenant, pending, due, running, oldest due time ("" for
-- none), repeated.

local now, max_tenants = tonumber(ARGV[2]), tonumber(ARGV[3])
local gauges, order = {}, {}
local function gauge(task_type, tenant)
  local slot = sized(task_type) .. tenant
  local g = gauges[slot]
  if not g then
    g = {task_type, tenant, 0, 0, 0, false}
    gauges[slot] = g
    order[#order + 1] = g
  end
  return g
end
local function add_due(g, count, due_time)
  g[4] = g[4] + count
  if due_time and (not g[6] or due_time < g[6]) then g[6] = due_time end
end
local function head_due_time(fifo)
  local head = redis.call('ZRANGE', fifo, 0, 0)[1]
  if not head then return nil end
  return tonumber(redis.call('HGET', task_key(string.sub(head, 17)), 'scheduled_time'))
end
local function count_fifo(task_type, prio, tenant, key)
  local fifo = fifo_key(task_type, prio, tenant, key)
  local count = redis.call('ZCARD', fifo)
  if count > 0 then add_due(gauge(task_type, tenant), count, head_due_time(fifo)) end
end

local types = {}
local counts = redis.call('HGETALL', TYPE_TASKS)
for i = 1, #counts, 2 do
  local task_type = string.sub(counts[i], 3)
  if not types[task_type] then
    types[task_type] = true
    types[#types + 1] = task_type
  end
end

-- pending and running
local tenants = redis.call('HKEYS', TENANT_DEPTH)
for t = 1, math.min(#tenants, max_tenants) do
  local tenant = tenants[t]
  local pending_index, running_index = state_index(tenant, '1'), state_index(tenant, '2')
  for _, task_type in ipairs(types) do
    local of_type = type_index(tenant, task_type)
    local pending = redis.call('ZINTERCARD', 2, pending_index, of_type)
    local running = redis.call('ZINTERCARD', 2, running_index, of_type)
    if pending > 0 or running > 0 then
      local g = gauge(task_type, tenant)
      g[3], g[5] = pending, running
    end
  end
end

-- due: in turn, then parked
for _, task_type in ipairs(types) do
  for _, prio in ipairs(redis.call('ZRANGE', fair_key(task_type), 0, -1)) do
    for _, tenant in ipairs(redis.call('ZRANGE', tenants_key(task_type, prio), 0, max_tenants - 1)) do
      for _, key in ipairs(redis.call('ZRANGE', keys_key(task_type, prio, tenant), 0, max_tenants - 1)) do
        count_fifo(task_type, prio, tenant, key)
      end
    end
  end
  local parked = redis.call('SRANDMEMBER', parked_key(task_type), max_tenants)
  for _, group in ipairs(parked) do
    local length, rest = string.match(group, '^(%d+):(.*)$')
    length = tonumber(length)
    local tenant, key = string.sub(rest, 1, length), string.sub(rest, length + 1)
    for _, prio in ipairs(redis.call('SMEMBERS', parked_prios_key(task_type, group))) do
      count_fifo(task_type, prio, tenant, key)
    end
  end
end

-- due: delayed tasks whose time came, not yet queued by a claim
local late = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, max_tenants)
for i = 1, #late, 2 do
  local f = redis.call('HMGET', task_key(string.sub(late[i], 17)), 'state', 'type', 'tenant')
  if f[1] == '1' then add_due(gauge(f[2], f[3] or ''), 1, tonumber(late[i + 1])) end
end

local reply = {}
for _, g in ipairs(order) do
  reply[#reply + 1] = g[1]
  reply[#reply + 1] = g[2]
  reply[#reply + 1] = g[3]
  reply[#reply + 1] = g[4]
  reply[#reply + 1] = g[5]
  reply[#reply + 1] = g[6] and string.format('%.17g', g[6]) or ''
end
return reply
