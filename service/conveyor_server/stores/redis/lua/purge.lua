-- Delete finished tasks that ended before a time, oldest first, at most
-- PURGE_CHUNK per call (replaced at import by scripts.PURGE_CHUNK), so that
-- one call holds Redis briefly.
--
-- ARGV: prefix, finished_before.
-- Returns {purged, 1 when done}.

local before = tonumber(ARGV[2])
local oldest = redis.call('ZRANGE', FINISHED, 0, PURGE_CHUNK - 1)
local purged, done = 0, #oldest < PURGE_CHUNK
for _, id in ipairs(oldest) do
  local end_time = redis.call('HGET', task_key(id), 'end_time')
  if not end_time then
    redis.call('ZREM', FINISHED, id)
  elseif tonumber(end_time) >= before then
    done = true
    break
  else
    drop(id, false)
    purged = purged + 1
  end
end
return {purged, done and 1 or 0}
