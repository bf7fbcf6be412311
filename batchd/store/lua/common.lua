-- Helpers shared by the scripts that end requests. Loaded in front of a script's body (after its
-- shebang line) by scripts.py. Every key these helpers touch is one the calling script declared:
-- the account keys come first in its KEYS (see ACCOUNT_KEYS), a request's six keys as a group.

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

-- The result of a request no batch can finish before its deadline, under deadline_policy fail.
local DEADLINE_EXCEEDED = '{"type":"errored","error":{"type":"error","error":{"type":'
  .. '"deadline_exceeded","message":"no batch can end before the request\'s deadline, and '
  .. 'its account\'s deadline_policy is fail"}}}'

-- The record fields `finish` needs, read with the fields a caller checks in one HMGET:
-- k idempotency key (JSON), rt reply_to, cb callback_url, md metadata (JSON), ts submitted ms,
-- at attempts, n framed size, pr lane, tg tag, dl deadline ms.
local FINISH_FIELDS = {'k', 'rt', 'cb', 'md', 'ts', 'at', 'n', 'pr', 'tg', 'dl'}
local NFINISH = #FINISH_FIELDS

-- The account keys every script that ends requests declares first, in this order: counters,
-- reply outbox, webhook due set, dead set, and the pending deadlines (see `keys.deadlines`).
local K_COUNTERS, K_OUTBOX, K_WHDUE, K_DEAD, K_DEADLINES = 1, 2, 3, 4, 5
local NACCOUNT = 5

-- What every request that ends in one script call shares: computed once per call.
local function context(account, batch_id, now, retention)
  local acct = cjson.encode(account)
  return {
    account = account, now = now, retention = retention,
    -- one absolute expiry for the call: PEXPIREAT goes to the AOF as it is, PEXPIRE rewritten.
    -- As text, made once: Lua turns a number argument into text with a printf per call.
    expire_at = string.format('%d', now + retention),
    -- `"<account>.` as cjson writes it: a token needs no escaping, so `rid` is this .. token
    rid_open = string.sub(cjson.encode(account .. '.'), 1, -2),
    account_json = ',"account":' .. acct .. ',"status":"',
    batch_json = ',"batch_id":' .. jstr(batch_id ~= '' and batch_id or nil) .. ',"attempts":',
    ended = '","ended_at":"' .. iso(now) .. '"',
    -- the route that produced the result; a script ending requests in real time sets its own
    mode = ',"mode":"batch"}',
    -- why a deadline was missed when the status alone does not say (`unreachable`, ...)
    missed = false,
    -- whether the requests this call ends may be pending (in the planner's set of deadlines)
    pending = false,
    -- submit times as text, by ms: the requests of one call often share theirs
    times = {},
    counts = {}, params = {},
    replies = {}, hooks = {}, dead = false,
    -- reply queues a caller declared for pushing at once (name -> KEYS index; see `direct_to`),
    -- their envelopes by KEYS index, and those indexes in first-use order
    queues = false, direct = {}, direct_order = {},
    lane = false, requeued = {}, requeued_bytes = 0, ends = {},
    -- the deadlines zset's members to drop and to add (score, member pairs), written once
    dl_rm = {}, dl_add = {}, dl_counts = {},
  }
end

-- The deadlines zset's member of a request: `<token> <lane>`, so the planner knows its lane.
local function dl_member(token, lane)
  return token .. ' ' .. (lane or '')
end

-- The envelope's deadline fields of a request ending now with `status` (deadline `dl`, ms):
-- its deadline, whether it was met (a success by then), and why not. Counted per call.
local function deadline_json(c, dl, status)
  local met = status == 'succeeded' and c.now <= tonumber(dl)
  local out = ',"deadline":"' .. iso(dl) .. '","deadline_met":'
  local counts = c.dl_counts
  if met then
    counts['deadlines_met'] = (counts['deadlines_met'] or 0) + 1
    return out .. 'true'
  end
  local why = status == 'succeeded' and 'late' or c.missed or status
  counts['deadlines_missed'] = (counts['deadlines_missed'] or 0) + 1
  counts['deadlines_missed:' .. why] = (counts['deadlines_missed:' .. why] or 0) + 1
  return out .. 'false,"deadline_missed":"' .. why .. '"'
end

-- Whether any of these waiter keys exists: one call for many, so the requests of a fan-out
-- chunk (usually none waited on) skip the check one by one.
local function any_waiter(wkeys)
  for i = 1, #wkeys, 1000 do
    if redis.call('EXISTS', unpack(wkeys, i, math.min(i + 999, #wkeys))) > 0 then return true end
  end
  return false
end

-- An ended request's record is its envelope: a string starting `{"id":`. True for such a
-- record; a string that does not start so is foreign data.
local function ended(rk)
  return redis.call('TYPE', rk).ok == 'string'
    and redis.call('GETRANGE', rk, 0, 5) == '{"id":'
end

-- The keys of the request whose group starts at KEYS[b]: record, params, waiter, done list,
-- webhook delivery, dead letter.
local function rkeys(b)
  return KEYS[b], KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], KEYS[b + 5]
end

-- End a request: its record becomes its envelope (one string, kept for `retention`), wake
-- waiters, feed the reply outbox and the webhook outbox. `result` is the Anthropic result object
-- as JSON text, inserted verbatim; `f` holds the FINISH_FIELDS values from index `o` on; `b` is
-- the index in KEYS of the request's key group. Counters, params and the outboxes are written
-- in `done_all`, once per call.
local function finish(c, token, b, status, result, f, o)
  local rk, pk, wk, dk, hk, xk = rkeys(b)
  local key, rt, cb, md, ts, at = f[o], f[o + 1], f[o + 2], f[o + 3], f[o + 4], f[o + 5]
  -- a spoiled field is left out rather than break the envelope's JSON or this script
  if not is_key(key) then key = false end
  if not is_json(md) then md = false end
  if not is_uint(ts) then ts = false end
  if not is_uint(at) then at = false end
  local now = c.now
  ts = ts or now
  local submitted = c.times[ts]
  if not submitted then
    submitted = iso(ts)
    c.times[ts] = submitted
  end
  local dl = f[o + 9]
  local dpart = ''
  if dl and is_uint(dl) then
    dpart = deadline_json(c, dl, status)
    -- a pending one leaves the planner's set (the callers that end pending requests say so)
    if c.pending then c.dl_rm[#c.dl_rm + 1] = dl_member(token, f[o + 7]) end
  end
  local env = '{"id":' .. c.rid_open .. token .. '","key":' .. (key or 'null')
    .. c.account_json .. status .. '","result":' .. result
    .. c.batch_json .. (at or '0')
    .. ',"metadata":' .. (md or 'null')
    .. ',"submitted_at":"' .. submitted .. c.ended .. dpart .. c.mode
  if status == 'dead' then
    -- Kept so an operator can send it again: the params for `retention`, and what the record
    -- said about where its result goes.
    local x = {'ts', ts}
    for i = o, o + NFINISH - 1 do
      local v = f[i]
      if v and FINISH_FIELDS[i - o + 1] ~= 'ts' then
        x[#x + 1] = FINISH_FIELDS[i - o + 1]
        x[#x + 1] = v
      end
    end
    redis.call('HSET', xk, unpack(x))
    redis.call('PEXPIREAT', xk, c.expire_at)
    redis.call('PEXPIREAT', pk, c.expire_at)
    c.dead = true
    redis.call('ZADD', KEYS[K_DEAD], now, c.account .. '.' .. token)
  else
    c.params[#c.params + 1] = pk
  end
  redis.call('SET', rk, env, 'PXAT', c.expire_at)
  -- Wake `wait` callers. They mark the request before they look at it, so one that looked
  -- before this finish is woken, and one that looks after sees the result.
  if c.waiters ~= false and redis.call('EXISTS', wk) == 1 then
    redis.call('RPUSH', dk, status)
    redis.call('PEXPIREAT', dk, c.expire_at)
  end
  if rt then
    local qi = c.queues and c.queues[rt]
    if qi then
      local d = c.direct[qi]
      if not d then
        d = {}
        c.direct[qi] = d
        c.direct_order[#c.direct_order + 1] = qi
      end
      d[#d + 1] = env
    else
      c.replies[#c.replies + 1] = token .. ' ' .. rt
    end
  end
  if cb then
    redis.call('HSET', hk, 'url', cb, 'body', env,
      'wid', 'msg_' .. token, 'rid', c.account .. '.' .. token, 'attempts', 0,
      'state', 'pending', 'created', now)
    c.hooks[#c.hooks + 1] = now
    c.hooks[#c.hooks + 1] = token
  end
  c.counts[status] = (c.counts[status] or 0) + 1
  -- status and submit time of each ended request: the caller's turnaround histogram
  c.ends[#c.ends + 1] = status
  c.ends[#c.ends + 1] = ts
  return env
end

-- Write the call's changes to the planner's deadlines zset `key`: members dropped (requests
-- that ended or left `pending`), members added (requests back to `pending`).
local function deadlines_done(c, key)
  local rm = c.dl_rm
  for i = 1, #rm, 1000 do
    redis.call('ZREM', key, unpack(rm, i, math.min(i + 999, #rm)))
  end
  local add = c.dl_add
  for i = 1, #add, 1000 do
    redis.call('ZADD', key, unpack(add, i, math.min(i + 999, #add)))
  end
end

-- Reply queues the caller declared to push to at once, skipping the outbox: `n` queues whose
-- keys are KEYS[first .. first + n - 1] and names ARGV[afirst ..]; `seen` is the KEYS index of
-- the account's set of reply queues, `forget` (ms) how long a queue stays in it unused. A
-- caller declares them only where a reply may leave with the write that made it (one server,
-- no replicas to wait for). A key holding anything but a list is left out: its replies go
-- through the outbox, which parks what a queue refuses.
local function direct_to(c, first, n, afirst, seen, forget)
  if n == 0 then return end
  c.queues, c.queue_names, c.queues_seen, c.queues_forget = {}, {}, seen, forget
  for j = 0, n - 1 do
    local t = redis.call('TYPE', KEYS[first + j]).ok
    if t == 'list' or t == 'none' then
      c.queues[ARGV[afirst + j]] = first + j
      c.queue_names[first + j] = ARGV[afirst + j]
    end
  end
end

-- Push the envelopes bound for declared queues (see `direct_to`), in the order they ended,
-- note each queue as seen now, and forget those unused for long (as the outbox's drain does).
local function direct_done(c)
  local order = c.direct_order
  if #order == 0 then return end
  local seen = {}
  for _, qi in ipairs(order) do
    local envs = c.direct[qi]
    for i = 1, #envs, 1000 do
      redis.call('LPUSH', KEYS[qi], unpack(envs, i, math.min(i + 999, #envs)))
    end
    seen[#seen + 1] = c.now
    seen[#seen + 1] = c.queue_names[qi]
  end
  redis.call('ZADD', KEYS[c.queues_seen], unpack(seen))
  redis.call('ZREMRANGEBYSCORE', KEYS[c.queues_seen], '-inf', c.now - c.queues_forget)
end

-- After the last finish of a call: feed the reply outbox (numbered in order) and the webhook
-- outbox, drop the ended requests' params, count them. Returns how many replies it queued.
local function done_all(c)
  direct_done(c)
  local r = c.replies
  if #r > 0 then
    local last = redis.call('HINCRBY', KEYS[K_COUNTERS], 'outseq', #r)
    local first = last - #r
    local entries = {}
    for i, e in ipairs(r) do entries[i] = (first + i) .. ' ' .. e end
    for i = 1, #entries, 1000 do
      redis.call('RPUSH', KEYS[K_OUTBOX], unpack(entries, i, math.min(i + 999, #entries)))
    end
  end
  local h = c.hooks
  for i = 1, #h, 1000 do
    redis.call('ZADD', KEYS[K_WHDUE], unpack(h, i, math.min(i + 999, #h)))
  end
  local p = c.params
  for i = 1, #p, 1000 do
    redis.call('DEL', unpack(p, i, math.min(i + 999, #p)))
  end
  for status, n in pairs(c.counts) do
    redis.call('HINCRBY', KEYS[K_COUNTERS], 'ended:' .. status, n)
  end
  for name, n in pairs(c.dl_counts) do
    redis.call('HINCRBY', KEYS[K_COUNTERS], name, n)
  end
  deadlines_done(c, KEYS[K_DEADLINES])
  if c.dead then
    redis.call('ZREMRANGEBYSCORE', KEYS[K_DEAD], '-inf', c.now - c.retention)
  end
  return #r
end

-- Put a request back at the tail of the call's lane (`c.lane`, whose keys the caller declared);
-- false (nothing done) when the record's lane or size is spoiled, so the caller ends it instead.
-- `n`, `pr` and `dl` are the record's fields. The lane's counters are written once, in
-- `lane_done`; a deadline puts it back in the planner's set (`deadlines_done`).
local function requeue(c, token, rk, n, pr, last_error, dl)
  if pr ~= c.lane or not n or not is_uint(n) then return false end
  redis.call('HSET', rk, 'st', 'pending', 'le', last_error, 'eq', c.now)
  redis.call('HDEL', rk, 'a')
  if dl and is_uint(dl) then
    c.dl_add[#c.dl_add + 1] = dl
    c.dl_add[#c.dl_add + 1] = dl_member(token, pr)
  end
  local q = c.requeued
  q[#q + 1] = token .. ' ' .. n .. ' ' .. c.now
  c.requeued_bytes = c.requeued_bytes + tonumber(n)
  return true
end

-- After the last requeue of a call: append the requests to their lane, in order, and count them.
-- `q`, `qs`, `lanes` are the lane's pending list, counters and the account's lane set.
local function lane_done(c, q, qs, lanes, count_retries)
  local e = c.requeued
  if #e == 0 then return 0 end
  for i = 1, #e, 1000 do
    redis.call('RPUSH', q, unpack(e, i, math.min(i + 999, #e)))
  end
  redis.call('HINCRBY', qs, 'count', #e)
  redis.call('HINCRBY', qs, 'bytes', c.requeued_bytes)
  redis.call('SADD', lanes, c.lane)
  if count_retries then redis.call('HINCRBY', KEYS[K_COUNTERS], 'retries', #e) end
  return #e
end

-- The token ledger: usage of each applied result line, summed per model, tag and lane into the
-- declared hour and day buckets (one HINCRBY per distinct field per call). `usage` is
-- `model|input|output|cache write 5m|cache write 1h|cache read` or '' (nothing billed).
local function ledger_add(c, usage, tag, lane)
  if usage == '' then return end
  local model, i, o, w5, w1, r = string.match(usage,
    '^([^|]*)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)$')
  if not model then return end
  local base = model .. '|' .. (tag or '') .. '|' .. (lane or '') .. '|'
  local l = c.ledger
  if not l then
    l = {}
    c.ledger = l
  end
  l[base .. 'n'] = (l[base .. 'n'] or 0) + 1
  l[base .. 'in'] = (l[base .. 'in'] or 0) + tonumber(i)
  l[base .. 'out'] = (l[base .. 'out'] or 0) + tonumber(o)
  if w5 ~= '0' then l[base .. 'cw5m'] = (l[base .. 'cw5m'] or 0) + tonumber(w5) end
  if w1 ~= '0' then l[base .. 'cw1h'] = (l[base .. 'cw1h'] or 0) + tonumber(w1) end
  if r ~= '0' then l[base .. 'cr'] = (l[base .. 'cr'] or 0) + tonumber(r) end
end

-- Write the call's ledger sums into the hour and day buckets (KEYS `hk`, `dk`), which expire
-- `keep_hours` and `keep_days` after they start.
local function ledger_done(c, hk, dk, hour_end, day_end)
  local l = c.ledger
  if not l then return end
  for field, n in pairs(l) do
    redis.call('HINCRBY', hk, field, n)
    redis.call('HINCRBY', dk, field, n)
  end
  redis.call('PEXPIREAT', hk, hour_end)
  redis.call('PEXPIREAT', dk, day_end)
end
