#!lua
-- ESCALATE: pending requests that no batch can finish before their deadline, handled by the
-- account's deadline policy: `realtime` moves each to the real-time queue (its lane entry stays;
-- the next claim drops it, as after CANCEL), `fail` ends it `errored` (deadline_exceeded),
-- `batch` leaves it pending but out of the planner's set (its envelope will say it came late).
-- A member no longer in the set (another pass handled it) or whose request is no longer pending
-- (claimed, ended) is only dropped from the set.
-- KEYS: 1-5 the account keys, 6 the real-time queue; then six keys per request (as in CANCEL).
-- ARGV: 1 account, 2 policy (realtime, fail or batch), 3 retention (ms); then the planner's
--       members `<token> <lane>`, one per key group.
-- Returns {escalated, stale, replies queued}.
local account, policy = ARGV[1], ARGV[2]
local A = NACCOUNT
local now = now_ms()
local c = context(account, '', now, tonumber(ARGV[3]))
c.pending = true
local escalated, stale = 0, 0
for i = 4, #ARGV do
  local member = ARGV[i]
  local token = string.match(member, '^(%w+) ')
  local b = A + 2 + (i - 4) * 6
  local rk = KEYS[b]
  -- st, then FINISH_FIELDS (k rt cb md ts at n pr tg dl, from 2)
  local f = redis.pcall('HMGET', rk, 'st', unpack(FINISH_FIELDS))
  -- still planned (another planner pass may have handled it since the caller read the set)
  local planned = redis.call('ZSCORE', KEYS[K_DEADLINES], member)
  if not planned or not token or f.err or f[1] ~= 'pending' or not f[11] then
    c.dl_rm[#c.dl_rm + 1] = member
    stale = stale + 1
  elseif policy == 'fail' then
    c.missed = 'unreachable'
    finish(c, token, b, 'errored', DEADLINE_EXCEEDED, f, 2)
    escalated = escalated + 1
  else
    if policy == 'realtime' then
      redis.call('HSET', rk, 'st', 'realtime')
      redis.call('ZADD', KEYS[A + 1], now, token)
    end
    c.dl_rm[#c.dl_rm + 1] = member
    escalated = escalated + 1
  end
end
if escalated > 0 then
  redis.call('HINCRBY', KEYS[K_COUNTERS], 'escalated:' .. policy, escalated)
end
local queued = done_all(c)
return {escalated, stale, queued}
