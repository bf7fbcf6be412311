"""The webhook outbox's Lua scripts: each state change of a delivery is one of these, atomically.

A delivery is the hash `Keys.delivery(account, token)` (fields `url body wid rid attempts state
created`, then `lease next last_status last_error last_at ended retried`) plus its token in the
account's due zset (pending) or dead zset (dead or gone). All keys of a call share the account's
hash slot; the claim script builds delivery keys from a prefix because it finds them in the zset.
States: pending -> delivered | dead | gone; `retry` puts dead, gone or delivered back to pending.
"""

from __future__ import annotations

#: Take due deliveries for sending: lease each by moving its due time to now + lease.
#: KEYS[1] due zset, KEYS[2] gone-endpoints hash, KEYS[3] dead zset.
#: ARGV[1] now (ms), ARGV[2] lease (ms), ARGV[3] how many at most, ARGV[4] claim id,
#: ARGV[5] delivery key prefix (key = prefix .. token), ARGV[6] retention (ms).
#: Returns {claimed, gone, next}: claimed is flat `token url wid rid attempts` per delivery
#: (bodies are fetched afterwards, only for the deliveries the sender starts);
#: gone is flat `token rid url` per delivery stopped because its URL answered 410 before; next
#: is the earliest due time (ms) left in the zset after the claim, or false when it is empty.
#: Tokens whose record is missing (expired) or no longer pending leave the due zset.
CLAIM = """
local now = tonumber(ARGV[1])
local lease_until = now + tonumber(ARGV[2])
local tokens = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local claimed, gone = {}, {}
for _, token in ipairs(tokens) do
  local key = ARGV[5] .. token
  local f = redis.call('HMGET', key, 'state', 'url', 'wid', 'rid', 'attempts')
  if f[1] ~= 'pending' then
    redis.call('ZREM', KEYS[1], token)
  elseif not f[2] or not f[3] or redis.call('HEXISTS', key, 'body') == 0 then
    redis.call('HSET', key, 'state', 'dead', 'last_error', 'delivery record is incomplete',
      'ended', now)
    redis.call('ZREM', KEYS[1], token)
    redis.call('ZADD', KEYS[3], now, token)
    redis.call('PEXPIRE', key, ARGV[6])
  elseif redis.call('HEXISTS', KEYS[2], f[2]) == 1 then
    redis.call('HSET', key, 'state', 'gone', 'last_error', 'endpoint answered 410 Gone before',
      'ended', now)
    redis.call('HDEL', key, 'lease', 'next')
    redis.call('ZREM', KEYS[1], token)
    redis.call('ZADD', KEYS[3], now, token)
    redis.call('PEXPIRE', key, ARGV[6])
    table.insert(gone, token)
    table.insert(gone, f[4] or '')
    table.insert(gone, f[2])
  else
    redis.call('ZADD', KEYS[1], lease_until, token)
    redis.call('HSET', key, 'lease', ARGV[4])
    table.insert(claimed, token)
    table.insert(claimed, f[2])
    table.insert(claimed, f[3])
    table.insert(claimed, f[4] or '')
    table.insert(claimed, f[5] or '0')
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {claimed, gone, first[2] or false}
"""

#: A 2xx answer: the delivery is done. Wins over any lease, since the receiver has it.
#: KEYS[1] delivery hash, KEYS[2] due zset.
#: ARGV[1] token, ARGV[2] now (ms), ARGV[3] retention (ms), ARGV[4] HTTP status.
#: Returns 1, or 0 when the delivery was no longer pending.
SUCCEED = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'delivered', 'last_status', ARGV[4], 'last_at', ARGV[2],
  'ended', ARGV[2])
redis.call('HDEL', KEYS[1], 'lease', 'next', 'last_error')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

#: A failed attempt: count it, then either schedule the next one or end the delivery.
#: Applies only while the caller still holds the lease, so a late answer from a sender whose
#: lease ran out cannot overwrite what the next holder did.
#: KEYS[1] delivery hash, KEYS[2] due zset, KEYS[3] dead zset, KEYS[4] gone-endpoints hash.
#: ARGV[1] token, ARGV[2] claim id, ARGV[3] now (ms), ARGV[4] next due (ms) or '' to end it,
#: ARGV[5] end state ('dead' or 'gone'), ARGV[6] HTTP status or '', ARGV[7] error text,
#: ARGV[8] retention (ms), ARGV[9] callback URL (marked gone when ARGV[5] is 'gone').
#: Returns 1 (rescheduled), 2 (ended) or 0 (lease lost or no longer pending: nothing done).
FAIL = """
local f = redis.call('HMGET', KEYS[1], 'state', 'lease')
if f[1] ~= 'pending' or f[2] ~= ARGV[2] then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_status', ARGV[6], 'last_error', ARGV[7], 'last_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'lease')
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'next', ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], 'state', ARGV[5], 'ended', ARGV[3])
redis.call('HDEL', KEYS[1], 'next')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[8]))
redis.call('PEXPIRE', KEYS[1], ARGV[8])
if ARGV[5] == 'gone' then redis.call('HSET', KEYS[4], ARGV[9], ARGV[3]) end
return 2
"""

#: Hand a claimed delivery back untried (its host is saturated here, or the sender stops).
#: KEYS[1] delivery hash, KEYS[2] due zset.
#: ARGV[1] token, ARGV[2] claim id, ARGV[3] due time (ms).
#: Returns 1, or 0 when the lease was no longer the caller's.
RELEASE = """
local f = redis.call('HMGET', KEYS[1], 'state', 'lease')
if f[1] ~= 'pending' or f[2] ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'lease')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

#: Send a delivery again from the start (`batchd webhooks retry`): attempts reset to 0, due now,
#: out of the dead zset, no expiry, and its URL no longer marked gone.
#: KEYS[1] delivery hash, KEYS[2] due zset, KEYS[3] dead zset, KEYS[4] gone-endpoints hash.
#: ARGV[1] token, ARGV[2] now (ms).
#: Returns the state it had ('dead', 'gone', 'delivered'), 'pending' when it was pending already
#: (left alone), or 'missing' when its record has expired.
RETRY = """
local f = redis.call('HMGET', KEYS[1], 'state', 'url')
if not f[1] then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 'missing'
end
if f[1] == 'pending' then return 'pending' end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0, 'next', ARGV[2],
  'retried', ARGV[2])
redis.call('HDEL', KEYS[1], 'lease', 'ended')
redis.call('PERSIST', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if f[2] then redis.call('HDEL', KEYS[4], f[2]) end
return f[1]
"""
