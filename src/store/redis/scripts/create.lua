-- Stores a room unless its account already has the customRoomId, the account
-- already holds its most rooms, or the roomId is taken. Runs atomically, so
-- concurrent creates with one customRoomId store exactly one room, and
-- concurrent creates in one account never take it past its limit.
--
-- KEYS[1] the room hash    P{U}:room:<roomId>
-- KEYS[2] the cid hash     P{U}:cid
-- KEYS[3] the rooms zset   P{U}:rooms
-- ARGV[1] roomId, ARGV[2] customRoomId or "" for none, ARGV[3] created-at ms,
-- ARGV[4] the most rooms the account may hold, ARGV[5..] the room hash's
-- field/value pairs.
--
-- Returns {"created"}, {"taken"}, {"full"}, or
-- {"existing", roomId, {field, value, ...}}.

local room_id, custom, created_ms = ARGV[1], ARGV[2], ARGV[3]
local max_rooms = tonumber(ARGV[4])

-- A repeat of an existing customRoomId is answered first: it adds nothing, so
-- it succeeds even when the account is full.
if custom ~= '' then
  local existing = redis.call('HGET', KEYS[2], custom)
  if existing then
    -- Same account, so same hash tag and slot: only the roomId suffix differs.
    local existing_key = string.sub(KEYS[1], 1, #KEYS[1] - #room_id) .. existing
    return {'existing', existing, redis.call('HGETALL', existing_key)}
  end
end

if redis.call('ZCARD', KEYS[3]) >= max_rooms then
  return {'full'}
end

if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'taken'}
end

redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if custom ~= '' then
  redis.call('HSET', KEYS[2], custom, room_id)
end
redis.call('ZADD', KEYS[3], created_ms, room_id)
return {'created'}
