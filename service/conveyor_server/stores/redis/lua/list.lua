-- One page of a tenant's tasks, newest first, examining at most LIST_SCAN
-- tasks per call (replaced at import by scripts.LIST_SCAN), so that one call
-- holds Redis briefly.
--
-- ARGV: prefix, tenant, before ("+inf" or "(<seq>"), want, states (digits,
-- "" for any), type ("" for any), labels (JSON [[k, v], ...], "" for none).
-- Returns {matching records (at most `want`), seq to continue before, or
-- nil when the tenant's tasks are exhausted}.

local want, states, task_type = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local wanted = ARGV[7] ~= '' and cjson.decode(ARGV[7]) or nil
local scanned = redis.call('ZREVRANGEBYSCORE', P .. ':tasks:' .. ARGV[2], ARGV[3], '-inf',
  'WITHSCORES', 'LIMIT', 0, LIST_SCAN)
local found = {}
for i = 1, #scanned, 2 do
  local key = task_key(scanned[i])
  local fields = redis.call('HMGET', key, 'state', 'type', 'labels')
  local match = fields[1] and (states == '' or string.find(states, fields[1], 1, true) ~= nil)
    and (task_type == '' or fields[2] == task_type)
  if match and wanted then
    local labels = fields[3] and cjson.decode(fields[3]) or {}
    for _, pair in ipairs(wanted) do
      if labels[pair[1]] ~= pair[2] then
        match = false
        break
      end
    end
  end
  if match then
    found[#found + 1] = record(key)
    if #found == want then return {found, scanned[i + 1]} end
  end
end
if #scanned < 2 * LIST_SCAN then return {found, false} end
return {found, scanned[#scanned]}
