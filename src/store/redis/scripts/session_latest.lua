-- The room's most recently started session.
--
-- KEYS[1] the room's sessions zset, P{U}:rsessions:<roomId>
-- ARGV[1] the account's key prefix, P{U}:
--
-- Returns {sessionId, json, version}, or false when the room has none.

local id = redis.call('ZREVRANGE', KEYS[1], 0, 0)[1]
if not id then
  return false
end
local fields = redis.call('HMGET', ARGV[1] .. 'session:' .. id, 'j', 'v')
return {id, fields[1], fields[2]}
