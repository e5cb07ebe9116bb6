-- Settles a deadline-index entry the sweeper has looked at, unless a writer
-- changed it since it was read.
--
-- KEYS[1] the index shard, P{sweep-N}:due
-- ARGV[1] the member, <userId>/<sessionId>
-- ARGV[2] the score as read (Redis's own formatting)
-- ARGV[3] the next due time in unix ms, or "" to remove the entry
--
-- Returns 1 when settled, 0 when the entry had changed (left alone).

if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
end
return 1
