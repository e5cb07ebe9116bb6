-- A writer's mark on a session's deadline-index entry once it has saved an
-- ongoing session (before saving, it only lowers the entry with ZADD LT):
-- lowers the entry to the due time again (never raises it; adds it when
-- missing) and gives it a new stamp, so that a sweeper that read the entry
-- before this cannot settle it afterwards (see due_settle.lua), even when
-- the score itself did not change.
--
-- The delivery hint index keeps the same protocol and runs this script too:
-- KEYS P{deliver-N}:hints and P{deliver-N}:hints:w, member the userId, and a
-- hint (EventStore::hint_delivery) lowers and stamps its entry before the
-- events are written.
--
-- KEYS[1] the index shard, P{sweep-N}:due
-- KEYS[2] the shard's stamps, P{sweep-N}:due:w (member -> stamp; field '#'
--         is the shard's counter, so a stamp is never reused, even after the
--         entry was removed and added again)
-- ARGV[1] the member, <userId>/<sessionId>
-- ARGV[2] the due time, unix ms

redis.call('ZADD', KEYS[1], 'LT', ARGV[2], ARGV[1])
local stamp = redis.call('HINCRBY', KEYS[2], '#', 1)
redis.call('HSET', KEYS[2], ARGV[1], stamp)
return stamp
