#!lua
-- UNCLAIM: put requests of an assembly that was never sent back in their lane, their attempt
-- refunded (and those with a deadline back in the planner's set).
-- KEYS: 1 the account's counters, 2 its lane's pending list, 3 the lane's counters, 4 the lane
--       set, 5 the account's deadlines set; then the record of each request.
-- ARGV: 1 assembly id, 2 lane id; then the tokens.
-- Returns how many went back.
local asm = ARGV[1]
local c = {now = now_ms(), lane = ARGV[2], requeued = {}, requeued_bytes = 0, dl_rm = {},
  dl_add = {}}
local n = 0
for i = 3, #ARGV do
  local rk = KEYS[3 + i]
  local f = redis.pcall('HMGET', rk, 'st', 'a', 'le', 'at', 'n', 'pr', 'dl')
  if not f.err and f[1] == 'batched' and f[2] == asm
      and requeue(c, ARGV[i], rk, f[5], f[6], f[3] or '', f[7]) then
    if is_uint(f[4]) and tonumber(f[4]) > 0 then redis.call('HINCRBY', rk, 'at', -1) end
    n = n + 1
  end
end
lane_done(c, KEYS[2], KEYS[3], KEYS[4], false)
deadlines_done(c, KEYS[5])
return n
