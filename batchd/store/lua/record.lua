#!lua
-- RECORD: the created (or adopted) batch id. Idempotent for the same id.
-- KEYS: 1 the assembly, 2 the open-intent pointer, 3 the batch's index key, 4 the account's
--       batches (sorted by creation), 5 the live-assembly index, 6 the account's counters.
-- ARGV: 1 assembly id, 2 batch id, 3 first poll due (ms from now), 4 retention (ms),
--       5 results_url or ''.
-- Returns {1, id} when recorded now, {2, id} when it already was, {-1, other id} when the
-- assembly holds a different batch.
local ak, asm, bid = KEYS[1], ARGV[1], ARGV[2]
local cur = redis.call('HGET', ak, 'bid')
if cur == bid then return {2, bid} end
if cur then return {-1, cur} end
local now = now_ms()
redis.call('HSET', ak, 'bid', bid, 'st', 'submitted', 'submitted', now, 'polls', 0)
redis.call('HDEL', ak, 'intent', 'ifence', 'iunsure', 'iposted')
if ARGV[5] ~= '' then redis.call('HSET', ak, 'rurl', ARGV[5]) end
if redis.call('GET', KEYS[2]) == asm then redis.call('DEL', KEYS[2]) end
redis.call('SET', KEYS[3], asm)
redis.call('ZADD', KEYS[4], now, asm)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[4]))
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[3]), asm)
redis.call('HINCRBY', KEYS[6], 'batches_created', 1)
return {1, bid}
