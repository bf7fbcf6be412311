#!lua
-- WH_RETRY: send a delivery again from the start (`batchd webhooks retry`): attempts reset to 0,
-- due now, out of the dead set, no expiry, and its URL no longer marked gone.
-- KEYS: 1 the delivery, 2 the due set, 3 the dead set, 4 the gone-endpoints hash.
-- ARGV: 1 token.
-- Returns the state it had ('dead', 'gone', 'delivered'), 'pending' when it was pending already
-- (left alone), or 'missing' when its record has expired.
local f = redis.call('HMGET', KEYS[1], 'state', 'url')
if not f[1] then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 'missing'
end
if f[1] == 'pending' then return 'pending' end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0, 'next', now, 'retried', now)
redis.call('HDEL', KEYS[1], 'lease', 'ended')
redis.call('PERSIST', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], now, ARGV[1])
if f[2] then redis.call('HDEL', KEYS[4], f[2]) end
return f[1]
