-- Change a task type's settings at run time, for every process: drop
-- overrides (back to the declared default), set overrides, pause or
-- resume. The claims are told (see limits_changed in fair.lua).
--
-- ARGV: prefix, now, type, paused ("" unchanged, "1" or "0"), how many
-- limits to restore, their names, then name, value pairs to override (as
-- scripts.limit_text spells them).
-- Returns the type's settings hash, as HGETALL gives it.

local now_s, task_type, paused = ARGV[2], ARGV[3], ARGV[4]
local key = limits_key(task_type)
local restored = tonumber(ARGV[5])
for i = 6, 5 + restored do redis.call('HDEL', key, 'o:' .. ARGV[i]) end
local fields = {'update_time', now_s}
for i = 6 + restored, #ARGV, 2 do
  fields[#fields + 1] = 'o:' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
if paused == '1' then
  fields[#fields + 1] = 'paused'
  fields[#fields + 1] = '1'
elseif paused == '0' then
  redis.call('HDEL', key, 'paused')
end
redis.call('HSET', key, unpack(fields))
redis.call('SADD', TYPES, task_type)
limits_changed(task_type)
notify()
return redis.call('HGETALL', key)
