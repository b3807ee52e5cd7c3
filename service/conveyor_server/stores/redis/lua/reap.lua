-- Handle running attempts whose lease lapsed: retry or fail them.
--
-- ARGV: prefix, now, lease_margin, retention_count, owner.
-- Returns how many lapsed attempts it handled.

local now_s = ARGV[2]
local cutoff = tonumber(now_s) - tonumber(ARGV[3])
local lapsed = redis.call('ZRANGEBYSCORE', RUNNING, '-inf', '(' .. string.format('%.17g', cutoff),
  'LIMIT', 0, 1000)
local handled = 0
for _, id in ipairs(lapsed) do
  local e = open(id)
  local r = e.r
  if r[F.state] ~= '2' then
    redis.call('ZREM', RUNNING, id)
  else
    handled = handled + 1
    if r[F.cancel_requested] == '1' then
      -- Asked to stop: its worker is gone, so it has stopped.
      finish(e, '5', now_s)
    else
      put(e, 'error_code', 'INTERRUPTED')
      put(e, 'error_message',
        'attempt ' .. r[F.attempt] .. ' was interrupted: its worker stopped renewing its lease')
      put(e, 'error_type', '')
      if tonumber(r[F.attempt]) < tonumber(r[F.max_attempts]) then
        make_pending(e, now_s, now_s)
      else
        finish(e, '4', now_s)
      end
    end
    save(e)
  end
end
keep_retention(tonumber(ARGV[4]))
notify(ARGV[5])
return handled
