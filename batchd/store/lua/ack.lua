#!lua flags=allow-oom
-- ACK: acknowledge one reply read by a consumer.
-- KEYS: 1 the consumer's in-flight list, 2 the queue's consumer registry.
-- ARGV: 1 consumer name, 2 the envelope.
-- Returns 1 when removed, 0 when this consumer held no such reply, -1 when no consumer of that
-- name ever read this queue.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return -1 end
return redis.call('LREM', KEYS[1], -1, ARGV[2])
