#!lua
-- SEAL: an assembly's body length becomes fixed and its submission is due now.
-- KEYS: 1 the assembly, 2 its entries, 3 the live-assembly index. ARGV: 1 assembly id.
-- Returns the body's content length, 0 when the assembly was empty (and is deleted), -1 when it
-- was not assembling.
local ak = KEYS[1]
local f = redis.call('HMGET', ak, 'st', 'cnt', 'bytes')
if f[1] ~= 'assembling' then return -1 end
local now = now_ms()
if tonumber(f[2]) == 0 then
  redis.call('DEL', ak, KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
local clen = 15 + tonumber(f[3]) + tonumber(f[2]) - 1
redis.call('HSET', ak, 'st', 'sealed', 'clen', clen, 'sealed', now)
redis.call('ZADD', KEYS[3], now, ARGV[1])
return clen
