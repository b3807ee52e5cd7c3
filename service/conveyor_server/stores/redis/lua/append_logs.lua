-- ARGV: prefix, the bound of lines per attempt, then per batch: task id,
-- attempt, line count, the lines (encoded by `_logs.encode_line`, in
-- sequence order).
-- Keeps the lines of tasks that still exist, each attempt's list trimmed to
-- its bound; a batch whose numbering starts again replaces the attempt's
-- earlier lines (see `stores._logs`).

local bound = tonumber(ARGV[2])
local i = 3
while i <= #ARGV do
  local id, attempt, count = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local first, last = i + 3, i + 2 + count
  i = last + 1
  if redis.call('EXISTS', task_key(id)) == 1 then
    local key = logs_key(id) .. ':' .. attempt
    local newest = redis.call('LINDEX', key, -1)
    if newest and tonumber(string.match(newest, '^%d+')) >=
        tonumber(string.match(ARGV[first], '^%d+')) then
      redis.call('DEL', key)
    end
    redis.call('SADD', logs_key(id), attempt)
    redis.call('RPUSH', key, unpack(ARGV, first, last))
    redis.call('LTRIM', key, -bound, -1)
  end
end
return 0
