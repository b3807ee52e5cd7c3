-- Every read and change of the schedules: a hash per schedule, and
-- P:schedules, a zset (all scores 0) of "<tenant>\0<id>" for each, so that
-- its lexical order is (tenant, id) and one tenant's schedules are a range.
--
-- ARGV: prefix, operation, then
--   "create", tenant, id, spec, paused, create_time, update_time, fired_until:
--     1, or 0 when the tenant has a schedule of that id;
--   "get", tenant, id: the schedule, or false;
--   "list", tenant ("" for every tenant, "=" .. tenant for one): the
--     schedules, by tenant then id;
--   "replace", tenant, id, spec, paused, update_time, read_update_time: the
--     schedule after, or false when there is none or its update_time is no
--     longer read_update_time (both spelled as Python's repr of a float);
--   "advance", tenant, id, fired_until: raises fired_until, never lowers it;
--   "delete", tenant, id: 1, or 0 when there was none.
-- A schedule is {id, tenant, spec, paused ("1"/"0"), create_time,
-- update_time, fired_until}.

local SCHEDULES = P .. ':schedules'
local SCHEDULE_FIELDS = {'id', 'tenant', 'spec', 'paused', 'create_time', 'update_time',
  'fired_until'}
local function schedule_key(tenant, id)
  return P .. ':schedule:' .. #tenant .. ':' .. tenant .. ':' .. id
end
local function read(key)
  local schedule = redis.call('HMGET', key, unpack(SCHEDULE_FIELDS))
  if not schedule[1] then return false end
  return schedule
end

local operation, tenant, id = ARGV[2], ARGV[3], ARGV[4]
if operation == 'list' then
  local first, last = '-', '+'
  if tenant ~= '' then
    tenant = string.sub(tenant, 2)
    first, last = '[' .. tenant .. '\0', '(' .. tenant .. '\1'
  end
  local out = {}
  for _, member in ipairs(redis.call('ZRANGEBYLEX', SCHEDULES, first, last)) do
    local split = string.find(member, '\0', 1, true)
    local owner, name = string.sub(member, 1, split - 1), string.sub(member, split + 1)
    local schedule = read(schedule_key(owner, name))
    if schedule then out[#out + 1] = schedule end
  end
  return out
end

local key = schedule_key(tenant, id)
if operation == 'create' then
  if redis.call('EXISTS', key) == 1 then return 0 end
  redis.call('HSET', key, 'id', id, 'tenant', tenant, 'spec', ARGV[5], 'paused', ARGV[6],
    'create_time', ARGV[7], 'update_time', ARGV[8], 'fired_until', ARGV[9])
  redis.call('ZADD', SCHEDULES, 0, tenant .. '\0' .. id)
  return 1
elseif operation == 'get' then
  return read(key)
elseif operation == 'replace' then
  if redis.call('HGET', key, 'update_time') ~= ARGV[8] then return false end
  redis.call('HSET', key, 'spec', ARGV[5], 'paused', ARGV[6], 'update_time', ARGV[7])
  return read(key)
elseif operation == 'advance' then
  local current = redis.call('HGET', key, 'fired_until')
  if current and tonumber(ARGV[5]) > tonumber(current) then
    redis.call('HSET', key, 'fired_until', ARGV[5])
  end
  return 0
elseif operation == 'delete' then
  redis.call('ZREM', SCHEDULES, tenant .. '\0' .. id)
  return redis.call('DEL', key)
end
return redis.error_reply('no schedule operation ' .. operation)
