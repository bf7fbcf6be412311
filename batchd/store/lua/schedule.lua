#!lua
-- SCHEDULE: take an overdue assembly for checking, so of several sweepers only one queues its
-- stage: its due time moves on only if it is still the one the caller saw.
-- KEYS: 1 the live-assembly index. ARGV: 1 assembly id, 2 the due time seen (ms), 3 the next.
-- Returns 1 when taken, 0 when someone else moved it (or it is gone).
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
