#!lua
-- RELEASE: delete a lease only while we hold it.
-- KEYS: 1 the lease. ARGV: 1 our token. Returns 1, or 0 when it is not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
