-- How a claim works, shared by the claim and settle scripts: move due
-- delayed tasks to their type's queue, then claim up to `limit` tasks of
-- the worker's types: the best across those queues by score (priority),
-- then member (queue order). Other types' queues are not read.

-- `types` is a list of task types; returns the claimed records.
local function claim_due(now_s, limit, lease, owner, types)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now_s, 'LIMIT', 0, 1000)
  if #due > 0 then redis.call('ZREM', DELAYED, unpack(due)) end
  for _, member in ipairs(due) do
    local id = string.sub(member, 17)
    local key = task_key(id)
    local fields = redis.call('HMGET', key, 'state', 'priority', 'type')
    if fields[1] == '1' then
      local ready = ready_member(ticket(), id)
      queue_ready(fields[3], fields[2], ready)
      redis.call('HSET', key, 'queued', ready)
    end
  end
  -- {score, member, type} of the tasks to claim, best first.
  local chosen = {}
  if limit > 0 then
    for _, task_type in ipairs(types) do
      local head = redis.call('ZRANGE', ready_key(task_type), 0, limit - 1, 'WITHSCORES')
      for j = 1, #head, 2 do
        chosen[#chosen + 1] = {tonumber(head[j + 1]), head[j], task_type}
      end
    end
    if #types > 1 then
      table.sort(chosen, function(a, b)
        if a[1] ~= b[1] then return a[1] < b[1] end
        return a[2] < b[2]
      end)
    end
  end
  local claimed, touched = {}, {}
  local expiry = tonumber(now_s) + lease
  for i = 1, math.min(limit, #chosen) do
    local c = chosen[i]
    redis.call('ZREM', ready_key(c[3]), c[2])
    touched[c[3]] = true
    local e = open(string.sub(c[2], 17))
    if e.r[F.state] == '1' then
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
      claimed[#claimed + 1] = save(e)
    end
  end
  for task_type in pairs(touched) do ready_left(task_type) end
  return claimed
end

-- The due time of the earliest delayed task, or false.
local function earliest_delayed()
  local earliest = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
  return earliest[2] or false
end
