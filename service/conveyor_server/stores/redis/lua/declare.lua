-- Record the limits the handlers of task types declare (the last process
-- to declare wins). A type whose limits changed is told to the claims
-- (see limits_changed in fair.lua).
--
-- ARGV: prefix, now, then per type: type, max_running,
-- max_running_per_key, max_starts_per_second, burst (as scripts.limit_text
-- spells them).

local now_s = ARGV[2]
local DEFAULTS = {'d:max_running', 'd:max_running_per_key', 'd:max_starts_per_second', 'd:burst'}
for i = 3, #ARGV, 5 do
  local task_type = ARGV[i]
  local key = limits_key(task_type)
  local changed = redis.call('SADD', TYPES, task_type) == 1
  local stored = redis.call('HMGET', key, unpack(DEFAULTS))
  local fields = {'update_time', now_s}
  for j, name in ipairs(DEFAULTS) do
    if stored[j] ~= ARGV[i + j] then changed = true end
    fields[#fields + 1] = name
    fields[#fields + 1] = ARGV[i + j]
  end
  if changed then
    redis.call('HSET', key, unpack(fields))
    limits_changed(task_type)
  end
end
notify()
