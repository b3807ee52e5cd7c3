-- Move due delayed tasks to the queue, then claim up to `limit` of the queue.
--
-- ARGV: prefix, now, limit, lease_seconds, owner.
-- Returns {the claimed records, the due time of the earliest delayed task or
-- nil}.

local replayed = replay() if replayed then return replayed end
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
end
notify(owner)
local earliest = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
return answer({claimed, earliest[2] or false})
