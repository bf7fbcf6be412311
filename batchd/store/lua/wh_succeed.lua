#!lua
-- WH_SUCCEED: a 2xx answer: the delivery is done. Wins over any lease: the receiver has it.
-- KEYS: 1 the delivery, 2 the due set. ARGV: 1 token, 2 retention (ms), 3 HTTP status.
-- Returns 1, or 0 when the delivery was no longer pending.
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'delivered', 'last_status', ARGV[3], 'last_at', now,
  'ended', now)
redis.call('HDEL', KEYS[1], 'lease', 'next', 'last_error')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
