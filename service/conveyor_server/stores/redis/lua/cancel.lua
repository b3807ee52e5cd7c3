-- Cancel a task: a pending one at once, a running one by flagging it.
--
-- ARGV: prefix, now, id, tenant, retention_count.
-- Returns {"none"}, {"ok", record[, "cancelled" when a pending task was
-- cancelled now, "requested" when a running one was flagged now]}
-- or {"invalid", record}.

local replayed = replay() if replayed then return replayed end
local now_s, tenant = ARGV[2], ARGV[4]
local e = open(ARGV[3])
local state = e.r[F.state]
if not state or e.r[F.tenant] ~= tenant then return answer({'none'}) end
if state == '1' then
  finish(e, '5', now_s)
  local cancelled = save(e)
  keep_retention(tonumber(ARGV[5]))
  notify()
  return answer({'ok', cancelled, 'cancelled'})
elseif state == '2' then
  if e.r[F.cancel_requested] ~= '1' then
    put(e, 'cancel_requested', '1')
    bump(e, now_s)
    save(e)
    notify()
    redis.call('PUBLISH', P .. ':cancel', e.id)
    return answer({'ok', e.r, 'requested'})
  end
  return answer({'ok', e.r})
elseif state == '5' then
  return answer({'ok', e.r})
end
return answer({'invalid', e.r})
