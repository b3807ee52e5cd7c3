-- Claim up to `limit` due tasks of the worker's types (see claiming.lua).
--
-- ARGV: prefix, now, limit, lease_seconds, owner, then the task types.
-- Returns {the claimed records, when a claim may next find work (see
-- next_due in claiming.lua) or false}.

local replayed = replay() if replayed then return replayed end
local now_s, limit, lease, owner = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local claimed, token_due = claim_due(now_s, limit, lease, owner, {unpack(ARGV, 6)})
notify(owner)
return answer({claimed, next_due(token_due)})
