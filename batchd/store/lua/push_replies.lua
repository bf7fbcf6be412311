#!lua
-- PUSH_REPLIES: deliver outbox entries of one account onto one reply queue, each at most once:
-- the queue's cursor remembers the last sequence number pushed from that account, and entries
-- come in sequence order, so an entry pushed before (by a drain that crashed before trimming the
-- outbox, or by a concurrent one) is skipped.
-- Parked entries (ones a queue refused) are pushed later from their own list, in their own order,
-- under the cursor field `p:<account>`.
-- KEYS: 1 the reply queue, 2 its cursor. ARGV: 1 cursor field, then pairs: sequence number,
-- envelope.
-- Returns how many were pushed.
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local items, last = {}, cur
for i = 2, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    items[#items + 1] = ARGV[i + 1]
    last = seq
  end
end
for i = 1, #items, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(items, i, math.min(i + 999, #items)))
end
if last > cur then redis.call('HSET', KEYS[2], ARGV[1], last) end
return #items
