-- Hand a running attempt back to the queue, as if it had not started.
--
-- ARGV: prefix, now, id, claim.
-- Returns the record, or nil when fenced (the claim no longer holds the task).

local now_s = ARGV[2]
local e = open(ARGV[3])
if e.r[F.state] ~= '2' or e.r[F.claim] ~= ARGV[4] then return false end
-- The attempt is given back; the claim number stays, so this claim's late
-- reports stay fenced after the next claim.
put(e, 'claim', e.r[F.claim])
put(e, 'attempt', tostring(tonumber(e.r[F.attempt]) - 1))
for _, name in ipairs({'start_time', 'progress_percent', 'progress_message',
    'progress_current', 'progress_total'}) do
  remove(e, name)
end
make_pending(e, now_s, now_s)
notify()
return save(e)
