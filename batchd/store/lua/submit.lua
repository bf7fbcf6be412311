#!lua
-- SUBMIT: store one or many new requests of one account, atomically.
-- KEYS: 1 counters, 2 lane set, 3 lane betas, 4 the deadlines set (written only for requests
--       with a deadline); then per lane (in ARGV order) its pending list and counters; then per
--       request its record, params and idempotency key (declared even when the request has no
--       key: then it is never touched).
-- ARGV: 1 account, 2 idempotency key lifetime (ms), 3 number of lanes L; per lane: lane id, beta
--       set id, comma-joined betas ('' for none); per request: lane number (1..L), framed size,
--       params, extra fields (`name\31value\31` pairs; `@bd` is the body digest of a keyed one).
-- A request whose record exists already was stored by an earlier run of this same call (a client
-- that lost the reply and sent it again): it is answered as stored, and nothing is written twice.
-- Returns per request, in order: 1 and its id when stored; 0 and the first request's id when
-- its idempotency key was used before with the same body; -1 and `<that id> <its body digest>`
-- when with another body.
--
-- A foreign value in one of batchd's keys (another type, a counter that is not a number) must
-- not leave the call half done: it fails with "nothing was stored". The call reads what it must
-- (is the request stored, its idempotency key, the lane's counters), then writes the shared keys
-- a foreign value could refuse, each undone if a later one refuses, then what nothing can refuse
-- (the lane's counters, already read; the requests' own keys).
local account, ttl, nlanes = ARGV[1], ARGV[2], tonumber(ARGV[3])
local first_req = 4 + 3 * nlanes
local first_rkey = 5 + 2 * nlanes

local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end

local undo = {}
-- Undo what this call wrote so far, and say why nothing was stored.
local function refuse(key, want, reply)
  for i = #undo, 1, -1 do undo[i]() end
  local t = redis.call('TYPE', key).ok
  if t == want or t == 'none' then
    return redis.error_reply('batchd: ' .. key .. ': ' .. tostring(reply.err)
      .. '; nothing was stored')
  end
  return redis.error_reply('batchd: ' .. key .. ' holds a ' .. t .. ', not a ' .. want
    .. ' (foreign data in batchd\'s keys); nothing was stored')
end

-- 1. What is new, and what each lane gets.
local now = now_ms()
local nowtext = string.format('%d', now)
local out = {}
local lanes = {}
local deadlines = {}
local writes = {}
local keyed = {}
local seen = {}
local i, j = first_req, first_rkey
while i <= #ARGV do
  local l, size, params, extras = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local rk, pk, kk = KEYS[j], KEYS[j + 1], KEYS[j + 2]
  local token = string.match(rk, ':r:(%w+)$')
  local rid = account .. '.' .. token
  -- `eq` (when it entered its lane) is written only when it goes round again: until then it is
  -- `ts`, and the record is smaller by that field
  local f = {'n', size, 'st', 'pending', 'pr', ARGV[1 + 3 * l], 'ts', nowtext}
  local body, dl = false, false
  for name, value in string.gmatch(extras, '([^\31]*)\31([^\31]*)\31') do
    if name == '@bd' then body = value else f[#f + 1] = name; f[#f + 1] = value end
    if name == 'dl' then dl = value end
  end
  local first = false
  if body then
    first = keyed[kk]
    if not first then
      local got = redis.pcall('GET', kk)
      if failed(got) then return refuse(kk, 'string', got) end
      first = got
    end
  end
  if not first and (seen[rk] or redis.call('EXISTS', rk) == 1) then
    -- this very call ran before (a client retried it after losing the reply): stored once
    first = rid
  end
  if first then
    local first_id, digest = string.match(first, '^(%S+) (%S+)$')
    first_id = first_id or first
    if first_id == rid then
      out[#out + 1] = 1
      out[#out + 1] = rid
    elseif digest and digest ~= body then
      out[#out + 1] = -1
      out[#out + 1] = first
    else
      out[#out + 1] = 0
      out[#out + 1] = first_id
    end
  else
    seen[rk] = true
    local kv = false
    if body then
      kv = rid .. ' ' .. body
      keyed[kk] = kv
    end
    writes[#writes + 1] = {rk, f, pk, params, kk, kv}
    local lane = lanes[l]
    if not lane then
      lane = {entries = {}, bytes = 0}
      lanes[l] = lane
    end
    lane.entries[#lane.entries + 1] = token .. ' ' .. size .. ' ' .. nowtext
    if dl then
      deadlines[#deadlines + 1] = dl
      deadlines[#deadlines + 1] = token .. ' ' .. ARGV[1 + 3 * l]
    end
    lane.bytes = lane.bytes + tonumber(size)
    out[#out + 1] = 1
    out[#out + 1] = rid
  end
  i = i + 4
  j = j + 3
end
if #writes == 0 then return out end

-- 2. The lanes' counters, read before anything is written: a foreign value refuses here.
for l = 1, nlanes do
  local lane = lanes[l]
  if lane then
    local qs = KEYS[4 + 2 * l]
    local c = redis.pcall('HMGET', qs, 'count', 'bytes')
    if failed(c) then return refuse(qs, 'hash', c) end
    local count, bytes = tonumber(c[1] or '0'), tonumber(c[2] or '0')
    if not count or not bytes or count % 1 ~= 0 or bytes % 1 ~= 0 then
      return refuse(qs, 'hash', {err = 'its count and bytes are not integers'})
    end
    lane.count, lane.total = count + #lane.entries, bytes + lane.bytes
  end
end

-- 3. The shared keys a foreign value could refuse, each undone if a later one refuses.
for l = 1, nlanes do
  local lane = lanes[l]
  if lane then
    local id, beta_id, betas = ARGV[1 + 3 * l], ARGV[2 + 3 * l], ARGV[3 + 3 * l]
    local added = redis.pcall('SADD', KEYS[2], id)
    if failed(added) then return refuse(KEYS[2], 'set', added) end
    if added == 1 then undo[#undo + 1] = function() redis.call('SREM', KEYS[2], id) end end
    local q, e = KEYS[3 + 2 * l], lane.entries
    -- unpack is bounded by Lua's C stack: write in slices
    for s = 1, #e, 1000 do
      local pushed = redis.pcall('RPUSH', q, unpack(e, s, math.min(s + 999, #e)))
      if failed(pushed) then return refuse(q, 'list', pushed) end
      local n = math.min(s + 999, #e) - s + 1
      undo[#undo + 1] = function() redis.call('RPOP', q, n) end
    end
    if beta_id ~= '' then
      local set = redis.pcall('HSETNX', KEYS[3], beta_id, betas)
      if failed(set) then return refuse(KEYS[3], 'hash', set) end
      if set == 1 then undo[#undo + 1] = function() redis.call('HDEL', KEYS[3], beta_id) end end
    end
  end
end
for s = 1, #deadlines, 1000 do
  local part = {unpack(deadlines, s, math.min(s + 999, #deadlines))}
  local added = redis.pcall('ZADD', KEYS[4], unpack(part))
  if failed(added) then return refuse(KEYS[4], 'zset', added) end
  undo[#undo + 1] = function()
    for m = 2, #part, 2 do redis.call('ZREM', KEYS[4], part[m]) end
  end
end
local counted = redis.pcall('HINCRBY', KEYS[1], 'submitted', #writes)
if failed(counted) then return refuse(KEYS[1], 'hash', counted) end

-- 4. What nothing can refuse: the lanes' counters (read above), the requests' own keys (none
-- existed; params are new too).
for l = 1, nlanes do
  local lane = lanes[l]
  if lane then
    redis.call('HSET', KEYS[4 + 2 * l], 'count', string.format('%d', lane.count),
      'bytes', string.format('%d', lane.total))
  end
end
for _, w in ipairs(writes) do
  redis.call('HSET', w[1], unpack(w[2]))
  redis.call('SET', w[3], w[4])
  if w[6] then redis.call('SET', w[5], w[6], 'PX', ttl) end
end
return out
