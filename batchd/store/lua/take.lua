#!lua flags=allow-oom
-- TAKE: acknowledge the replies a consumer has finished with and take up to N more, in one round
-- trip. Allowed when Redis is out of memory: reading and acknowledging replies is what frees it.
-- KEYS: 1 the reply queue, 2 the consumer's in-flight list, 3 the queue's consumer registry.
-- ARGV: 1 how many to take, 2 consumer name, then the envelopes finished with.
-- The acknowledged ones are removed scanning from the in-flight list's tail, where the oldest
-- taken items are (one LREM with a negative count each: they are found at once). Then up to N
-- of the oldest replies move to the in-flight list (newest at its head, as BLMOVE leaves them)
-- and are returned, oldest first.
for i = 3, #ARGV do redis.call('LREM', KEYS[2], -1, ARGV[i]) end
redis.call('HSET', KEYS[3], ARGV[2], redis.call('TIME')[1])
local items = redis.call('RPOP', KEYS[1], tonumber(ARGV[1]))
if not items then return {} end
redis.call('LPUSH', KEYS[2], unpack(items))
return items
