-- Claim up to `limit` due tasks of the worker's types (see claiming.lua).
--
-- ARGV: prefix, now, limit, lease_seconds, owner, then the task types.
-- Returns {the claimed records, the due time of the earliest delayed task or
-- false}.

local replayed = replay() if replayed then return replayed end
local now_s, limit, lease, owner = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local claimed = claim_due(now_s, limit, lease, owner, {unpack(ARGV, 6)})
notify(owner)
return answer({claimed, earliest_delayed()})
