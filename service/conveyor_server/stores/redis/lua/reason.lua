-- The figures of the limits that may hold a due task back (the service
-- words them; see `_reasons`).
--
-- ARGV: prefix, now, type, tenant, concurrency key ("" for none).
-- Returns {paused ("1"/"0"), max_running, running, max_running_per_key,
-- running of the key group, max_starts_per_second, tokens in the bucket},
-- each as text.

local task_type, tenant, key = ARGV[3], ARGV[4], ARGV[5]
local l = limits_of(task_type)
local key_running = 0
if key ~= '' then key_running = tallied(key_running_key(task_type), group_of(tenant, key)) end
local function text(n) return string.format('%.17g', n) end
return {l.paused and '1' or '0', text(l.max_running), text(tallied(TYPE_TASKS, 'r:' .. task_type)),
  text(l.per_key), text(key_running), text(l.rate), text(tokens_at(l, tonumber(ARGV[2])))}
