#!lua
-- RT_CLAIM: take due requests off the real-time queue and write each one's send intent: the
-- record gets `rs` (the sender's intent id) and one more real-time attempt (`ra`), and the token
-- moves to the sending set, held for the sender's lease. The caller runs this durably (WAIT)
-- and sends nothing before its intents have reached the replicas.
-- KEYS: 1 the real-time queue, 2 the sending set, 3 the account's lane betas; then per request
--       its record and params.
-- ARGV: 1 intent id, 2 lease (ms); then the tokens.
-- Returns per request taken, flat: token, params (nil when gone), lane, tag, estimate basis
-- (`<max_tokens> <model>`), real-time attempts so far, the lane's betas (comma-joined).
local intent, lease = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local out = {}
for i = 3, #ARGV do
  local token = ARGV[i]
  local rk, pk = KEYS[4 + (i - 3) * 2], KEYS[5 + (i - 3) * 2]
  local due = redis.call('ZSCORE', KEYS[1], token)
  if due and tonumber(due) <= now then
    local f = redis.pcall('HMGET', rk, 'st', 'rs', 'pr', 'tg', 'es')
    if f.err or f[1] ~= 'realtime' or f[2] then
      -- no longer bound for the real-time route (ended, or already being sent)
      redis.call('ZREM', KEYS[1], token)
    else
      redis.call('ZREM', KEYS[1], token)
      redis.call('ZADD', KEYS[2], now + lease, token)
      local attempts = redis.call('HINCRBY', rk, 'ra', 1)
      redis.call('HSET', rk, 'rs', intent)
      local lane = f[3] or ''
      local beta_id = string.match(lane, '%.b(%x+)$')
      local betas = beta_id and redis.call('HGET', KEYS[3], beta_id) or ''
      out[#out + 1] = token
      out[#out + 1] = redis.call('GET', pk)
      out[#out + 1] = lane
      out[#out + 1] = f[4] or ''
      out[#out + 1] = f[5] or ''
      out[#out + 1] = attempts
      out[#out + 1] = betas
    end
  end
end
return out
