#!lua
-- CANCEL: end a pending request `canceled` at once. Its lane entry stays: the next claim drops
-- it as stale, and takes its size off the lane's counters then.
-- KEYS: 1-5 the account keys (counters, reply outbox, webhook due set, dead set, deadlines),
--       6-11 the request's keys (record, params, waiter, done list, webhook delivery, dead
--       letter).
-- ARGV: 1 account, 2 token, 3 retention (ms).
-- Returns {1, envelope, replies queued}, or {0, state} when it cannot be canceled (`missing`
-- when there is no such request).
local account, token = ARGV[1], ARGV[2]
local b = NACCOUNT + 1
local rk = KEYS[b]
local f = redis.pcall('HMGET', rk, 'st', unpack(FINISH_FIELDS))
if f.err then
  if not ended(rk) then return f end
  return {0, cjson.decode(redis.call('GET', rk)).status}
end
if not f[1] then return {0, 'missing'} end
if f[1] ~= 'pending' then return {0, f[1]} end
local c = context(account, '', now_ms(), tonumber(ARGV[3]))
c.pending = true
local env = finish(c, token, b, 'canceled', '{"type":"canceled"}', f, 2)
local queued = done_all(c)
return {1, env, queued}
