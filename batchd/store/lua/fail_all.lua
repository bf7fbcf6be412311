#!lua
-- FAIL_ALL: end every named request still in this assembly with one terminal status (its
-- batch's results cannot be had, or its record is corrupt). Not sent again: it may be billed.
-- KEYS: 1-5 the account keys; then six keys per request (as in CANCEL).
-- ARGV: 1 account, 2 assembly id, 3 batch id, 4 retention (ms), 5 status, 6 result JSON; then
--       the tokens.
-- Returns {done, replies queued}.
local account, asm, bid = ARGV[1], ARGV[2], ARGV[3]
local status, result = ARGV[5], ARGV[6]
local c = context(account, bid, now_ms(), tonumber(ARGV[4]))
local done = 0
for i = 7, #ARGV do
  local token = ARGV[i]
  local b = NACCOUNT + 1 + (i - 7) * 6
  local f = redis.pcall('HMGET', KEYS[b], 'st', 'a', unpack(FINISH_FIELDS))
  if not f.err and f[1] == 'batched' and f[2] == asm then
    finish(c, token, b, status, result, f, 3)
    done = done + 1
  end
end
local queued = done_all(c)
return {done, queued}
