#!lua
-- POSTING: note that the create's POST is about to start, while this fence holds the create
-- lock. An intent without this mark made no batch (the process stopped before sending a byte),
-- so a restart resubmits at once instead of waiting for the list to show a batch.
-- KEYS: 1 the create lock, 2 the assembly. ARGV: 1 fence.
-- Returns 1, or 0 when the lock is not ours (nothing written).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[2], 'iposted', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return 1
