-- Whether a task of the worker's types is claimable now: a delayed task
-- is due, or a type has tasks in turn and room within its limits. How a
-- process makes up for a word of new work that was lost.
--
-- ARGV: prefix, now, then the task types.
-- Returns 1 or 0.

local now_s = ARGV[2]
if #redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now_s, 'LIMIT', 0, 1) > 0 then return 1 end
for i = 3, #ARGV do
  local task_type = ARGV[i]
  if redis.call('EXISTS', fair_key(task_type)) == 1 and room_of(task_type, tonumber(now_s)) > 0 then
    return 1
  end
end
return 0
