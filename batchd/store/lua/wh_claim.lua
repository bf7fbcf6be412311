#!lua
-- WH_CLAIM: take due webhook deliveries for sending: lease each by moving its due time to now +
-- lease. The caller read the head of the due set and names those tokens and their delivery keys;
-- each is checked here (still in the set, due by Redis's clock) before it is taken.
-- KEYS: 1 the due set, 2 the gone-endpoints hash, 3 the dead set; then per token its delivery.
-- ARGV: 1 lease (ms), 2 claim id, 3 retention (ms); then the tokens.
-- Returns {claimed, gone, next, now}: claimed is flat `token url wid rid attempts` per delivery
-- (bodies are fetched afterwards, only for the deliveries the sender starts); gone is flat
-- `token rid url` per delivery stopped because its URL answered 410 before; next is the earliest
-- due time (ms) left in the set, or false when it is empty; now is Redis's clock (ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_until = now + tonumber(ARGV[1])
local claimed, gone = {}, {}
for i = 4, #ARGV do
  local token = ARGV[i]
  local key = KEYS[i]
  local due = redis.call('ZSCORE', KEYS[1], token)
  if due and tonumber(due) <= now then
    local f = redis.call('HMGET', key, 'state', 'url', 'wid', 'rid', 'attempts')
    if f[1] ~= 'pending' then
      redis.call('ZREM', KEYS[1], token)
    elseif not f[2] or not f[3] or redis.call('HEXISTS', key, 'body') == 0 then
      redis.call('HSET', key, 'state', 'dead', 'last_error', 'delivery record is incomplete',
        'ended', now)
      redis.call('ZREM', KEYS[1], token)
      redis.call('ZADD', KEYS[3], now, token)
      redis.call('PEXPIRE', key, ARGV[3])
    elseif redis.call('HEXISTS', KEYS[2], f[2]) == 1 then
      redis.call('HSET', key, 'state', 'gone', 'last_error', 'endpoint answered 410 Gone before',
        'ended', now)
      redis.call('HDEL', key, 'lease', 'next')
      redis.call('ZREM', KEYS[1], token)
      redis.call('ZADD', KEYS[3], now, token)
      redis.call('PEXPIRE', key, ARGV[3])
      table.insert(gone, token)
      table.insert(gone, f[4] or '')
      table.insert(gone, f[2])
    else
      redis.call('ZADD', KEYS[1], lease_until, token)
      redis.call('HSET', key, 'lease', ARGV[2])
      table.insert(claimed, token)
      table.insert(claimed, f[2])
      table.insert(claimed, f[3])
      table.insert(claimed, f[4] or '')
      table.insert(claimed, f[5] or '0')
    end
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {claimed, gone, first[2] or false, now}
