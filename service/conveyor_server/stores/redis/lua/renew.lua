-- Extend the leases of running attempts.
--
-- ARGV: prefix, now, lease_seconds, then id, attempt pairs.
-- Returns {lost ids, ids with a cancel request}.

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
