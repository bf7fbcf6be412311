#!lua
-- CLAIM: move the head of a lane into an assembly (never beyond its count or byte budget) and
-- mark the records `batched`. The caller read the lane's head (LRANGE) and names each entry and
-- its request's keys; the head is checked against them first, so nothing unnamed is touched.
-- An entry batchd did not write, or whose record is not a hash, goes to the account's
-- quarantine list (and is counted), never sent; a record with a spoiled field ends `rejected`;
-- an entry whose request ended meanwhile (canceled) or left for the real-time route is dropped.
-- A claimed request with a deadline leaves the planner's set, and the assembly keeps the
-- earliest deadline it holds (field `dl`, and its score in the deadline-batches set).
-- KEYS: 1-5 the account keys, 6 the assembly, 7 its entries, 8 the lane's pending list, 9 the
--       lane's counters, 10 the live-assembly index, 11 the quarantine list, 12 the account's
--       deadline-batches set; then six keys per entry (as in CANCEL), in the entries' order.
-- ARGV: 1 account, 2 lane id, 3 assembly id, 4 max requests, 5 max body bytes, 6 lease (ms),
--       7 retention (ms); then the entries as read.
-- Returns {code, count, bytes}: code 0 took the entries and more may fit, 1 the assembly is
-- full, 2 the lane is empty (after these), -1 the assembly is not assembling, -2 the lane's head
-- is not what the caller read (read again).
local account, lane, asm = ARGV[1], ARGV[2], ARGV[3]
local max_count, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local A = NACCOUNT
local ak, ek, q, qs = KEYS[A + 1], KEYS[A + 2], KEYS[A + 3], KEYS[A + 4]
local now = now_ms()
local st = redis.call('HGET', ak, 'st')
if not st then
  redis.call('HSET', ak, 'st', 'assembling', 'pr', lane, 'cnt', 0, 'bytes', 0, 'created', now)
  redis.call('ZADD', KEYS[A + 5], now + tonumber(ARGV[6]), asm)
elseif st ~= 'assembling' then
  return {-1, 0, 0}
end
local a = redis.call('HMGET', ak, 'cnt', 'bytes', 'dl')
local cnt, bytes = tonumber(a[1]), tonumber(a[2])
local earliest = tonumber(a[3])
local earliest_before = earliest
local given = #ARGV - 7
if cnt >= max_count then return {1, cnt, bytes} end
if given == 0 then return {2, cnt, bytes} end
local head = redis.call('LRANGE', q, 0, given - 1)
if #head ~= given then return {-2, cnt, bytes} end
for i = 1, given do
  if head[i] ~= ARGV[7 + i] then return {-2, cnt, bytes} end
end
local code = 0
local taken, taken_bytes, consumed, gone_bytes, gone = 0, 0, 0, 0, 0
local moved, quarantined = {}, {}
local c = context(account, '', now, tonumber(ARGV[7]))
c.pending = true
for i = 1, given do
  local e = ARGV[7 + i]
  local b = A + 8 + (i - 1) * 6
  local rk = KEYS[b]
  local token, size_text = string.match(e, '^(%w+) (%d+) %d+$')
  local size = tonumber(size_text)
  if cnt + taken >= max_count then
    code = 1
    break
  end
  -- body = {"requests":[ entries joined by , ]}: 15 bytes of envelope plus one comma each
  if token and cnt + taken > 0 and 15 + bytes + taken_bytes + size + cnt + taken > max_bytes then
    code = 1
    break
  end
  consumed = consumed + 1
  -- st, a, then FINISH_FIELDS (k rt cb md ts at n pr tg dl, from 3)
  local f = token and redis.pcall('HMGET', rk, 'st', 'a', unpack(FINISH_FIELDS))
  if not token or (f.err and not ended(rk)) then
    -- not an entry batchd wrote, or its record is neither a hash nor an envelope: foreign
    -- data, never sent
    quarantined[#quarantined + 1] = e
  elseif not f.err and f[1] == 'pending' then
    local bad = (f[9] ~= size_text and 'n') or (f[10] ~= lane and 'pr')
      or (not is_uint(f[8]) and 'at') or (not is_uint(f[7]) and 'ts')
      or (not is_key(f[3]) and 'k') or (not is_json(f[6]) and 'md')
    if bad then
      finish(c, token, b, 'rejected', rejected(bad), f, 3)
      gone_bytes = gone_bytes + size
      gone = gone + 1
    else
      redis.call('HSET', rk, 'st', 'batched', 'a', asm, 'at', (tonumber(f[8]) or 0) + 1)
      local dl = f[12]
      if dl and is_uint(dl) then
        c.dl_rm[#c.dl_rm + 1] = dl_member(token, lane)
        if not earliest or tonumber(dl) < earliest then earliest = tonumber(dl) end
      end
      moved[#moved + 1] = e
      taken = taken + 1
      taken_bytes = taken_bytes + size
    end
  else
    -- a stale entry (its record ended or vanished): dropped, its bytes leave the lane too
    gone_bytes = gone_bytes + (size or 0)
    gone = gone + 1
  end
end
redis.call('LTRIM', q, consumed, -1)
if #quarantined > 0 then
  local qk = KEYS[A + 6]
  for i = 1, #quarantined, 1000 do
    redis.call('RPUSH', qk, unpack(quarantined, i, math.min(i + 999, #quarantined)))
  end
  redis.call('LTRIM', qk, -1000, -1)
  redis.call('HINCRBY', KEYS[K_COUNTERS], 'quarantined', #quarantined)
end
local queued = done_all(c)
for i = 1, #moved, 1000 do
  redis.call('RPUSH', ek, unpack(moved, i, math.min(i + 999, #moved)))
end
local left = redis.call('HINCRBY', qs, 'count', -consumed)
redis.call('HINCRBY', qs, 'bytes', -(taken_bytes + gone_bytes))
if left <= 0 or redis.call('LLEN', q) == 0 then redis.call('HSET', qs, 'count', 0, 'bytes', 0) end
cnt = cnt + taken
bytes = bytes + taken_bytes
if earliest ~= earliest_before then
  redis.call('HSET', ak, 'cnt', cnt, 'bytes', bytes, 'dl', earliest)
  redis.call('ZADD', KEYS[A + 7], earliest, asm)
else
  redis.call('HSET', ak, 'cnt', cnt, 'bytes', bytes)
end
if code == 0 and cnt >= max_count then code = 1 end
if code == 0 and redis.call('LLEN', q) == 0 then code = 2 end
return {code, cnt, bytes, queued}
