#!lua
-- FANOUT: apply result lines of one assembly's batch, one atomic transition per line. Lines for
-- requests not (any more) in this assembly are ignored, so a repeated or resumed stream changes
-- nothing. A line that goes round again (never billed: errored retryably, expired, canceled)
-- of a request whose deadline no new batch can make is routed by the account's deadline policy:
-- to the real-time queue, or ended `errored` (deadline_exceeded); class `realtime` (an expired
-- line under `retry.expired = "realtime"`) goes to the real-time queue whatever its deadline.
-- KEYS: 1-5 the account keys, 6 the assembly, 7 its lane's pending list, 8 the lane's counters,
--       9 the lane set, 10 the ledger's hour bucket, 11 its day bucket, 12 the real-time queue,
--       13 the account's set of reply queues; then Q reply queues pushed to at once (replies
--       bound elsewhere go to the outbox); then six keys per line (as in CANCEL), in order.
-- ARGV: 1 account, 2 assembly id, 3 batch id, 4 retention (ms), 5 max attempts, 6 lane id,
--       7 hour bucket expiry (ms), 8 day bucket expiry (ms), 9 the deadline no new batch can
--       make (ms: earlier ones cannot), 10 the account's deadline policy (realtime, fail or
--       batch), 11 Q, 12 how long a reply queue unused stays in the account's set (ms), then
--       the Q queues' names; then per line: token, class (ok, err, retry, canceled, expired,
--       realtime), the result object's JSON, its usage ('' or
--       `model|input|output|cache write 5m|cache write 1h|cache read`).
-- Returns {done, requeued, ignored, replies queued, now (ms), ends, escalated}: ends is flat
-- `status, submitted ms` of each request that ended.
local account, asm, bid = ARGV[1], ARGV[2], ARGV[3]
local max_attempts = tonumber(ARGV[5])
local too_late, policy = tonumber(ARGV[9]), ARGV[10]
local A = NACCOUNT
local rtq = KEYS[A + 7]
local now = now_ms()
local done, requeued, ignored, escalated = 0, 0, 0, 0
local statuses = {ok = 'succeeded', err = 'errored', canceled = 'canceled', expired = 'expired'}
local c = context(account, bid, now, tonumber(ARGV[4]))
c.lane = ARGV[6]
local nq = tonumber(ARGV[11])
local first_line, first_key = 13 + nq, A + 9 + nq
direct_to(c, A + 9, nq, 13, A + 8, tonumber(ARGV[12]))
local wkeys = {}
local n = 0
for i = first_line, #ARGV, 4 do
  n = n + 1
  wkeys[n] = KEYS[first_key + (n - 1) * 6 + 2]
end
c.waiters = any_waiter(wkeys)
-- To the real-time route: its batch line came back unbilled, and it is in no batch now.
local function to_realtime(token, rk, result)
  redis.call('HSET', rk, 'st', 'realtime', 'le', result)
  redis.call('HDEL', rk, 'a')
  redis.call('ZADD', rtq, now, token)
  escalated = escalated + 1
end
n = 0
for i = first_line, #ARGV, 4 do
  local token, class, result, usage = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local b = first_key + n * 6
  n = n + 1
  local rk = KEYS[b]
  -- st, a, then FINISH_FIELDS (k rt cb md ts at n pr tg dl, from 3); a key that is no hash is
  -- foreign
  local f = redis.pcall('HMGET', rk, 'st', 'a', unpack(FINISH_FIELDS))
  if f.err or f[1] ~= 'batched' or f[2] ~= asm then
    ignored = ignored + 1
  else
    -- every applied line's usage counts, whatever the request's fate: the attempt was billed
    ledger_add(c, usage, f[11], f[10])
    local dl = f[12]
    local doomed = dl and is_uint(dl) and tonumber(dl) < too_late
    if class == 'realtime' or (class == 'retry' and doomed and policy == 'realtime') then
      to_realtime(token, rk, result)
    elseif class == 'retry' and doomed and policy == 'fail' then
      c.missed = 'unreachable'
      finish(c, token, b, 'errored', DEADLINE_EXCEEDED, f, 3)
      c.missed = false
      c.dl_counts['escalated:fail'] = (c.dl_counts['escalated:fail'] or 0) + 1
      done = done + 1
    elseif class == 'retry' then
      if (tonumber(f[8]) or max_attempts) >= max_attempts then
        finish(c, token, b, 'dead', result, f, 3)
        done = done + 1
      elseif requeue(c, token, rk, f[9], f[10], result, dl) then
        requeued = requeued + 1
      else
        finish(c, token, b, 'rejected', rejected('pr'), f, 3)
        done = done + 1
      end
    else
      finish(c, token, b, statuses[class] or 'errored', result, f, 3)
      done = done + 1
    end
  end
end
if escalated > 0 then
  redis.call('HINCRBY', KEYS[K_COUNTERS], 'escalated:realtime', escalated)
end
lane_done(c, KEYS[A + 2], KEYS[A + 3], KEYS[A + 4], true)
ledger_done(c, KEYS[A + 5], KEYS[A + 6], ARGV[7], ARGV[8])
local queued = done_all(c)
return {done, requeued, ignored, queued, now, c.ends, escalated}
