-- The live workers' entries; dead ones (not refreshed in time) are dropped.
--
-- ARGV: prefix, now.
-- Returns the JSON of each live entry.

local WORKERS, EXPIRY = P .. ':workers', P .. ':worker_expiry'
local dead = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', ARGV[2])
if #dead > 0 then
  redis.call('HDEL', WORKERS, unpack(dead))
  redis.call('ZREM', EXPIRY, unpack(dead))
end
local live = redis.call('ZRANGE', EXPIRY, 0, -1)
if #live == 0 then return {} end
return redis.call('HMGET', WORKERS, unpack(live))
