-- ARGV: prefix, task id, attempt (0 for every one), the cursor (attempt,
-- sequence: lines after it), limit.
-- Returns {dropped, lines}: dropped as attempt, count pairs (flat), lines as
-- attempt, encoded line pairs (flat), in attempt order.

local id, only = ARGV[2], tonumber(ARGV[3])
local after_attempt, after_seq, limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local attempts = {}
for _, a in ipairs(redis.call('SMEMBERS', logs_key(id))) do
  local n = tonumber(a)
  if only == 0 or n == only then attempts[#attempts + 1] = n end
end
table.sort(attempts)
local dropped, lines, taken = {}, {}, 0
for _, n in ipairs(attempts) do
  local key = logs_key(id) .. ':' .. n
  local head = redis.call('LINDEX', key, 0)
  if head then
    local first = tonumber(string.match(head, '^%d+'))
    if first > 1 then
      dropped[#dropped + 1] = n
      dropped[#dropped + 1] = first - 1
    end
    if n >= after_attempt and taken < limit then
      local start = 0
      if n == after_attempt then start = math.max(0, after_seq - first + 1) end
      for _, line in ipairs(redis.call('LRANGE', key, start, start + limit - taken - 1)) do
        lines[#lines + 1] = n
        lines[#lines + 1] = line
        taken = taken + 1
      end
    end
  end
end
return {dropped, lines}
