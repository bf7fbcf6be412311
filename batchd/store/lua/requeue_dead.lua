#!lua
-- REQUEUE_DEAD: send a dead request round again from its first attempt: its record becomes a
-- pending hash again (from the dead letter), its params are kept again, and it goes to the tail
-- of its lane. Its earlier `dead` result was delivered; the next one is delivered too. Its
-- deadline, if it had one, is dropped: sent again by an operator, it is done whenever it can be.
-- KEYS: 1 the account's counters, 2 the dead set, 3 the request's record, 4 its params, 5 its
--       dead letter, 6 its done list, 7 its lane's pending list, 8 the lane's counters, 9 the
--       lane set.
-- ARGV: 1 account, 2 token, 3 the lane id the caller read from the dead letter.
-- Returns 1 when requeued, 0 when it is not a dead letter (any more), -1 when its params are
-- gone (past retention), -2 when the dead letter names another lane (read again).
local account, token, lane = ARGV[1], ARGV[2], ARGV[3]
local x = redis.call('HGETALL', KEYS[5])
if #x == 0 then return 0 end
local fields = {}
local pr, n = false, false
for i = 1, #x, 2 do
  local name, value = x[i], x[i + 1]
  if name == 'pr' then pr = value end
  if name == 'n' then n = value end
  if name ~= 'at' and name ~= 'st' and name ~= 'a' and name ~= 'eq' and name ~= 'dl' then
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
end
if pr ~= lane then return -2 end
if redis.call('EXISTS', KEYS[4]) == 0 or not n then return -1 end
local now = now_ms()
redis.call('DEL', KEYS[3], KEYS[6], KEYS[5])
fields[#fields + 1] = 'st'
fields[#fields + 1] = 'pending'
fields[#fields + 1] = 'eq'
fields[#fields + 1] = now
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('PERSIST', KEYS[4])
redis.call('RPUSH', KEYS[7], token .. ' ' .. n .. ' ' .. now)
redis.call('HINCRBY', KEYS[8], 'count', 1)
redis.call('HINCRBY', KEYS[8], 'bytes', n)
redis.call('SADD', KEYS[9], lane)
redis.call('ZREM', KEYS[2], account .. '.' .. token)
redis.call('HINCRBY', KEYS[1], 'requeued_dead', 1)
return 1
