#!lua
-- MISSING: requests of this assembly that got no line in its (complete) results go round again
-- (or end dead past the attempt cap). The same script releases a whole assembly whose batch the
-- API refused. Requests no longer in this assembly are left alone. One with a deadline goes
-- back to the planner's set, which routes it by its deadline from there.
-- KEYS: 1-5 the account keys, 6 the assembly, 7 its lane's pending list, 8 the lane's
--       counters, 9 the lane set; then six keys per request (as in CANCEL).
-- ARGV: 1 account, 2 assembly id, 3 batch id, 4 retention (ms), 5 max attempts, 6 lane id,
--       7 the result JSON to record as the last error; then the tokens.
-- Returns {done, requeued, replies queued}.
local account, asm, bid = ARGV[1], ARGV[2], ARGV[3]
local max_attempts, result = tonumber(ARGV[5]), ARGV[7]
local A = NACCOUNT
local c = context(account, bid, now_ms(), tonumber(ARGV[4]))
c.lane = ARGV[6]
local done, requeued = 0, 0
for i = 8, #ARGV do
  local token = ARGV[i]
  local b = A + 5 + (i - 8) * 6
  local rk = KEYS[b]
  local f = redis.pcall('HMGET', rk, 'st', 'a', unpack(FINISH_FIELDS))
  if not f.err and f[1] == 'batched' and f[2] == asm then
    if (tonumber(f[8]) or max_attempts) >= max_attempts then
      finish(c, token, b, 'dead', result, f, 3)
      done = done + 1
    elseif requeue(c, token, rk, f[9], f[10], result, f[12]) then
      requeued = requeued + 1
    else
      finish(c, token, b, 'rejected', rejected('pr'), f, 3)
      done = done + 1
    end
  end
end
lane_done(c, KEYS[A + 2], KEYS[A + 3], KEYS[A + 4], true)
local queued = done_all(c)
return {done, requeued, queued}
