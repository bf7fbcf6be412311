#!lua
-- FANOUT: apply result lines of one assembly's batch, one atomic transition per line. Lines for
-- requests not (any more) in this assembly are ignored, so a repeated or resumed stream changes
-- nothing.
-- KEYS: 1-4 the account keys, 5 the assembly, 6 its lane's pending list, 7 the lane's counters,
--       8 the lane set, 9 the ledger's hour bucket, 10 its day bucket; then six keys per line
--       (as in CANCEL), in the lines' order.
-- ARGV: 1 account, 2 assembly id, 3 batch id, 4 retention (ms), 5 max attempts, 6 lane id,
--       7 hour bucket expiry (ms), 8 day bucket expiry (ms); then per line: token, class (ok,
--       err, retry, canceled, expired), the result object's JSON, its usage ('' or
--       `model|input|output|cache write 5m|cache write 1h|cache read`).
-- Returns {done, requeued, ignored, replies queued}.
local account, asm, bid = ARGV[1], ARGV[2], ARGV[3]
local max_attempts = tonumber(ARGV[5])
local now = now_ms()
local done, requeued, ignored = 0, 0, 0
local statuses = {ok = 'succeeded', err = 'errored', canceled = 'canceled', expired = 'expired'}
local c = context(account, bid, now, tonumber(ARGV[4]))
c.lane = ARGV[6]
local first_line, first_key = 9, 11
local wkeys = {}
local n = 0
for i = first_line, #ARGV, 4 do
  n = n + 1
  wkeys[n] = KEYS[first_key + (n - 1) * 6 + 2]
end
c.waiters = any_waiter(wkeys)
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
    if class == 'retry' then
      if (tonumber(f[8]) or max_attempts) >= max_attempts then
        finish(c, token, b, 'dead', result, f, 3)
        done = done + 1
      elseif requeue(c, token, rk, f[9], f[10], result) then
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
lane_done(c, KEYS[6], KEYS[7], KEYS[8], true)
ledger_done(c, KEYS[9], KEYS[10], ARGV[7], ARGV[8])
local queued = done_all(c)
return {done, requeued, ignored, queued}
