#!lua
-- INTENT: write the submission intent, only while this fence holds the account's create lock
-- and no other assembly's create is unresolved (its intent stands without a batch id): one
-- unknown outcome at a time, so a batch found in the list belongs to it and no one else.
-- KEYS: 1 the create lock, 2 the open-intent pointer, 3 the assembly, 4 the assembly the caller
--       found in the pointer (any key of the account's when the pointer was empty).
-- ARGV: 1 fence, 2 assembly id, 3 the assembly id the caller found in the pointer ('' for none).
-- Returns the intent time (ms); 0 when the lock is not ours; -1 while another is unresolved;
-- -2 when the pointer changed since the caller read it (read again).
local fence, asm, seen = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', KEYS[1]) ~= fence then return 0 end
local open = redis.call('GET', KEYS[2]) or ''
if open ~= seen then return -2 end
if open ~= '' and open ~= asm then
  local o = redis.call('HMGET', KEYS[4], 'intent', 'bid')
  if o[1] and not o[2] then return -1 end
end
local now = now_ms()
redis.call('SET', KEYS[2], asm)
redis.call('HSET', KEYS[3], 'st', 'submitting', 'intent', now, 'ifence', fence)
redis.call('HDEL', KEYS[3], 'iunsure', 'iposted')
return now
