-- Build the list indexes (see common.lua) of tasks stored before they
-- existed: one tenant at a time, newest first, at most INDEX_CHUNK tasks
-- per call (replaced at import by scripts.INDEX_CHUNK), so that one call
-- holds Redis briefly. Adding a task to an index it is in changes nothing,
-- and every script that changes a task keeps its entries from then on, so
-- a build beside them, or a second build, leaves the indexes right.
--
-- One process builds at a time: each call takes or renews the build lease
-- (P:list_index_build) for `lease` ms; a call that finds another's is
-- refused. Until P:list_index is set, list.lua reads every task instead.
--
-- ARGV: prefix, builder, lease (ms), then "begin"; "chunk", tenant and
-- before ("+inf" or "(<seq>"); or "end" once every tenant is done.
-- Returns {"busy"} (another process builds), {"done"} (the indexes are
-- built), or {"ok"[, after a chunk: seq to continue the tenant before, or
-- false when its tasks are all indexed]}.

local LEASE = P .. ':list_index_build'
local builder, step = ARGV[2], ARGV[4]
local holder = redis.call('GET', LEASE)
if holder and holder ~= builder then return {'busy'} end
if redis.call('EXISTS', INDEX_VERSION) == 1 then return {'done'} end
if step == 'end' or (step == 'begin' and redis.call('EXISTS', P .. ':seq') == 0) then
  -- Every tenant is done, or no task was ever stored.
  redis.call('SET', INDEX_VERSION, '1')
  redis.call('DEL', LEASE)
  return {'done'}
end
redis.call('SET', LEASE, builder, 'PX', ARGV[3])
if step == 'begin' then return {'ok'} end
local tenant = ARGV[5]
local chunk = redis.call('ZREVRANGEBYSCORE', all_index(tenant), ARGV[6], '-inf',
  'WITHSCORES', 'LIMIT', 0, INDEX_CHUNK)
for i = 1, #chunk, 2 do
  local id, seq = chunk[i], chunk[i + 1]
  local fields = redis.call('HMGET', task_key(id), 'state', 'type', 'labels')
  if fields[1] then index_task(tenant, fields[2] or '', fields[3], fields[1], seq, id) end
end
write_index()
if #chunk < 2 * INDEX_CHUNK then return {'ok', false} end
return {'ok', chunk[#chunk]}
