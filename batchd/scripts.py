"""Every Lua script batchd runs in Redis: each is one atomic state change of the request model.

Scripts take the account's key tag (`<prefix>:{<account>}`) as ARGV[1] and derive that account's
keys from it, so every key a script touches shares one hash slot, except reply queues and the
global counters. Record fields: n framed size, st state, at attempts, a assembly,
pr priority, k idempotency key (JSON), rt reply_to, cb callback_url, md metadata (JSON),
ts submitted ms, eq enqueued ms, le last error result (JSON), res result envelope (JSON).
A request's params are the field `<token>` of the account's params hash `<tag>:p` until it ends:
beside big params a record stays small enough for Redis's compact hash encoding (records
written before that kept them in their own field `p`: still read, and gone with the record).
A pending entry is `<token> <framed size> <enqueued ms>`.
"""

from __future__ import annotations

from typing import Any

import redis

# Lua helpers shared by the scripts below.
_COMMON = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function iso(ms)
  ms = tonumber(ms)
  local s = math.floor(ms / 1000)
  local days = math.floor(s / 86400)
  local rem = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, ms % 1000)
end

local function jstr(v)
  if v == false or v == nil then return 'null' end
  return cjson.encode(v)
end

-- What every request that ends in one script call shares: computed once per call.
local function context(tag, prefix, account, batch_id, now, retention)
  local acct = cjson.encode(account)
  return {
    tag = tag, prefix = prefix, account = account, now = now, retention = retention,
    -- one absolute expiry for the call: PEXPIREAT goes to the AOF as it is, PEXPIRE rewritten.
    -- As text, made once: Lua turns a number argument into text with a printf per call.
    expire_at = string.format('%d', now + retention),
    -- `"<account>.` as cjson writes it: a token needs no escaping, so `rid` is this .. token
    rid_open = string.sub(cjson.encode(account .. '.'), 1, -2),
    account_json = ',"account":' .. acct .. ',"status":"',
    batch_json = ',"batch_id":' .. jstr(batch_id ~= '' and batch_id or nil) .. ',"attempts":',
    ended = '","ended_at":"' .. iso(now) .. '"}',
    -- submit times as text, by ms: the requests of one submit call share theirs
    times = {},
    counts = {}, params = {},
    -- envelopes by reply queue, and webhook tokens: pushed once per queue in done_all
    replies = {}, queues = {}, hooks = {},
  }
end

-- Whether any of these requests has a `wait` caller's mark: one call for many, so the
-- requests of a fan-out chunk (usually none waited on) skip the check one by one.
local function any_waiter(c, tokens)
  local keys = {}
  for i, token in ipairs(tokens) do keys[i] = c.tag .. ':w:' .. token end
  for i = 1, #keys, 1000 do
    if redis.call('EXISTS', unpack(keys, i, math.min(i + 999, #keys))) > 0 then return true end
  end
  return false
end

-- An ended request's record is its envelope: a string starting `{"id":`. True for such a
-- record; a string that does not start so is foreign data.
local function ended(rk)
  return redis.call('TYPE', rk).ok == 'string'
    and redis.call('GETRANGE', rk, 0, 5) == '{"id":'
end

-- The record fields finish needs; callers read them with the fields they check, in one HMGET.
local FINISH_FIELDS = {'k', 'rt', 'cb', 'md', 'ts', 'at'}

-- Record fields a foreign writer may have spoiled (absent ones are fine: they are optional).
local function is_uint(v) return not v or string.match(v, '^%d+$') ~= nil end
local function is_json(v) return not v or (pcall(cjson.decode, v)) end
local function is_key(v)
  if not v then return true end
  local ok, s = pcall(cjson.decode, v)
  return ok and type(s) == 'string'
end

-- The result of a request whose record cannot be used: it ends `rejected`, never sent.
local function rejected(field)
  return '{"type":"errored","error":{"type":"error","error":{"type":"rejected","message":'
    .. cjson.encode("the request's stored record is corrupted (field " .. field .. ")")
    .. '}}}'
end

-- End a request: its record becomes its envelope (one string, kept for `retention`: one
-- command instead of a hash write and an expiry), wake waiters, feed its reply queue and
-- webhook outbox.
-- `result` is the Anthropic result object as JSON text, inserted verbatim; `f` holds the
-- FINISH_FIELDS values from index `o` on. Counters and params go in `done_all`, once per call.
local function finish(c, token, rk, status, result, f, o)
  local key, rt, cb, md, ts, at = f[o], f[o + 1], f[o + 2], f[o + 3], f[o + 4], f[o + 5]
  -- a spoiled field is left out rather than break the envelope's JSON or this script
  if not is_key(key) then key = false end
  if not is_json(md) then md = false end
  if not is_uint(ts) then ts = false end
  if not is_uint(at) then at = false end
  local tag, now, retention = c.tag, c.now, c.retention
  ts = ts or now
  local submitted = c.times[ts]
  if not submitted then
    submitted = iso(ts)
    c.times[ts] = submitted
  end
  local env = '{"id":' .. c.rid_open .. token .. '","key":' .. (key or 'null')
    .. c.account_json .. status .. '","result":' .. result
    .. c.batch_json .. (at or '0')
    .. ',"metadata":' .. (md or 'null')
    .. ',"submitted_at":"' .. submitted .. c.ended
  redis.call('SET', rk, env, 'PXAT', c.expire_at)
  c.params[#c.params + 1] = token
  -- Wake `wait` callers. They mark the request before they look at it, so one that looked
  -- before this finish is woken, and one that looks after sees the result.
  if c.waiters ~= false and redis.call('EXISTS', tag .. ':w:' .. token) == 1 then
    local dk = tag .. ':done:' .. token
    redis.call('RPUSH', dk, status)
    redis.call('PEXPIREAT', dk, c.expire_at)
  end
  if key then
    local kk = tag .. ':k:' .. redis.sha1hex(cjson.decode(key))
    redis.call('PEXPIREAT', kk, c.expire_at)
  end
  if rt then
    local q = c.replies[rt]
    if not q then
      q = {}
      c.replies[rt] = q
      c.queues[#c.queues + 1] = rt
    end
    q[#q + 1] = env
  end
  if cb then
    redis.call('HSET', tag .. ':wh:' .. token, 'url', cb, 'body', env,
      'wid', 'msg_' .. token, 'rid', c.account .. '.' .. token, 'attempts', 0,
      'state', 'pending', 'created', now)
    c.hooks[#c.hooks + 1] = now
    c.hooks[#c.hooks + 1] = token
  end
  if status == 'dead' then
    redis.call('ZADD', tag .. ':dead', now, c.account .. '.' .. token)
  end
  c.counts[status] = (c.counts[status] or 0) + 1
  return env
end

-- After the last finish of a call: feed the reply queues and the webhook outbox, in the order
-- the requests ended, drop the ended requests' params, count them.
local function done_all(c)
  for _, rt in ipairs(c.queues) do
    local q, key = c.replies[rt], c.prefix .. ':reply:{' .. rt .. '}'
    for i = 1, #q, 1000 do
      -- a key of another type under the queue's name must not block the other requests
      local pushed = redis.pcall('LPUSH', key, unpack(q, i, math.min(i + 999, #q)))
      if type(pushed) == 'table' and pushed.err then
        redis.call('HINCRBY', c.prefix .. ':counters', 'replies_undeliverable',
          math.min(i + 999, #q) - i + 1)
      end
    end
  end
  local h = c.hooks
  for i = 1, #h, 1000 do
    redis.call('ZADD', c.tag .. ':whdue', unpack(h, i, math.min(i + 999, #h)))
  end
  local p = c.params
  for i = 1, #p, 1000 do
    redis.call('HDEL', c.tag .. ':p', unpack(p, i, math.min(i + 999, #p)))
  end
  for status, n in pairs(c.counts) do
    redis.call('HINCRBY', c.prefix .. ':counters', 'ended:' .. status, n)
  end
end

-- Put a request back at the tail of its lane; false (nothing done) when the record's lane or
-- size is spoiled, so the caller ends it instead.
local function requeue(tag, prefix, token, rk, last_error, now)
  local f = redis.call('HMGET', rk, 'pr', 'n')
  if not f[1] or not f[2] or not is_uint(f[1]) or not is_uint(f[2]) then return false end
  redis.call('HSET', rk, 'st', 'pending', 'le', last_error, 'eq', now)
  redis.call('HDEL', rk, 'a')
  redis.call('RPUSH', tag .. ':q:' .. f[1], token .. ' ' .. f[2] .. ' ' .. now)
  local qs = tag .. ':qs:' .. f[1]
  redis.call('HINCRBY', qs, 'count', 1)
  redis.call('HINCRBY', qs, 'bytes', f[2])
  redis.call('SADD', tag .. ':lanes', f[1])
  redis.call('HINCRBY', prefix .. ':counters', 'retries', 1)
  return true
end
"""

# ARGV: tag, prefix, account, then per request 9 values: token, priority, params, framed size,
#       key digest, key JSON, reply_to, callback_url, metadata JSON ('' for none of the last five)
# Stores one or many requests of one account. Returns, per request in order, 1 and its request
# id when stored, or 0 and the first request's id for an idempotency key already used (earlier,
# or by a previous request of the same call). Params go to the account's params hash, pending
# entries to their lane's list, each lane's counters once per call.
SUBMIT = r"""
local tag, prefix, account = ARGV[1], ARGV[2], ARGV[3]
-- A key of batchd's holding another type (foreign data) would fail this call half done:
-- refuse it before anything is written.
local expect = {[tag .. ':p'] = 'hash', [tag .. ':lanes'] = 'set'}
for i = 4, #ARGV, 9 do
  expect[tag .. ':q:' .. ARGV[i + 1]] = 'list'
  expect[tag .. ':qs:' .. ARGV[i + 1]] = 'hash'
  if ARGV[i + 4] ~= '' then expect[tag .. ':k:' .. ARGV[i + 4]] = 'string' end
end
for k, want in pairs(expect) do
  local t = redis.call('TYPE', k).ok
  if t ~= want and t ~= 'none' then
    return redis.error_reply('batchd: ' .. k .. ' holds a ' .. t .. ', not a ' .. want
      .. ' (foreign data in batchd\'s keys); nothing was stored')
  end
end
local now = now_ms()
local out, params, lanes, order = {}, {}, {}, {}
for i = 4, #ARGV, 9 do
  local token, pr, size, digest = ARGV[i], ARGV[i + 1], ARGV[i + 3], ARGV[i + 4]
  local kk, first
  if digest ~= '' then
    kk = tag .. ':k:' .. digest
    first = redis.call('GET', kk)
  end
  if first then
    out[#out + 1] = 0
    out[#out + 1] = first
  else
    local rid = account .. '.' .. token
    local f = {'n', size, 'st', 'pending', 'pr', pr, 'at', 0, 'ts', now, 'eq', now}
    if ARGV[i + 5] ~= '' then f[#f + 1] = 'k'; f[#f + 1] = ARGV[i + 5] end
    if ARGV[i + 6] ~= '' then f[#f + 1] = 'rt'; f[#f + 1] = ARGV[i + 6] end
    if ARGV[i + 7] ~= '' then f[#f + 1] = 'cb'; f[#f + 1] = ARGV[i + 7] end
    if ARGV[i + 8] ~= '' then f[#f + 1] = 'md'; f[#f + 1] = ARGV[i + 8] end
    redis.call('HSET', tag .. ':r:' .. token, unpack(f))
    params[#params + 1] = token
    params[#params + 1] = ARGV[i + 2]
    local lane = lanes[pr]
    if not lane then
      lane = {entries = {}, bytes = 0}
      lanes[pr] = lane
      order[#order + 1] = pr
    end
    lane.entries[#lane.entries + 1] = token .. ' ' .. size .. ' ' .. now
    lane.bytes = lane.bytes + tonumber(size)
    if kk then redis.call('SET', kk, rid) end
    out[#out + 1] = 1
    out[#out + 1] = rid
  end
end
-- unpack is bounded by Lua's C stack: write in slices
for i = 1, #params, 1000 do
  redis.call('HSET', tag .. ':p', unpack(params, i, math.min(i + 999, #params)))
end
for _, pr in ipairs(order) do
  local lane = lanes[pr]
  local e = lane.entries
  for i = 1, #e, 1000 do
    redis.call('RPUSH', tag .. ':q:' .. pr, unpack(e, i, math.min(i + 999, #e)))
  end
  local qs = tag .. ':qs:' .. pr
  redis.call('HINCRBY', qs, 'count', #e)
  redis.call('HINCRBY', qs, 'bytes', lane.bytes)
  redis.call('SADD', tag .. ':lanes', pr)
end
if #params > 0 then
  redis.call('HINCRBY', prefix .. ':counters', 'submitted', #params / 2)
end
return out
"""

# ARGV: tag, prefix, account, token, retention ms
# Cancels a pending request. Returns {1, envelope}, or {0, state} when it cannot be canceled.
CANCEL = r"""
local tag, prefix, account, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local rk = tag .. ':r:' .. token
local f = redis.pcall('HMGET', rk, 'st', 'pr', 'n', 'eq', unpack(FINISH_FIELDS))
if f.err then
  if not ended(rk) then return f end
  return {0, cjson.decode(redis.call('GET', rk)).status}
end
if not f[1] then return {0, 'missing'} end
if f[1] ~= 'pending' then return {0, f[1]} end
-- the pending entry is exactly `<token> <n> <eq>`: remove it without reading the lane
local removed = redis.call('LREM', tag .. ':q:' .. f[2], 1, token .. ' ' .. f[3] .. ' ' .. f[4])
if removed > 0 then
  local qs = tag .. ':qs:' .. f[2]
  redis.call('HINCRBY', qs, 'count', -1)
  redis.call('HINCRBY', qs, 'bytes', -tonumber(f[3]))
end
local c = context(tag, prefix, account, '', now_ms(), tonumber(ARGV[5]))
local env = finish(c, token, rk, 'canceled', '{"type":"canceled"}', f, 5)
done_all(c)
return {1, env}
"""

# ARGV: tag, priority, assembly id, max count, max body bytes, chunk, lease ms, prefix, account,
#       retention ms
# Moves up to `chunk` pending entries of the lane into the assembly (never beyond its count or
# byte budget) and marks their records. Returns {code, count, bytes}: code 0 took a chunk and
# more may fit, 1 the assembly is full, 2 the lane is empty, -1 the assembly is not assembling.
# An entry batchd did not write, or whose record is not a hash, is moved to the account's
# quarantine list (and counted), never sent; a record with a spoiled field ends `rejected`.
CLAIM = r"""
local tag, pr, asm = ARGV[1], ARGV[2], ARGV[3]
local max_count, max_bytes, chunk = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ak = tag .. ':a:' .. asm
local now = now_ms()
local st = redis.call('HGET', ak, 'st')
if not st then
  redis.call('HSET', ak, 'st', 'assembling', 'pr', pr, 'cnt', 0, 'bytes', 0, 'created', now)
  redis.call('ZADD', tag .. ':as', now + tonumber(ARGV[7]), asm)
elseif st ~= 'assembling' then
  return {-1, 0, 0}
end
local cnt = tonumber(redis.call('HGET', ak, 'cnt'))
local bytes = tonumber(redis.call('HGET', ak, 'bytes'))
local q = tag .. ':q:' .. pr
local ek = tag .. ':a:' .. asm .. ':e'
local want = math.min(chunk, max_count - cnt)
local code = 0
if want <= 0 then return {1, cnt, bytes} end
local entries = redis.call('LRANGE', q, 0, want - 1)
if #entries == 0 then return {2, cnt, bytes} end
local taken, taken_bytes, consumed, skipped_bytes = 0, 0, 0, 0
local moved, quarantined = {}, {}
local c = context(tag, ARGV[8], ARGV[9], '', now, tonumber(ARGV[10]))
for _, e in ipairs(entries) do
  local token, size_text = string.match(e, '^(%w+) (%d+) %d+$')
  local size = tonumber(size_text)
  -- body = {"requests":[ entries joined by , ]}: 15 bytes of envelope plus one comma each
  if token and cnt + taken > 0 and 15 + bytes + taken_bytes + size + cnt + taken > max_bytes then
    code = 1
    break
  end
  consumed = consumed + 1
  local rk = token and tag .. ':r:' .. token
  -- st, n, pr, then FINISH_FIELDS (k rt cb md ts at, from 4)
  local f = token and redis.pcall('HMGET', rk, 'st', 'n', 'pr', unpack(FINISH_FIELDS))
  if not token or (f.err and not ended(rk)) then
    -- not an entry batchd wrote, or its record is neither a hash nor an envelope: foreign
    -- data, never sent
    quarantined[#quarantined + 1] = e
  elseif not f.err and f[1] == 'pending' then
    local bad = (f[2] ~= size_text and 'n') or (f[3] ~= pr and 'pr') or (not is_uint(f[9]) and 'at')
      or (not is_uint(f[8]) and 'ts') or (not is_key(f[4]) and 'k') or (not is_json(f[7]) and 'md')
    if bad then
      finish(c, token, rk, 'rejected', rejected(bad), f, 4)
      skipped_bytes = skipped_bytes + size
    else
      redis.call('HSET', rk, 'st', 'batched', 'a', asm)
      redis.call('HINCRBY', rk, 'at', 1)
      moved[#moved + 1] = e
      taken = taken + 1
      taken_bytes = taken_bytes + size
    end
  else
    -- a stale entry (its record ended or vanished): dropped, its bytes leave the lane too
    skipped_bytes = skipped_bytes + size
  end
end
redis.call('LTRIM', q, consumed, -1)
if #quarantined > 0 then
  local qk = tag .. ':quarantine'
  for i = 1, #quarantined, 1000 do
    redis.call('RPUSH', qk, unpack(quarantined, i, math.min(i + 999, #quarantined)))
  end
  redis.call('LTRIM', qk, -1000, -1)
  redis.call('HINCRBY', ARGV[8] .. ':counters', 'quarantined', #quarantined)
end
done_all(c)
-- unpack is bounded by Lua's C stack: push in slices
for i = 1, #moved, 1000 do
  redis.call('RPUSH', ek, unpack(moved, i, math.min(i + 999, #moved)))
end
local qs = tag .. ':qs:' .. pr
local left = redis.call('HINCRBY', qs, 'count', -consumed)
local gone_bytes = taken_bytes + skipped_bytes
redis.call('HINCRBY', qs, 'bytes', -gone_bytes)
if left <= 0 then redis.call('HSET', qs, 'count', 0, 'bytes', 0) end
cnt = cnt + taken
bytes = bytes + taken_bytes
redis.call('HSET', ak, 'cnt', cnt, 'bytes', bytes)
if code == 0 and cnt >= max_count then code = 1 end
if code == 0 and consumed < want then code = 2 end
return {code, cnt, bytes}
"""

# ARGV: tag, assembly id
# Seals an assembly: its body length becomes fixed and its submission is due now.
# Returns the body's content length, 0 when the assembly was empty (and is deleted), -1 when it
# was not assembling.
SEAL = r"""
local tag, asm = ARGV[1], ARGV[2]
local ak = tag .. ':a:' .. asm
local f = redis.call('HMGET', ak, 'st', 'cnt', 'bytes')
if f[1] ~= 'assembling' then return -1 end
local now = now_ms()
if tonumber(f[2]) == 0 then
  redis.call('DEL', ak, ak .. ':e')
  redis.call('ZREM', tag .. ':as', asm)
  return 0
end
local clen = 15 + tonumber(f[3]) + tonumber(f[2]) - 1
redis.call('HSET', ak, 'st', 'sealed', 'clen', clen, 'sealed', now)
redis.call('ZADD', tag .. ':as', now, asm)
return clen
"""

# ARGV: tag, fence, assembly id
# Writes the submission intent, only while this fence holds the account's create lock and no
# other assembly's create is unresolved (its intent stands without a batch id): one unknown
# outcome at a time, so a batch found in the list belongs to it and no one else.
# Returns the intent time (ms), 0 when the lock is not ours, -1 while another is unresolved.
INTENT = r"""
local tag, fence, asm = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', tag .. ':createlock') ~= fence then return 0 end
local oi = tag .. ':intent'
local open = redis.call('GET', oi)
if open and open ~= asm then
  local o = redis.call('HMGET', tag .. ':a:' .. open, 'intent', 'bid')
  if o[1] and not o[2] then return -1 end
end
local now = now_ms()
redis.call('SET', oi, asm)
redis.call('HSET', tag .. ':a:' .. asm, 'st', 'submitting', 'intent', now, 'ifence', fence)
redis.call('HDEL', tag .. ':a:' .. asm, 'iunsure')
return now
"""

# ARGV: tag, fence, assembly id
# Withdraws an intent whose POST certainly created nothing, only while this fence holds the lock.
CLEAR_INTENT = r"""
local tag, fence, asm = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', tag .. ':createlock') ~= fence then return 0 end
local ak = tag .. ':a:' .. asm
if redis.call('HGET', ak, 'bid') then return 0 end
redis.call('HDEL', ak, 'intent', 'ifence', 'iunsure')
redis.call('HSET', ak, 'st', 'sealed')
if redis.call('GET', tag .. ':intent') == asm then redis.call('DEL', tag .. ':intent') end
return 1
"""

# ARGV: tag, prefix, account, assembly id, batch id, next due ms (poll)
# Records the created (or adopted) batch id. Idempotent for the same id; returns 1 when recorded
# now, 2 when it already was, -1 (with the other id) when the assembly holds a different batch.
RECORD = r"""
local tag, prefix, account, asm, bid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ak = tag .. ':a:' .. asm
local cur = redis.call('HGET', ak, 'bid')
if cur == bid then return {2, bid} end
if cur then return {-1, cur} end
local now = now_ms()
redis.call('HSET', ak, 'bid', bid, 'st', 'submitted', 'submitted', now, 'polls', 0)
redis.call('HDEL', ak, 'intent', 'ifence', 'iunsure')
if redis.call('GET', tag .. ':intent') == asm then redis.call('DEL', tag .. ':intent') end
redis.call('SADD', tag .. ':kb', bid)
redis.call('HSET', prefix .. ':batches', bid, account .. ' ' .. asm)
redis.call('ZADD', tag .. ':as', now + tonumber(ARGV[6]), asm)
redis.call('HINCRBY', prefix .. ':counters', 'batches_created', 1)
return {1, bid}
"""

# ARGV: tag, prefix, account, assembly id, batch id, retention ms, then triples
#       (token, class, result JSON); class is ok | err | retry | canceled | expired
# One atomic transition per line: lines for requests not (any more) in this assembly are
# ignored, so a repeated or resumed stream changes nothing. Returns {done, requeued, ignored}.
FANOUT = r"""
local tag, prefix, account, asm, bid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local retention = tonumber(ARGV[6])
local max_attempts = tonumber(ARGV[7])
local now = now_ms()
local done, requeued, ignored = 0, 0, 0
local statuses = {ok = 'succeeded', err = 'errored', canceled = 'canceled', expired = 'expired'}
local c = context(tag, prefix, account, bid, now, retention)
local tokens = {}
for i = 8, #ARGV, 3 do tokens[#tokens + 1] = ARGV[i] end
c.waiters = any_waiter(c, tokens)
for i = 8, #ARGV, 3 do
  local token, class, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local rk = tag .. ':r:' .. token
  -- st, a, then FINISH_FIELDS (attempts last, at 8); a key that is no hash is foreign
  local f = redis.pcall('HMGET', rk, 'st', 'a', unpack(FINISH_FIELDS))
  if f.err or f[1] ~= 'batched' or f[2] ~= asm then
    ignored = ignored + 1
  elseif class == 'retry' then
    if (tonumber(f[8]) or max_attempts) >= max_attempts then
      finish(c, token, rk, 'dead', result, f, 3)
      done = done + 1
    elseif requeue(tag, prefix, token, rk, result, now) then
      requeued = requeued + 1
    else
      finish(c, token, rk, 'rejected', rejected('pr'), f, 3)
      done = done + 1
    end
  else
    finish(c, token, rk, statuses[class], result, f, 3)
    done = done + 1
  end
end
done_all(c)
return {done, requeued, ignored}
"""

# ARGV: tag, prefix, account, assembly id, batch id, retention ms, max attempts, result JSON,
#       then tokens
# Requests of this assembly that got no line in its results go round again (or end dead).
# The same script releases a whole assembly whose batch the API refused.
MISSING = r"""
local tag, prefix, account, asm, bid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local retention, max_attempts, result = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local now = now_ms()
local c = context(tag, prefix, account, bid, now, retention)
local done, requeued = 0, 0
for i = 9, #ARGV do
  local token = ARGV[i]
  local rk = tag .. ':r:' .. token
  local f = redis.pcall('HMGET', rk, 'st', 'a', unpack(FINISH_FIELDS))
  if not f.err and f[1] == 'batched' and f[2] == asm then
    if (tonumber(f[8]) or max_attempts) >= max_attempts then
      finish(c, token, rk, 'dead', result, f, 3)
      done = done + 1
    elseif requeue(tag, prefix, token, rk, result, now) then
      requeued = requeued + 1
    else
      finish(c, token, rk, 'rejected', rejected('pr'), f, 3)
      done = done + 1
    end
  end
end
done_all(c)
return {done, requeued}
"""

# ARGV: tag, prefix, assembly id, then tokens
# Puts requests of an assembly that was never sent back in their lane, their attempt refunded.
UNCLAIM = r"""
local tag, prefix, asm = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local n = 0
for i = 4, #ARGV do
  local token = ARGV[i]
  local rk = tag .. ':r:' .. token
  local f = redis.pcall('HMGET', rk, 'st', 'a', 'le', 'at')
  if not f.err and f[1] == 'batched' and f[2] == asm
      and requeue(tag, prefix, token, rk, f[3] or '', now) then
    if is_uint(f[4]) then redis.call('HINCRBY', rk, 'at', -1) end
    n = n + 1
  end
end
return n
"""

# ARGV: tag, prefix, account, assembly id, batch id, retention ms, status, result JSON, tokens
# Ends every request still in this assembly with one terminal status (a vanished batch).
FAIL_ALL = r"""
local tag, prefix, account, asm, bid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local retention, status, result = tonumber(ARGV[6]), ARGV[7], ARGV[8]
local c = context(tag, prefix, account, bid, now_ms(), retention)
local done = 0
for i = 9, #ARGV do
  local token = ARGV[i]
  local rk = tag .. ':r:' .. token
  local f = redis.pcall('HMGET', rk, 'st', 'a', unpack(FINISH_FIELDS))
  if not f.err and f[1] == 'batched' and f[2] == asm then
    finish(c, token, rk, status, result, f, 3)
    done = done + 1
  end
end
done_all(c)
return done
"""

# ARGV: tag, assembly id, retention ms, and for a batch that was created: prefix, outcome
# Closes an assembly whose every request has ended or gone round again. With an outcome
# (completed, canceled, vanished, archived), counts `batches_ended:<outcome>` the first time only.
CLOSE = r"""
local tag, asm = ARGV[1], ARGV[2]
local ak = tag .. ':a:' .. asm
local st = redis.call('HGET', ak, 'st')
if not st then return 0 end
if st ~= 'done' and ARGV[5] and ARGV[5] ~= '' then
  redis.call('HINCRBY', ARGV[4] .. ':counters', 'batches_ended:' .. ARGV[5], 1)
end
redis.call('HSET', ak, 'st', 'done', 'closed', now_ms())
redis.call('DEL', ak .. ':e')
redis.call('ZREM', tag .. ':as', asm)
redis.call('PEXPIRE', ak, tonumber(ARGV[3]))
return 1
"""

# KEYS: lock key. ARGV: token, ttl ms. Extends the lock only while we hold it.
RENEW = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lock key. ARGV: token. Deletes the lock only while we hold it.
RELEASE = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: reply queue, the consumer's in-flight list. ARGV: how many to take, then the envelopes
# the consumer has finished with. Acknowledges those (one LREM each: a reader sharing the
# consumer name may hold items in the same list), then moves up to that many of the oldest
# replies to the in-flight list (newest at its head, as BLMOVE leaves them) and returns them,
# oldest first. One round trip, and one write to the AOF, per group instead of two per reply.
TAKE = r"""
for i = 2, #ARGV do redis.call('LREM', KEYS[2], 1, ARGV[i]) end
local items = redis.call('RPOP', KEYS[1], tonumber(ARGV[1]))
if not items then return {} end
redis.call('LPUSH', KEYS[2], unpack(items))
return items
"""

_SOURCES = {
    "submit": SUBMIT,
    "cancel": CANCEL,
    "claim": CLAIM,
    "seal": SEAL,
    "intent": INTENT,
    "clear_intent": CLEAR_INTENT,
    "record": RECORD,
    "fanout": FANOUT,
    "missing": MISSING,
    "fail_all": FAIL_ALL,
    "unclaim": UNCLAIM,
    "close": CLOSE,
    "renew": RENEW,
    "release": RELEASE,
    "take": TAKE,
}

_NEEDS_COMMON = {"submit", "cancel", "claim", "seal", "intent", "clear_intent", "record",
                 "fanout", "missing", "fail_all", "unclaim", "close"}  # fmt: skip


def source(name: str) -> str:
    body = _SOURCES[name]
    return _COMMON + body if name in _NEEDS_COMMON else body


class Scripts:
    """The scripts registered on one Redis client (sync or asyncio): `scripts.claim(...)`."""

    def __init__(self, client: Any) -> None:
        for name in _SOURCES:
            setattr(self, name, client.register_script(source(name)))

    submit: Any
    cancel: Any
    claim: Any
    seal: Any
    intent: Any
    clear_intent: Any
    record: Any
    fanout: Any
    missing: Any
    fail_all: Any
    unclaim: Any
    close: Any
    renew: Any
    release: Any
    take: Any


def run(script: Any, args: list[Any], keys: list[str] | None = None, client: Any = None) -> Any:
    """Call a registered script (sync), with its arguments as ARGV."""
    return script(keys=keys or [], args=args, client=client)


__all__ = ["Scripts", "redis", "run", "source"]
