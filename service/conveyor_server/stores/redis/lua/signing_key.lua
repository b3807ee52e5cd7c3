-- ARGV: prefix, a fresh secret.
-- Returns the secret, the first one ever set.

redis.call('SET', P .. ':signing_key', ARGV[2], 'NX')
return redis.call('GET', P .. ':signing_key')
