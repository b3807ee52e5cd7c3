-- Record the progress of running attempts; an update for an attempt that is
-- no longer running is dropped.
--
-- ARGV: prefix, now, lengths, values: 6 per update: id, claim, percent,
-- message, current, total.
-- Returns nothing.

local now_s = ARGV[2]
local v = unpack_values(ARGV[3], ARGV[4])
for i = 1, #v, 6 do
  local id = v[i]
  local key = task_key(id)
  local current = redis.call('HMGET', key, 'state', 'claim', 'attempt', 'reply_to')
  if current[1] == '2' and claim_of(current[2], current[3]) == v[i + 1] then
    redis.call('HSET', key, 'progress_percent', v[i + 2], 'progress_message', v[i + 3],
      'progress_current', v[i + 4], 'progress_total', v[i + 5], 'update_time', now_s)
    event(id, redis.call('HINCRBY', key, 'version', 1), current[4])
  end
end
notify()
