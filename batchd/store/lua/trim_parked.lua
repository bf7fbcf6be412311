#!lua
-- TRIM_PARKED: drop the head of the parked list once its entries are on their queues; entries
-- of queues that refused them again stay at the head, in their order.
-- KEYS: 1 the parked list. ARGV: 1 how many entries were read, then the refusing queues' names.
-- Returns how many entries were dropped.
local n = tonumber(ARGV[1])
local refused = {}
for i = 2, #ARGV do refused[ARGV[i]] = true end
local head = redis.call('LRANGE', KEYS[1], 0, n - 1)
local keep = {}
for _, e in ipairs(head) do
  local queue = string.match(e, '^%d+ %S+ (%S+)$')
  if queue and refused[queue] then keep[#keep + 1] = e end
end
redis.call('LTRIM', KEYS[1], #head, -1)
for i = #keep, 1, -1 do redis.call('LPUSH', KEYS[1], keep[i]) end
return #head - #keep
