-- Stores a room unless its account already has the customRoomId, the account
-- already holds its most rooms, or the roomId is taken. Runs atomically, so
-- concurrent creates with one customRoomId store exactly one room, and
-- concurrent creates in one account never take it past its limit.
--
-- With an idempotency key, the key is checked first and recorded with the
-- room (created, or existing by customRoomId) in the same step, expiring
-- after its TTL: a create retried after a lost answer finds it.
--
-- KEYS[1] the room hash    P{U}:room:<roomId>
-- KEYS[2] the cid hash     P{U}:cid
-- KEYS[3] the rooms zset   P{U}:rooms
-- KEYS[4] the idempotency key, P{U}:idem:<key hash> (unused without a key)
-- ARGV[1] roomId, ARGV[2] customRoomId or "" for none, ARGV[3] created-at ms,
-- ARGV[4] the most rooms the account may hold, ARGV[5] the request's
-- fingerprint or "" without a key, ARGV[6] the key's TTL in ms,
-- ARGV[7..] the room hash's field/value pairs.
--
-- Returns {"created"}, {"taken"}, {"full"}, {"reused"},
-- {"existing", roomId, {field, value, ...}} or
-- {"replayed", roomId, {field, value, ...}}.

local room_id, custom, created_ms = ARGV[1], ARGV[2], ARGV[3]
local max_rooms = tonumber(ARGV[4])
local fingerprint, key_ttl = ARGV[5], ARGV[6]

-- Same account, so same hash tag and slot: only the roomId suffix differs.
local function room_key(id)
  return string.sub(KEYS[1], 1, #KEYS[1] - #room_id) .. id
end

local function remember(id)
  if fingerprint ~= '' then
    redis.call('SET', KEYS[4], id .. ' ' .. fingerprint, 'PX', key_ttl)
  end
end

if fingerprint ~= '' then
  local prior = redis.call('GET', KEYS[4])
  if prior then
    local space = string.find(prior, ' ', 1, true)
    local prior_room, prior_fingerprint = string.sub(prior, 1, space - 1), string.sub(prior, space + 1)
    if prior_fingerprint ~= fingerprint then
      return {'reused'}
    end
    local fields = redis.call('HGETALL', room_key(prior_room))
    if #fields > 0 then
      return {'replayed', prior_room, fields}
    end
  end
end

-- A repeat of an existing customRoomId is answered first: it adds nothing, so
-- it succeeds even when the account is full.
if custom ~= '' then
  local existing = redis.call('HGET', KEYS[2], custom)
  if existing then
    remember(existing)
    return {'existing', existing, redis.call('HGETALL', room_key(existing))}
  end
end

if redis.call('ZCARD', KEYS[3]) >= max_rooms then
  return {'full'}
end

if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'taken'}
end

redis.call('HSET', KEYS[1], unpack(ARGV, 7))
if custom ~= '' then
  redis.call('HSET', KEYS[2], custom, room_id)
end
redis.call('ZADD', KEYS[3], created_ms, room_id)
remember(room_id)
return {'created'}
