-- Apply how attempts ended (see completing.lua).
--
-- ARGV: prefix, now, retention_count, owner, lengths, values (12 per
-- outcome).
-- Returns the changed records.

local replayed = replay() if replayed then return replayed end
local now_s, retention, owner = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local out = complete_outcomes(now_s, unpack_values(ARGV[5], ARGV[6]))
keep_retention(retention)
notify(owner)
return answer(out)
