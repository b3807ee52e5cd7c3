-- How a claim works, shared by the claim and settle scripts: move due
-- delayed tasks to their queues, then claim up to `limit` tasks of the
-- worker's types within each type's limits (paused, max_running, its
-- token bucket, max_running_per_key): each time the best of the types'
-- fair heads (see fair.lua) by priority, then by the order they became
-- due. Other types' queues are not read.

-- Move the delayed tasks due by `now_s` to their queues.
local function queue_due(now_s)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now_s, 'LIMIT', 0, 1000)
  if #due > 0 then redis.call('ZREM', DELAYED, unpack(due)) end
  for _, member in ipairs(due) do
    local id = string.sub(member, 17)
    local key = task_key(id)
    local f = redis.call('HMGET', key, 'state', 'priority', 'type', 'tenant', 'concurrency_key')
    if f[1] == '1' then
      local ready = ready_member(ticket(), id)
      queue_ready(f[3], f[2], f[4], f[5], ready)
      redis.call('HSET', key, 'queued', ready)
    end
  end
end

-- How many tasks of a type its limits let a claim start now, and the
-- tokens in its bucket (0 when it has none).
local function room_of(task_type, now)
  local l = limits_of(task_type)
  if l.paused then return 0, 0 end
  local room, tokens = math.huge, 0
  if l.max_running > 0 then room = l.max_running - tallied(TYPE_TASKS, 'r:' .. task_type) end
  if l.rate > 0 then
    tokens = tokens_at(l, now)
    room = math.min(room, math.floor(tokens))
  end
  return math.max(0, room), tokens
end

local function key_running(task_type, tenant, key)
  return tallied(key_running_key(task_type), group_of(tenant, key))
end

-- The next task of a type in fair order: {prio, tenant, key, member, alone
-- (no other tenant or key is in turn at that priority)}, or false. Parks
-- the key groups at their limit it meets on the way.
local function fair_head(task_type, l)
  local fair = fair_key(task_type)
  while true do
    local prio = redis.call('ZRANGE', fair, 0, 0)[1]
    if not prio then return false end
    local tenants = redis.call('ZRANGE', tenants_key(task_type, prio), 0, 1)
    local tenant = tenants[1]
    local keys = redis.call('ZRANGE', keys_key(task_type, prio, tenant), 0, 1)
    local key = keys[1]
    if key ~= '' and l.per_key > 0 and key_running(task_type, tenant, key) >= l.per_key then
      park(task_type, prio, tenant, key)
    else
      local member = redis.call('ZRANGE', fifo_key(task_type, prio, tenant, key), 0, 0)[1]
      return {prio = prio, tenant = tenant, key = key, member = member,
        alone = #tenants == 1 and #keys == 1}
    end
  end
end

-- Whether head `a` goes before head `b`: higher priority, then due first.
local function before(a, b)
  if a.prio ~= b.prio then return tonumber(a.prio) > tonumber(b.prio) end
  return a.member < b.member
end

-- After tasks of a head's key group were claimed: the group and its tenant
-- go to the back of their rotations; the group leaves them once empty, or
-- is parked once at its key's limit.
local function served(task_type, head, l)
  local prio, tenant, key = head.prio, head.tenant, head.key
  local turn = ticket()
  if not ready_left(task_type, prio, tenant, key) then
    if key ~= '' and l.per_key > 0 and key_running(task_type, tenant, key) >= l.per_key then
      park(task_type, prio, tenant, key)
    else
      redis.call('ZADD', keys_key(task_type, prio, tenant), 'XX', turn, key)
    end
  end
  redis.call('ZADD', tenants_key(task_type, prio), 'XX', turn, tenant)
end

-- Start an attempt of a queued task; nil if it is not pending (never
-- expected: a task leaves its queue when it leaves PENDING).
local function start(id, now_s, expiry, owner)
  local e = open(id)
  if e.r[F.state] ~= '1' then return nil end
  set_state(e, '2')
  put(e, 'attempt', tostring(tonumber(e.r[F.attempt]) + 1))
  put(e, 'claim', tostring(tonumber(e.r[F.claim]) + 1))
  put(e, 'start_time', now_s)
  put(e, 'owner', owner)
  for _, name in ipairs({'queued', 'progress_percent', 'progress_message',
      'progress_current', 'progress_total'}) do
    remove(e, name)
  end
  bump(e, now_s)
  redis.call('ZADD', RUNNING, expiry, e.id)
  return save(e)
end

-- Take the tokens a claim spent from the buckets of `types`, and note when
-- the next token of a type with due tasks and an empty bucket arrives (in
-- TOKEN_DUE, for the next_due_time of every process); returns the
-- earliest such time, or false.
local function spend_tokens(now, types, tokens, started)
  local earliest = false
  for _, task_type in ipairs(types) do
    local l = limits_of(task_type)
    if l.rate > 0 and not l.paused then
      local left = tokens[task_type] - started[task_type]
      if started[task_type] > 0 then
        redis.call('HSET', limits_key(task_type), 'tokens', string.format('%.17g', left),
          'tokens_at', string.format('%.17g', now))
      end
      if left < 1 and redis.call('EXISTS', fair_key(task_type)) == 1 then
        local at = now + (1 - left) / l.rate
        redis.call('ZADD', TOKEN_DUE, at, task_type)
        if not earliest or at < earliest then earliest = at end
      else
        redis.call('ZREM', TOKEN_DUE, task_type)
      end
    end
  end
  return earliest
end

-- `types` is a list of task types; returns the claimed records, and when
-- the next token of one of the types arrives (or false) if that holds due
-- tasks back.
local function claim_due(now_s, limit, lease, owner, types)
  -- A turn for each task claimed, and a ticket for each due delayed task
  -- (most calls move none): reserved in one call.
  reserve_tickets(limit)
  queue_due(now_s)
  local now = tonumber(now_s)
  local claimed, rooms, tokens, started, heads = {}, {}, {}, {}, {}
  for _, task_type in ipairs(types) do
    rooms[task_type], tokens[task_type] = room_of(task_type, now)
    started[task_type] = 0
  end
  local expiry = now + lease
  while #claimed < limit do
    local best, best_type, candidates = nil, nil, 0
    for _, task_type in ipairs(types) do
      if rooms[task_type] > 0 then
        if heads[task_type] == nil then
          heads[task_type] = fair_head(task_type, limits_of(task_type))
        end
        local head = heads[task_type]
        if head then
          candidates = candidates + 1
          if not best or before(head, best) then best, best_type = head, task_type end
        end
      end
    end
    if not best then break end
    local l = limits_of(best_type)
    local members = {best.member}
    -- A group alone in turn, of the only type with due tasks, is served
    -- again and again: take its run in one read.
    if best.alone and candidates == 1 then
      local count = math.min(limit - #claimed, rooms[best_type])
      if best.key ~= '' and l.per_key > 0 then
        count = math.min(count, l.per_key - key_running(best_type, best.tenant, best.key))
      end
      if count > 1 then
        members = redis.call('ZRANGE', fifo_key(best_type, best.prio, best.tenant, best.key),
          0, count - 1)
      end
    end
    redis.call('ZREM', fifo_key(best_type, best.prio, best.tenant, best.key), unpack(members))
    for _, member in ipairs(members) do
      local record = start(string.sub(member, 17), now_s, expiry, owner)
      if record then claimed[#claimed + 1] = record end
    end
    served(best_type, best, l)
    rooms[best_type] = rooms[best_type] - #members
    started[best_type] = started[best_type] + #members
    heads[best_type] = nil
  end
  return claimed, spend_tokens(now, types, tokens, started)
end

-- When a claim of these types may next find work: the due time of the
-- earliest delayed task, or `token_due`, whichever is first; false when
-- neither.
local function next_due(token_due)
  local earliest = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')[2]
  if token_due and (not earliest or token_due < tonumber(earliest)) then
    return string.format('%.17g', token_due)
  end
  return earliest or false
end
