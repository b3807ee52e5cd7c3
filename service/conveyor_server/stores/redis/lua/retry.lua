-- Queue a failed or cancelled task again, from its first attempt.
--
-- ARGV: prefix, now, id, tenant, max_queue, quota per tenant (0: none).
-- Returns {"none"}, {"ok", record}, {"invalid", record}, {"full", depth} or
-- {"quota", tenant, its depth}.

local replayed = replay() if replayed then return replayed end
local now_s, tenant = ARGV[2], ARGV[4]
local e = open(ARGV[3])
local state = e.r[F.state]
if not state or e.r[F.tenant] ~= tenant then return answer({'none'}) end
if state ~= '4' and state ~= '5' then return answer({'invalid', e.r}) end
local unfinished = depth()
if unfinished + 1 > tonumber(ARGV[5]) then return answer({'full', unfinished}) end
local quota = tonumber(ARGV[6])
if quota > 0 and tenant_depth(tenant) + 1 > quota then
  return answer({'quota', tenant, tenant_depth(tenant)})
end
count_tenant(tenant, 1)
redis.call('ZREM', FINISHED, e.id)
-- Attempts start again; the claim number does not (see requeue.lua).
put(e, 'claim', e.r[F.claim])
put(e, 'attempt', '0')
put(e, 'cancel_requested', '0')
-- Queued at once, whatever its dependencies.
if e.r[F.waiting] ~= '0' then put(e, 'waiting', '0') end
for _, name in ipairs({'result', 'error_code', 'error_message', 'error_type',
    'progress_percent', 'progress_message', 'progress_current', 'progress_total',
    'start_time', 'end_time'}) do
  remove(e, name)
end
make_pending(e, now_s, now_s)
notify()
return answer({'ok', save(e)})
