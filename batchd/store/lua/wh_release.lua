#!lua
-- WH_RELEASE: hand a claimed delivery back untried (its host is saturated here, or the sender
-- stops), due after a delay.
-- KEYS: 1 the delivery, 2 the due set. ARGV: 1 token, 2 claim id, 3 delay (ms).
-- Returns 1, or 0 when the lease was no longer the caller's.
local f = redis.call('HMGET', KEYS[1], 'state', 'lease')
if f[1] ~= 'pending' or f[2] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HDEL', KEYS[1], 'lease')
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
