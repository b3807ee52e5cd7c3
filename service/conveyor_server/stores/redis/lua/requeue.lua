-- Hand a running attempt back to the queue, as if it had not started.
--
-- ARGV: prefix, now, id, attempt.
-- Returns the record, or nil when fenced (the attempt is no longer running).

local now_s = ARGV[2]
local e = open(ARGV[3])
if e.r[F.state] ~= '2' or e.r[F.attempt] ~= ARGV[4] then return false end
put(e, 'attempt', tostring(tonumber(e.r[F.attempt]) - 1))
for _, name in ipairs({'start_time', 'progress_percent', 'progress_message',
    'progress_current', 'progress_total'}) do
  remove(e, name)
end
make_pending(e, now_s, now_s)
notify()
return save(e)
