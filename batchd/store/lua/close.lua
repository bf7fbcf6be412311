#!lua
-- CLOSE: close an assembly whose every request has ended or gone round again. With an outcome
-- (completed, canceled, vanished, archived) it counts `batches_ended:<outcome>` the first time.
-- KEYS: 1 the assembly, 2 its entries, 3 the live-assembly index, 4 the account's counters,
--       5 the batch's index key (any account key when there was no batch), 6 the account's
--       deadline-batches set.
-- ARGV: 1 assembly id, 2 retention (ms), 3 outcome or '', 4 batch id or ''.
-- Returns 1, or 0 when there was no such assembly.
local ak = KEYS[1]
local a = redis.call('HMGET', ak, 'st', 'dl')
local st = a[1]
if not st then return 0 end
if st ~= 'done' and ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[4], 'batches_ended:' .. ARGV[3], 1)
end
redis.call('HSET', ak, 'st', 'done', 'closed', now_ms())
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
if a[2] then redis.call('ZREM', KEYS[6], ARGV[1]) end
redis.call('PEXPIRE', ak, tonumber(ARGV[2]))
if ARGV[4] ~= '' then redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[2])) end
return 1
