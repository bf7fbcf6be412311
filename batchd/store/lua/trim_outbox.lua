#!lua
-- TRIM_OUTBOX: drop the outbox entries up to a sequence number (they are on their queues now),
-- parking those bound for queues that refused them.
-- KEYS: 1 the reply outbox, 2 the parked list.
-- ARGV: 1 the last sequence number handled, 2 how many entries at most, then the names of the
--       queues that refused their entries.
-- Returns how many entries were dropped.
local last, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local refused = {}
for i = 3, #ARGV do refused[ARGV[i]] = true end
local head = redis.call('LRANGE', KEYS[1], 0, most - 1)
local n, parked = 0, {}
for _, e in ipairs(head) do
  local seq, queue = string.match(e, '^(%d+) %S+ (%S+)$')
  if seq and tonumber(seq) > last then break end
  if queue and refused[queue] then parked[#parked + 1] = e end
  n = n + 1
end
if n > 0 then redis.call('LTRIM', KEYS[1], n, -1) end
for i = 1, #parked, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(parked, i, math.min(i + 999, #parked)))
end
return n
