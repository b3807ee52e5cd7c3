-- One page of a tenant's tasks, newest first, examining at most LIST_SCAN
-- tasks per call (replaced at import by scripts.LIST_SCAN), so that one call
-- holds Redis briefly.
--
-- It examines the smallest of the tenant's list indexes the filter names
-- (its type's, one of its labels', or its states' together), or every task
-- of the tenant when the filter names none or the indexes are not built
-- yet (see index.lua); each task examined is checked against the whole
-- filter.
--
-- ARGV: prefix, tenant, before ("+inf" or "(<seq>"), want, states (digits,
-- "" for any), type ("" for any), labels (JSON [[k, v], ...], "" for none),
-- created after (inclusive) and created before (exclusive), "" for no bound.
-- Returns {matching records (at most `want`), seq to continue before, or
-- nil when the tenant's tasks are exhausted}.

local tenant, before = ARGV[2], ARGV[3]
local want, states, task_type = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local wanted = ARGV[7] ~= '' and cjson.decode(ARGV[7]) or nil
local created_after, created_before = tonumber(ARGV[8]), tonumber(ARGV[9])

-- The indexes to scan: the fewest tasks to examine.
local sources = {all_index(tenant)}
if redis.call('EXISTS', INDEX_VERSION) == 1 then
  local fewest = redis.call('ZCARD', sources[1])
  local function consider(keys)
    local size = 0
    for _, key in ipairs(keys) do size = size + redis.call('ZCARD', key) end
    if size < fewest then sources, fewest = keys, size end
  end
  if task_type ~= '' then consider({type_index(tenant, task_type)}) end
  for _, pair in ipairs(wanted or {}) do consider({label_index(tenant, pair[1], pair[2])}) end
  if states ~= '' then
    local keys = {}
    for state in string.gmatch(states, '%d') do keys[#keys + 1] = state_index(tenant, state) end
    consider(keys)
  end
end

-- Up to LIST_SCAN (id, seq) pairs before `before`, newest first, across
-- the sources, and whether they are all the sources hold there. Each
-- source gives its newest LIST_SCAN; of those together, the newest
-- LIST_SCAN hold every task of the sources down to the last of them.
local scanned, exhausted
if #sources == 1 then
  scanned = redis.call('ZREVRANGEBYSCORE', sources[1], before, '-inf',
    'WITHSCORES', 'LIMIT', 0, LIST_SCAN)
  exhausted = #scanned < 2 * LIST_SCAN
else
  local merged = {}
  exhausted = true
  for _, key in ipairs(sources) do
    local part = redis.call('ZREVRANGEBYSCORE', key, before, '-inf',
      'WITHSCORES', 'LIMIT', 0, LIST_SCAN)
    if #part == 2 * LIST_SCAN then exhausted = false end
    for i = 1, #part, 2 do merged[#merged + 1] = {tonumber(part[i + 1]), part[i], part[i + 1]} end
  end
  table.sort(merged, function(a, b) return a[1] > b[1] end)
  if #merged > LIST_SCAN then exhausted = false end
  scanned = {}
  for i = 1, math.min(#merged, LIST_SCAN) do
    scanned[#scanned + 1] = merged[i][2]
    scanned[#scanned + 1] = merged[i][3]
  end
end

local found = {}
for i = 1, #scanned, 2 do
  local key = task_key(scanned[i])
  local fields = redis.call('HMGET', key, 'state', 'type', 'labels', 'create_time')
  local match = fields[1] and (states == '' or string.find(states, fields[1], 1, true) ~= nil)
    and (task_type == '' or fields[2] == task_type)
  if match and (created_after or created_before) then
    local created = tonumber(fields[4])
    match = (not created_after or created >= created_after)
      and (not created_before or created < created_before)
  end
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
if exhausted then return {found, false} end
return {found, scanned[#scanned]}
