#!lua flags=allow-oom
-- RESTORE: hand a consumer's unacknowledged replies back to the queue, to be read again (a
-- consumer that starts again under the same name). Allowed when Redis is out of memory.
-- KEYS: 1 the reply queue, 2 the consumer's in-flight list. ARGV: 1 how many at most.
-- Returns how many moved.
local items = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1)
if #items == 0 then return 0 end
redis.call('RPUSH', KEYS[1], unpack(items))
redis.call('LTRIM', KEYS[2], #items, -1)
return #items
