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
local account, ttl, nlanes = ARGV[1], ARGV[2], tonumber(ARGV[3])
local first_req = 4 + 3 * nlanes
local first_rkey = 5 + 2 * nlanes
-- A key of batchd's holding another type (foreign data) would fail this call half done:
-- refuse it before anything is written.
local expect = {[KEYS[2]] = 'set', [KEYS[3]] = 'hash', [KEYS[1]] = 'hash'}
for l = 1, nlanes do
  expect[KEYS[3 + 2 * l]] = 'list'
  expect[KEYS[4 + 2 * l]] = 'hash'
end
-- The deadlines set is checked only when some request has a deadline (`dl` among its extras;
-- a false match only costs a look).
for i = first_req + 3, #ARGV, 4 do
  if string.find(ARGV[i], 'dl\31', 1, true) then
    expect[KEYS[4]] = 'zset'
    break
  end
end
for k, want in pairs(expect) do
  local t = redis.call('TYPE', k).ok
  if t ~= want and t ~= 'none' then
    return redis.error_reply('batchd: ' .. k .. ' holds a ' .. t .. ', not a ' .. want
      .. ' (foreign data in batchd\'s keys); nothing was stored')
  end
end
local now = now_ms()
local nowtext = string.format('%d', now)
local out = {}
local lanes = {}
local deadlines = {}
local stored = 0
local i, j = first_req, first_rkey
while i <= #ARGV do
  local l, size, params, extras = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local rk, pk, kk = KEYS[j], KEYS[j + 1], KEYS[j + 2]
  local token = string.match(rk, ':r:(%w+)$')
  local rid = account .. '.' .. token
  local f = {'n', size, 'st', 'pending', 'pr', ARGV[1 + 3 * l], 'ts', nowtext, 'eq', nowtext}
  local body, dl = false, false
  for name, value in string.gmatch(extras, '([^\31]*)\31([^\31]*)\31') do
    if name == '@bd' then body = value else f[#f + 1] = name; f[#f + 1] = value end
    if name == 'dl' then dl = value end
  end
  local first = false
  if body then
    local t = redis.call('TYPE', kk).ok
    if t ~= 'string' and t ~= 'none' then
      return redis.error_reply('batchd: ' .. kk .. ' holds a ' .. t .. ', not a string'
        .. ' (foreign data in batchd\'s keys); nothing was stored')
    end
    first = redis.call('GET', kk)
  end
  if not first and redis.call('EXISTS', rk) == 1 then
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
    redis.call('HSET', rk, unpack(f))
    redis.call('SET', pk, params)
    if body then redis.call('SET', kk, rid .. ' ' .. body, 'PX', ttl) end
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
    stored = stored + 1
    out[#out + 1] = 1
    out[#out + 1] = rid
  end
  i = i + 4
  j = j + 3
end
for l = 1, nlanes do
  local lane = lanes[l]
  if lane then
    local e = lane.entries
    local q, qs = KEYS[3 + 2 * l], KEYS[4 + 2 * l]
    -- unpack is bounded by Lua's C stack: write in slices
    for s = 1, #e, 1000 do
      redis.call('RPUSH', q, unpack(e, s, math.min(s + 999, #e)))
    end
    redis.call('HINCRBY', qs, 'count', #e)
    redis.call('HINCRBY', qs, 'bytes', lane.bytes)
    local id, beta_id, betas = ARGV[1 + 3 * l], ARGV[2 + 3 * l], ARGV[3 + 3 * l]
    redis.call('SADD', KEYS[2], id)
    if beta_id ~= '' then redis.call('HSETNX', KEYS[3], beta_id, betas) end
  end
end
for s = 1, #deadlines, 1000 do
  redis.call('ZADD', KEYS[4], unpack(deadlines, s, math.min(s + 999, #deadlines)))
end
if stored > 0 then
  redis.call('HINCRBY', KEYS[1], 'submitted', stored)
end
return out
