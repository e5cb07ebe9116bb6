-- Reads every reading of a room name in one round trip; the caller picks the
-- first reading that fits (a document id must also match the creation time,
-- which is easier to check in Rust).
--
-- KEYS[1..n-1] the room hashes of the direct readings (roomId, then the roomId
--              carried by a document id), in lookup order
-- KEYS[n]      the account's cid hash, P{U}:cid
-- ARGV[1..n-1] the roomIds of KEYS[1..n-1]
-- ARGV[n]      customRoomId, or "" for none
--
-- Returns n entries in KEYS order, each {roomId, {field, value, ...}} or false
-- when that reading names no room. A customRoomId whose room is missing is
-- returned with no fields so the caller reports the broken index.

local n = #KEYS
local found = {}

for i = 1, n - 1 do
  local fields = redis.call('HGETALL', KEYS[i])
  found[i] = #fields > 0 and {ARGV[i], fields}
end

local custom = ARGV[n]
local room_id = custom ~= '' and redis.call('HGET', KEYS[n], custom)
if room_id then
  -- KEYS[n] is P{U}:cid; the room lives beside it in the same slot.
  local account = string.sub(KEYS[n], 1, #KEYS[n] - #'cid')
  found[n] = {room_id, redis.call('HGETALL', account .. 'room:' .. room_id)}
else
  found[n] = false
end

return found
