-- Settles a deadline-index entry the sweeper has looked at, unless a writer
-- touched it since it was read (due_touch.lua changes the stamp, whether or
-- not the score changed).
--
-- The delivery hint index runs it too (EventStore::settle_hint): KEYS
-- P{deliver-N}:hints and P{deliver-N}:hints:w, member the userId.
--
-- KEYS[1] the index shard, P{sweep-N}:due
-- KEYS[2] the shard's stamps, P{sweep-N}:due:w
-- ARGV[1] the member, <userId>/<sessionId>
-- ARGV[2] the score as read (Redis's own formatting)
-- ARGV[3] the stamp as read, or "" when it had none
-- ARGV[4] the next due time in unix ms, or "" to remove the entry
--
-- Returns 1 when settled, 0 when the entry had changed (left alone).

if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
if (redis.call('HGET', KEYS[2], ARGV[1]) or '') ~= ARGV[3] then
  return 0
end
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[1], 'XX', ARGV[4], ARGV[1])
end
return 1
