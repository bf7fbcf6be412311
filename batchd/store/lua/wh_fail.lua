#!lua
-- WH_FAIL: a failed attempt: count it, then either schedule the next one or end the delivery.
-- Applies only while the caller still holds the lease, so a late answer from a sender whose
-- lease ran out cannot overwrite what the next holder did.
-- KEYS: 1 the delivery, 2 the due set, 3 the dead set, 4 the gone-endpoints hash.
-- ARGV: 1 token, 2 claim id, 3 delay until the next attempt (ms) or '' to end it, 4 end state
--       ('dead' or 'gone'), 5 HTTP status or '', 6 error text, 7 retention (ms), 8 callback URL
--       (marked gone when ARGV[4] is 'gone').
-- Returns 1 (rescheduled), 2 (ended) or 0 (lease lost or no longer pending: nothing done).
local f = redis.call('HMGET', KEYS[1], 'state', 'lease')
if f[1] ~= 'pending' or f[2] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_status', ARGV[5], 'last_error', ARGV[6], 'last_at', now)
redis.call('HDEL', KEYS[1], 'lease')
if ARGV[3] ~= '' then
  local next_at = now + tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'next', next_at)
  redis.call('ZADD', KEYS[2], next_at, ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'ended', now)
redis.call('HDEL', KEYS[1], 'next')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[7]))
redis.call('PEXPIRE', KEYS[1], ARGV[7])
if ARGV[4] == 'gone' then redis.call('HSET', KEYS[4], ARGV[8], now) end
return 2
