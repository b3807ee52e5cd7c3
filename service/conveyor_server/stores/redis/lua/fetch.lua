-- ARGV: prefix, ids.
-- Returns each record (all nil when gone).

local out = {}
for i = 2, #ARGV do out[#out + 1] = record(task_key(ARGV[i])) end
return out
