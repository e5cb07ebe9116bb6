-- One page of an account's rooms, newest first, and the account's total.
--
-- KEYS[1] the rooms zset, P{U}:rooms
-- ARGV[1] first rank, ARGV[2] last rank (inclusive; last < first gives an
--         empty page)
--
-- Returns {total, {{roomId, {field, value, ...}}, ...}}. A listed room whose
-- hash is missing comes back with no fields so the caller reports it.

local ids = redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2])
local total = redis.call('ZCARD', KEYS[1])

-- KEYS[1] is P{U}:rooms; the room hashes live beside it in the same slot.
local account = string.sub(KEYS[1], 1, #KEYS[1] - #'rooms')
local page = {}
for i, room_id in ipairs(ids) do
  page[i] = {room_id, redis.call('HGETALL', account .. 'room:' .. room_id)}
end

return {total, page}
