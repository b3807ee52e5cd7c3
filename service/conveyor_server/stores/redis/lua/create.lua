-- Create tasks, in batches that are each accepted whole or not at all, in
-- order.
--
-- ARGV: prefix, max_queue, quota per tenant (0: none), owner, then per
-- batch: now, lengths, values: 14 per task: id, type, payload, labels?,
-- max_attempts, priority, timeout?, key?, fingerprint?, scheduled_time,
-- tenant, delayed ("1"/"0"), reply_to?, concurrency_key?.
-- Returns per batch {"ok", per task: seq (new), -index (repeat of an earlier
-- request of the batch, 1-based) or the stored record}, {"conflict", key,
-- id or ""}, {"full", depth} or {"quota", tenant, its depth}.

local replayed = replay() if replayed then return replayed end
local max_queue, quota, owner = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]

-- The unfinished tasks (pending and running), once a batch needed them.
local unfinished_known = nil

local function create(now_s, v)
  local count = #v / 14
  local plan, in_batch, fresh = {}, {}, 0
  for i = 1, count do
    local base = 1 + (i - 1) * 14
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
        if v[1 + (first - 1) * 14 + 8] ~= v[base + 8] then
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
    -- Read once per call; each accepted batch adds its new tasks.
    unfinished_known = unfinished_known or depth()
    local unfinished = unfinished_known
    if unfinished + fresh > max_queue then return {'full', unfinished} end
    if quota > 0 then
      local wanted, order = {}, {}
      for i = 1, count do
        if plan[i] == false then
          local tenant = v[1 + (i - 1) * 14 + 10]
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
    local base = 1 + (i - 1) * 14
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
      local reply_to, concurrency_key = opt(v[base + 12]), opt(v[base + 13])
      if labels then fields[#fields + 1] = 'labels'; fields[#fields + 1] = labels end
      if reply_to then fields[#fields + 1] = 'reply_to'; fields[#fields + 1] = reply_to end
      if concurrency_key then
        fields[#fields + 1] = 'concurrency_key'
        fields[#fields + 1] = concurrency_key
      end
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
        member = ready_member(ticket(), id)
        queue_ready(v[base + 1], v[base + 5], tenant, concurrency_key, member)
      end
      fields[#fields + 1] = 'queued'
      fields[#fields + 1] = member
      redis.call('HSET', task_key(id), unpack(fields))
      event(id, 1, reply_to)
      index_task(tenant, v[base + 1], labels, '1', seq, id)
      count_tenant(tenant, 1)
      count_created(v[base + 1])
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
return answer(replies)
