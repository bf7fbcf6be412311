"""Every Lua script batchd runs in Redis: each is one atomic state change of the request model.

Scripts take the account's key tag (`<prefix>:{<account>}`) as ARGV[1] and derive that account's
keys from it, so every key a script touches shares one hash slot, except reply queues and the
global counters. Record fields: p params, n framed size, st state, at attempts, a assembly,
pr priority, k idempotency key (JSON), rt reply_to, cb callback_url, md metadata (JSON),
ts submitted ms, eq enqueued ms, le last error result (JSON), res result envelope (JSON).
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

-- End a request: store its envelope, wake waiters, feed its reply queue and webhook outbox.
-- `result` is the Anthropic result object as JSON text, inserted verbatim.
local function finish(tag, prefix, account, token, rk, status, result, batch_id, now, retention)
  local f = redis.call('HMGET', rk, 'k', 'rt', 'cb', 'md', 'ts', 'at')
  local rid = account .. '.' .. token
  local env = '{"id":' .. cjson.encode(rid)
    .. ',"key":' .. (f[1] or 'null')
    .. ',"account":' .. cjson.encode(account)
    .. ',"status":"' .. status .. '"'
    .. ',"result":' .. result
    .. ',"batch_id":' .. jstr(batch_id ~= '' and batch_id or nil)
    .. ',"attempts":' .. (f[6] or '0')
    .. ',"metadata":' .. (f[4] or 'null')
    .. ',"submitted_at":"' .. iso(f[5] or now) .. '"'
    .. ',"ended_at":"' .. iso(now) .. '"}'
  redis.call('HSET', rk, 'st', status, 'res', env, 'te', now)
  redis.call('HDEL', rk, 'p', 'a')
  redis.call('PEXPIRE', rk, retention)
  local dk = tag .. ':done:' .. token
  redis.call('RPUSH', dk, status)
  redis.call('PEXPIRE', dk, retention)
  if f[1] then
    local kk = tag .. ':k:' .. redis.sha1hex(cjson.decode(f[1]))
    redis.call('PEXPIRE', kk, retention)
  end
  if f[2] then
    redis.call('LPUSH', prefix .. ':reply:{' .. f[2] .. '}', env)
  end
  if f[3] then
    redis.call('HSET', tag .. ':wh:' .. token, 'url', f[3], 'body', env,
      'wid', 'msg_' .. token, 'rid', rid, 'attempts', 0, 'state', 'pending', 'created', now)
    redis.call('ZADD', tag .. ':whdue', now, token)
  end
  if status == 'dead' then
    redis.call('ZADD', tag .. ':dead', now, rid)
  end
  redis.call('HINCRBY', prefix .. ':counters', 'ended:' .. status, 1)
  return env
end

-- Put a request back at the tail of its lane.
local function requeue(tag, prefix, token, rk, last_error, now)
  local f = redis.call('HMGET', rk, 'pr', 'n')
  redis.call('HSET', rk, 'st', 'pending', 'le', last_error, 'eq', now)
  redis.call('HDEL', rk, 'a')
  redis.call('RPUSH', tag .. ':q:' .. f[1], token .. ' ' .. f[2] .. ' ' .. now)
  local qs = tag .. ':qs:' .. f[1]
  redis.call('HINCRBY', qs, 'count', 1)
  redis.call('HINCRBY', qs, 'bytes', f[2])
  redis.call('SADD', tag .. ':lanes', f[1])
  redis.call('HINCRBY', prefix .. ':counters', 'retries', 1)
end
"""

# ARGV: tag, prefix, account, token, priority, params, framed size, key digest ('' for none),
#       key JSON, reply_to, callback_url, metadata JSON ('' for none each)
# Returns {1, request id} when stored, {0, first request id} for a repeated idempotency key.
SUBMIT = r"""
local tag, prefix, account, token, pr = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local kk
if ARGV[8] ~= '' then
  kk = tag .. ':k:' .. ARGV[8]
  local first = redis.call('GET', kk)
  if first then return {0, first} end
end
local now = now_ms()
local rk = tag .. ':r:' .. token
local rid = account .. '.' .. token
redis.call('HSET', rk, 'p', ARGV[6], 'n', ARGV[7], 'st', 'pending', 'pr', pr, 'at', 0,
  'ts', now, 'eq', now)
if ARGV[9] ~= '' then redis.call('HSET', rk, 'k', ARGV[9]) end
if ARGV[10] ~= '' then redis.call('HSET', rk, 'rt', ARGV[10]) end
if ARGV[11] ~= '' then redis.call('HSET', rk, 'cb', ARGV[11]) end
if ARGV[12] ~= '' then redis.call('HSET', rk, 'md', ARGV[12]) end
redis.call('RPUSH', tag .. ':q:' .. pr, token .. ' ' .. ARGV[7] .. ' ' .. now)
local qs = tag .. ':qs:' .. pr
redis.call('HINCRBY', qs, 'count', 1)
redis.call('HINCRBY', qs, 'bytes', ARGV[7])
redis.call('SADD', tag .. ':lanes', pr)
if kk then redis.call('SET', kk, rid) end
redis.call('HINCRBY', prefix .. ':counters', 'submitted', 1)
return {1, rid}
"""

# ARGV: tag, prefix, account, token, retention ms
# Cancels a pending request. Returns {1, envelope}, or {0, state} when it cannot be canceled.
CANCEL = r"""
local tag, prefix, account, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local rk = tag .. ':r:' .. token
local f = redis.call('HMGET', rk, 'st', 'pr', 'n', 'res', 'eq')
if not f[1] then return {0, 'missing'} end
if f[1] ~= 'pending' then return {0, f[1], f[4] or ''} end
-- the pending entry is exactly `<token> <n> <eq>`: remove it without reading the lane
local removed = redis.call('LREM', tag .. ':q:' .. f[2], 1, token .. ' ' .. f[3] .. ' ' .. f[5])
if removed > 0 then
  local qs = tag .. ':qs:' .. f[2]
  redis.call('HINCRBY', qs, 'count', -1)
  redis.call('HINCRBY', qs, 'bytes', -tonumber(f[3]))
end
local env = finish(tag, prefix, account, token, rk, 'canceled', '{"type":"canceled"}', '',
  now_ms(), tonumber(ARGV[5]))
return {1, env}
"""

# ARGV: tag, priority, assembly id, max count, max body bytes, chunk, lease ms
# Moves up to `chunk` pending entries of the lane into the assembly (never beyond its count or
# byte budget) and marks their records. Returns {code, count, bytes}: code 0 took a chunk and
# more may fit, 1 the assembly is full, 2 the lane is empty, -1 the assembly is not assembling.
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
local moved = {}
for _, e in ipairs(entries) do
  local sp = string.find(e, ' ', 1, true)
  local sp2 = string.find(e, ' ', sp + 1, true)
  local token = string.sub(e, 1, sp - 1)
  local size = tonumber(string.sub(e, sp + 1, sp2 - 1))
  -- body = {"requests":[ entries joined by , ]}: 15 bytes of envelope plus one comma each
  if cnt + taken > 0 and 15 + bytes + taken_bytes + size + cnt + taken > max_bytes then
    code = 1
    break
  end
  consumed = consumed + 1
  local rk = tag .. ':r:' .. token
  if redis.call('HGET', rk, 'st') == 'pending' then
    redis.call('HSET', rk, 'st', 'batched', 'a', asm)
    redis.call('HINCRBY', rk, 'at', 1)
    moved[#moved + 1] = e
    taken = taken + 1
    taken_bytes = taken_bytes + size
  else
    -- a stale entry (its record ended or vanished): dropped, its bytes leave the lane too
    skipped_bytes = skipped_bytes + size
  end
end
redis.call('LTRIM', q, consumed, -1)
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
# Writes the submission intent, only while this fence holds the account's create lock.
# Returns the intent time (ms), or 0 when the lock is not ours.
INTENT = r"""
local tag, fence, asm = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', tag .. ':createlock') ~= fence then return 0 end
local now = now_ms()
redis.call('HSET', tag .. ':a:' .. asm, 'st', 'submitting', 'intent', now, 'ifence', fence)
return now
"""

# ARGV: tag, fence, assembly id
# Withdraws an intent whose POST certainly created nothing, only while this fence holds the lock.
CLEAR_INTENT = r"""
local tag, fence, asm = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', tag .. ':createlock') ~= fence then return 0 end
local ak = tag .. ':a:' .. asm
if redis.call('HGET', ak, 'bid') then return 0 end
redis.call('HDEL', ak, 'intent', 'ifence')
redis.call('HSET', ak, 'st', 'sealed')
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
redis.call('HDEL', ak, 'intent', 'ifence')
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
for i = 8, #ARGV, 3 do
  local token, class, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local rk = tag .. ':r:' .. token
  local f = redis.call('HMGET', rk, 'st', 'a', 'at')
  if f[1] ~= 'batched' or f[2] ~= asm then
    ignored = ignored + 1
  elseif class == 'retry' then
    if tonumber(f[3]) >= max_attempts then
      finish(tag, prefix, account, token, rk, 'dead', result, bid, now, retention)
      done = done + 1
    else
      requeue(tag, prefix, token, rk, result, now)
      requeued = requeued + 1
    end
  else
    finish(tag, prefix, account, token, rk, statuses[class], result, bid, now, retention)
    done = done + 1
  end
end
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
local done, requeued = 0, 0
for i = 9, #ARGV do
  local token = ARGV[i]
  local rk = tag .. ':r:' .. token
  local f = redis.call('HMGET', rk, 'st', 'a', 'at')
  if f[1] == 'batched' and f[2] == asm then
    if tonumber(f[3]) >= max_attempts then
      finish(tag, prefix, account, token, rk, 'dead', result, bid, now, retention)
      done = done + 1
    else
      requeue(tag, prefix, token, rk, result, now)
      requeued = requeued + 1
    end
  end
end
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
  local f = redis.call('HMGET', rk, 'st', 'a', 'le')
  if f[1] == 'batched' and f[2] == asm then
    redis.call('HINCRBY', rk, 'at', -1)
    requeue(tag, prefix, token, rk, f[3] or '', now)
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
local now = now_ms()
local done = 0
for i = 9, #ARGV do
  local token = ARGV[i]
  local rk = tag .. ':r:' .. token
  local f = redis.call('HMGET', rk, 'st', 'a')
  if f[1] == 'batched' and f[2] == asm then
    finish(tag, prefix, account, token, rk, status, result, bid, now, retention)
    done = done + 1
  end
end
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


def run(script: Any, args: list[Any], keys: list[str] | None = None, client: Any = None) -> Any:
    """Call a registered script (sync), with its arguments as ARGV."""
    return script(keys=keys or [], args=args, client=client)


__all__ = ["Scripts", "redis", "run", "source"]
