-- Create tasks, in batches that are each accepted whole or not at all, in
-- order.
--
-- A task with dependencies waits for them (see `finish` in common.lua): it
-- is stored PENDING in no queue while one is unfinished, and CANCELLED at
-- once when one ended FAILED or CANCELLED and it does not run on failure.
--
-- ARGV: prefix, max_queue, quota per tenant (0: none), owner, then per
-- batch: now, lengths, values: 18 per task: id, type, payload, labels?,
-- max_attempts, priority, timeout?, key?, fingerprint?, scheduled_time,
-- tenant, delayed ("1"/"0"), reply_to?, concurrency_key?, depends_on (ids,
-- space-separated), depends_on_requests (0-based indexes of earlier tasks
-- of the batch, space-separated), run_on_dependency_failure ("1"/"0"),
-- traceparent?.
-- Returns per batch {"ok", per task: seq (new without dependencies),
-- -index (repeat of an earlier request of the batch, 1-based) or the stored
-- record (a repeat of a stored task, or new with dependencies)},
-- {"conflict", key, id or ""}, {"unknown", task index, position, id} (a
-- dependency that is no task of the tenant; 0-based), {"full", depth} or
-- {"quota", tenant, its depth}.

local replayed = replay() if replayed then return replayed end
local max_queue, quota, owner = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]

-- The unfinished tasks (pending and running), once a batch needed them.
local unfinished_known = nil

-- Values per task.
local N = 18

-- The first id of task `i`'s depends_on that is no task of its tenant, as
-- {"unknown", ...}; nil when all are.
local function unknown_dependency(i, ids, tenant)
  local position = 0
  for id in string.gmatch(ids, '%S+') do
    local found = redis.call('HMGET', task_key(id), 'state', 'tenant')
    if not found[1] or (found[2] or '') ~= tenant then return {'unknown', i - 1, position, id} end
    position = position + 1
  end
  return nil
end

-- The ids task `i` depends on, in order, once each: its depends_on, then
-- the ids the tasks of its depends_on_requests got.
local function dependencies(v, plan, base)
  local ids, seen = {}, {}
  local function add(id)
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
    end
  end
  for id in string.gmatch(v[base + 14], '%S+') do add(id) end
  for index in string.gmatch(v[base + 15], '%d+') do
    local j = tonumber(index) + 1
    local p = plan[j]
    if type(p) == 'number' then j = p end
    if type(p) == 'string' then add(p) else add(v[1 + (j - 1) * N]) end
  end
  return ids
end

-- How the new task `id` stands with its dependencies: {dependency, state}
-- of the first that ended without letting it run, or nil and how many are
-- unfinished (each lists `id` among its dependents).
local function wait_for(id, ids, run_on_failure)
  local unfinished = {}
  for _, dependency in ipairs(ids) do
    local state = redis.call('HGET', task_key(dependency), 'state')
    if state == '1' or state == '2' then
      unfinished[#unfinished + 1] = dependency
    elseif state and not lets_run(state, run_on_failure) then
      return {dependency, state}, 0
    end
  end
  for _, dependency in ipairs(unfinished) do
    redis.call('SADD', dependents_key(dependency), id)
  end
  return nil, #unfinished
end

local function create(now_s, v)
  local count = #v / N
  local plan, in_batch, fresh = {}, {}, 0
  for i = 1, count do
    local base = 1 + (i - 1) * N
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
        if v[1 + (first - 1) * N + 8] ~= v[base + 8] then
          return {'conflict', key, ''}
        end
        plan[i] = first
      else
        in_batch[slot] = i
        plan[i] = false
        fresh = fresh + 1
      end
    end
    if plan[i] == false then
      local unknown = unknown_dependency(i, v[base + 14], v[base + 10])
      if unknown then return unknown end
    end
  end
  if fresh > 0 then
    -- Read once per call; each accepted batch adds its new tasks.
    unfinished_known = unfinished_known or depth()
    local unfinished = unfinished_known
    if unfinished + fresh > max_queue then return {'full', unfinished} end
    if quota > 0 then
      local wanted, order = {}, {}
      for i = 1, count do
        if plan[i] == false then
          local tenant = v[1 + (i - 1) * N + 10]
          if not wanted[tenant] then order[#order + 1] = tenant end
          wanted[tenant] = (wanted[tenant] or 0) + 1
        end
      end
      local tenant, current = over_quota(wanted, order, quota)
      if tenant then return {'quota', tenant, current} end
    end
    unfinished_known = unfinished_known + fresh
  end
  local seq = fresh > 0 and redis.call('INCRBY', P .. ':seq', fresh) - fresh or 0
  -- The first tasks ever stored: the indexes hold every task from the start.
  if seq == 0 and fresh > 0 then redis.call('SET', INDEX_VERSION, '1') end
  reserve_tickets(fresh)
  local out = {}
  for i = 1, count do
    local base = 1 + (i - 1) * N
    local p = plan[i]
    if p == false then
      seq = seq + 1
      local id, tenant = v[base], v[base + 10]
      local ids = dependencies(v, plan, base)
      local failed, waiting = nil, 0
      if #ids > 0 then failed, waiting = wait_for(id, ids, v[base + 16]) end
      local state = failed and '5' or '1'
      local fields = {'id', id, 'type', v[base + 1], 'state', state, 'payload', v[base + 2],
        'max_attempts', v[base + 4], 'priority', v[base + 5], 'create_time', now_s,
        'scheduled_time', v[base + 9], 'update_time', now_s, 'attempt', 0, 'version', 1,
        'seq', seq, 'tenant', tenant, 'cancel_requested', 0}
      local function field(name, value)
        if value then
          fields[#fields + 1] = name
          fields[#fields + 1] = value
        end
      end
      local labels, reply_to = opt(v[base + 3]), opt(v[base + 12])
      local idempotency_key = opt(v[base + 7])
      field('labels', labels)
      field('reply_to', reply_to)
      field('timeout', opt(v[base + 6]))
      field('fingerprint', opt(v[base + 8]))
      field('concurrency_key', opt(v[base + 13]))
      field('traceparent', opt(v[base + 17]))
      if idempotency_key then
        field('idempotency_key', idempotency_key)
        redis.call('HSET', IDEMPOTENCY, tenant .. '\0' .. idempotency_key, id)
      end
      if #ids > 0 then
        field('depends_on', table.concat(ids, ' '))
        if v[base + 16] == '1' then field('run_on_dependency_failure', '1') end
      end
      if failed then
        field('end_time', now_s)
        field('error_code', 'DEPENDENCY_FAILED')
        field('error_message', dependency_failed(failed[1], failed[2]))
        field('error_type', '')
        redis.call('ZADD', FINISHED, ticket(), id)
      elseif waiting > 0 then
        field('waiting', tostring(waiting))
      elseif v[base + 11] == '1' then
        local member = ready_member(seq, id)
        field('queued', member)
        redis.call('ZADD', DELAYED, v[base + 9], member)
      else
        local member = ready_member(ticket(), id)
        field('queued', member)
        queue_ready(v[base + 1], v[base + 5], tenant, opt(v[base + 13]), member)
      end
      redis.call('HSET', task_key(id), unpack(fields))
      event(id, 1, reply_to)
      index_task(tenant, v[base + 1], labels, state, seq, id)
      if state == '1' then
        count_tenant(tenant, 1)
        count_created(v[base + 1])
      end
      out[i] = #ids > 0 and record(task_key(id)) or seq
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
return answer(replies)
