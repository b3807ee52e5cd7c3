-- Extend the leases of running attempts.
--
-- ARGV: prefix, now, lease_seconds, then id, claim pairs.
-- Returns {lost ids, ids with a cancel request}.

local expiry = tonumber(ARGV[2]) + tonumber(ARGV[3])
local lost, cancel = {}, {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local current = redis.call('HMGET', task_key(id), 'state', 'claim', 'cancel_requested', 'attempt')
  if current[1] == '2' and claim_of(current[2], current[4]) == ARGV[i + 1] then
    redis.call('ZADD', RUNNING, 'XX', expiry, id)
    if current[3] == '1' then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
return {lost, cancel}
