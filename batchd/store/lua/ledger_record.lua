#!lua
-- LEDGER_RECORD: add one usage record (a real-time call's, say) to the ledger's hour and day
-- buckets, at most once: a record whose id was counted before changes nothing.
-- KEYS: 1 the hour bucket, 2 the day bucket, 3 the record's once-key (the hour bucket again
--       when the record has no id).
-- ARGV: 1 hour bucket expiry (absolute ms), 2 day bucket expiry, 3 the once-key's lifetime
--       (ms; 0 when the record has no id), 4 the field prefix `<model>|<tag>|<lane>|`, then the
--       counts of kinds n, in, out, cw5m, cw1h, cr.
-- Returns 1 when counted, 0 when the id was counted before.
if tonumber(ARGV[3]) > 0 then
  if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[3]) then return 0 end
end
local kinds = {'n', 'in', 'out', 'cw5m', 'cw1h', 'cr'}
for i, kind in ipairs(kinds) do
  local v = tonumber(ARGV[4 + i])
  -- n, in and out always, as the fan-out writes them; the cache kinds only when used
  if v and (v > 0 or i <= 3) then
    redis.call('HINCRBY', KEYS[1], ARGV[4] .. kind, v)
    redis.call('HINCRBY', KEYS[2], ARGV[4] .. kind, v)
  end
end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
return 1
