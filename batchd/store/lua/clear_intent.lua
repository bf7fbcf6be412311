#!lua
-- CLEAR_INTENT: withdraw an intent whose POST certainly created nothing, only while this fence
-- holds the create lock.
-- KEYS: 1 the create lock, 2 the assembly, 3 the open-intent pointer.
-- ARGV: 1 fence, 2 assembly id. Returns 1, or 0 when nothing was done.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'bid') then return 0 end
redis.call('HDEL', KEYS[2], 'intent', 'ifence', 'iunsure', 'iposted')
redis.call('HSET', KEYS[2], 'st', 'sealed')
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
return 1
