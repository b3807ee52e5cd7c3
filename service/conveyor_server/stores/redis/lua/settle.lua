-- A runner's round in one call: apply how attempts ended (see
-- completing.lua), then claim up to `limit` due tasks (see claiming.lua).
-- One script instead of two halves what a busy worker costs Redis and
-- itself per round, and the round trip between them.
--
-- ARGV: prefix, now, retention_count, owner, lengths, values (12 per
-- outcome), limit, lease_seconds, then the task types.
-- Returns {the changed records, the claimed records, when a claim may next
-- find work (see next_due in claiming.lua) or false}.

local replayed = replay() if replayed then return replayed end
local now_s, retention, owner = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local ended = complete_outcomes(now_s, unpack_values(ARGV[5], ARGV[6]))
keep_retention(retention)
local claimed, token_due = claim_due(now_s, tonumber(ARGV[7]), tonumber(ARGV[8]), owner,
  {unpack(ARGV, 9)})
notify(owner)
return answer({ended, claimed, next_due(token_due)})
