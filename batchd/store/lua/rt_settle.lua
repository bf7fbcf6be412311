#!lua
-- RT_SETTLE: what became of real-time sends, one mode per request:
--   end      the sender's answer: the request ends with the status and result given (and its
--            usage, when billed, goes to the ledger under lane `realtime`), if its intent is
--            still the sender's;
--   retry    the API certainly billed nothing (an error answer, or the call never left): back on
--            the real-time queue, due at the time given, if its intent is still the sender's;
--   release  nothing was sent (its intent did not reach the replicas, or a spend cap holds it):
--            back on the queue, due at the time given, its attempt refunded, if its intent is
--            still the sender's;
--   expire   the sender's lease ran out with no answer recorded: the call may have been billed,
--            so it ends `errored` with the result given and is never sent again, if the lease
--            is still out (a renewal meanwhile wins).
-- Each counts `realtime:<outcome>`. Ended ones are `"mode":"realtime"` in their envelopes.
-- KEYS: 1-5 the account keys, 6 the real-time queue, 7 the sending set, 8 the ledger's hour
--       bucket, 9 its day bucket; then six keys per request (as in CANCEL).
-- ARGV: 1 account, 2 retention (ms), 3 hour bucket expiry (ms), 4 day bucket expiry (ms); then
--       per request: token, mode, intent id, status (end, expire) or due ms (retry, release),
--       result JSON, usage ('' or as in FANOUT), outcome.
-- Returns {settled, replies queued}.
local account = ARGV[1]
local A = NACCOUNT
local rtq, rts = KEYS[A + 1], KEYS[A + 2]
local now = now_ms()
local c = context(account, '', now, tonumber(ARGV[2]))
c.mode = ',"mode":"realtime"}'
local settled = 0
local outcomes = {}
local n = 0
for i = 5, #ARGV, 7 do
  local token, mode, intent, arg = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local result, usage, outcome = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local b = A + 5 + n * 6
  n = n + 1
  local rk = KEYS[b]
  -- st, rs, then FINISH_FIELDS (k rt cb md ts at n pr tg dl, from 3)
  local f = redis.pcall('HMGET', rk, 'st', 'rs', unpack(FINISH_FIELDS))
  local live = not f.err and f[1] == 'realtime' and f[2]
  local ours = live and f[2] == intent
  local lease = redis.call('ZSCORE', rts, token)
  local ok = false
  if mode == 'expire' then
    ok = live and lease and tonumber(lease) <= now
    if not live and lease then redis.call('ZREM', rts, token) end
  else
    ok = ours
  end
  if ok then
    redis.call('ZREM', rts, token)
    if mode == 'end' or mode == 'expire' then
      c.missed = arg ~= 'succeeded' and ('realtime_' .. outcome) or false
      ledger_add(c, usage, f[11], 'realtime')
      finish(c, token, b, arg, result, f, 3)
    else
      redis.call('HDEL', rk, 'rs')
      if mode == 'release' then
        redis.call('HINCRBY', rk, 'ra', -1)
        redis.call('ZADD', rtq, arg, token)
      else
        redis.call('HSET', rk, 'le', result)
        redis.call('ZADD', rtq, arg, token)
      end
    end
    outcomes[outcome] = (outcomes[outcome] or 0) + 1
    settled = settled + 1
  end
end
for outcome, k in pairs(outcomes) do
  redis.call('HINCRBY', KEYS[K_COUNTERS], 'realtime:' .. outcome, k)
end
ledger_done(c, KEYS[A + 3], KEYS[A + 4], ARGV[3], ARGV[4])
local queued = done_all(c)
return {settled, queued}
