#!lua
-- PURGE_DEAD: forget a dead request's letter and params; its `dead` result stays readable until
-- its retention ends.
-- KEYS: 1 the account's counters, 2 the dead set, 3 its params, 4 its dead letter.
-- ARGV: 1 request id. Returns 1 when it was a dead letter, else 0.
local was = redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4])
if was == 1 then redis.call('HINCRBY', KEYS[1], 'purged_dead', 1) end
return was
