#!lua
-- LEDGER_FOLD: add day buckets of the ledger into the account's total, each day once: the
-- total's `@folded` field names the last day added, and days up to it are skipped, so a fold
-- repeated by another replica (or after a crash) adds nothing twice.
-- KEYS: 1 the total, then one day bucket per day, oldest first.
-- ARGV: the days (days since the epoch), in KEYS' order.
-- Returns how many days were added.
local folded = tonumber(redis.call('HGET', KEYS[1], '@folded') or '') or -1
local added = 0
for i, day in ipairs(ARGV) do
  local d = tonumber(day)
  if d > folded then
    local bucket = KEYS[i + 1]
    if redis.call('TYPE', bucket).ok == 'hash' then
      local kv = redis.call('HGETALL', bucket)
      for j = 1, #kv, 2 do
        local n = tonumber(kv[j + 1])
        if n and n == math.floor(n) and n ~= 0 then redis.call('HINCRBY', KEYS[1], kv[j], n) end
      end
    end
    folded = d
    added = added + 1
  end
end
redis.call('HSET', KEYS[1], '@folded', string.format('%d', folded))
return added
